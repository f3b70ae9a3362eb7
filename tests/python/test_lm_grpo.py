"""Smoke test of examples/lm_grpo against a live dots-server: every arm for a few steps with a
briefly pre-trained transformer, and the exact round trip of the behaviour log-probs that
replayed groups carry in their payload."""

import json
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "..", "examples", "lm_grpo"))

import torch  # noqa: E402  (python3-torch, scripts/install-deps.sh: required, never skipped)

import grpo_torch  # noqa: E402
import lm_grpo  # noqa: E402
import transformer  # noqa: E402
import words_task  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def results(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_grpo")
    binary = os.environ["DOTS_SERVER_BIN"]
    summary = lm_grpo.main([
        "--server", server, "--dotsctl", os.path.join(os.path.dirname(binary), "dotsctl"),
        "--seeds", "1", "--steps", str(STEPS), "--pool", "96", "--heldout", "32",
        "--batch-size", "8", "--reference-size", "8", "--pretrain-steps", "20",
        "--adapter-epochs", "2", "--cache", str(out / "cache"), "--out", str(out / "run"),
        "--no-plot", "--log-every", "100"])
    with open(out / "run" / "results.json") as f:
        return summary, json.load(f)


def test_every_arm_runs_and_reports(results):
    summary, saved = results
    runs = {r["arm"]: r for r in saved["runs"]}
    assert set(runs) == set(lm_grpo.ARMS)
    for arm, r in runs.items():
        c = r["curve"]
        assert c["step"] == list(range(1, STEPS + 1)), arm
        assert all(0 <= a <= 1 for a in c["heldout"]), arm
        assert c["seconds"][-1] >= c["generation_seconds"][-1] > 0, arm
    # Uniform rolls out B questions a step and replays nothing.
    assert runs["uniform"]["curve"]["generated"][-1] == STEPS * 8 * lm_grpo.GROUP_SIZE
    assert sum(runs["uniform"]["curve"]["replayed"]) == 0
    # Paper reference mode: K extra rollouts per round, not trained on.
    assert runs["dots"]["curve"]["generated"][-1] > runs["uniform"]["curve"]["generated"][-1]
    # (A briefly pre-trained model solves nothing, so its groups are uninformative and dots_rr
    # has nothing to replay here; test_replayed_payload_round_trip covers replay.)
    for key in ("steps_to_uniform_final", "seconds_to_uniform_final",
                "generation_seconds_to_uniform_final"):
        assert key in summary["arms"]["dots_rr"]
    assert set(summary["adapter_pearson"]) >= {"trained", "raw"}
    assert os.path.exists(os.path.join(saved["args"]["out"], "adapter", "adapter.safetensors"))


def test_replayed_payload_round_trip_through_the_server(client):
    """Behaviour log-probs reported in a group's payload come back bit for bit when the server
    replays the group, and the decoupled update then sees pi_old / mu = 1 for an unchanged
    policy."""
    tok = words_task.Tokenizer()
    torch.manual_seed(0)
    model = transformer.TinyGPT(transformer.ModelConfig(vocab=len(tok), width=32, layers=1,
                                                        heads=2)).eval()
    qs = words_task.generate(32, np.random.default_rng(7), 2)
    keys = [f"q{i}" for i in range(len(qs))]
    run = "lm-grpo-payload"
    client.create_run(run, {"batch_size": 4, "group_size": 8, "seed": 1,
                            "selector": {"strategy": "uniform"}, "reference_mode": "none",
                            "replay": {"enabled": True, "capacity_groups": 8}})
    client.upsert_questions(run, [{"key": k, "prompt": t} for k, t in zip(keys, qs.text)])
    index = {k: i for i, k in enumerate(keys)}
    sent = {}
    generator = torch.Generator().manual_seed(3)
    replayed = []
    for step in lm_grpo.StepIterator(client, run, num_steps=4):
        idx = np.array([index[it.key] for it in step.items])
        sols, logps, _ = grpo_torch.rollout(model, tok, qs.subset(idx), 8, 1.0, 3, generator)
        groups = []
        for i, it in enumerate(step.items):
            payload = grpo_torch.encode_payload(sols[i], logps[i])
            sent[it.key] = (sols[i], logps[i])
            # Mixed rewards: every group is informative, so the store keeps it.
            groups.append(step.group(it.key, [1, 0] * 4, payload))
        replayed += list(step.replay)
        step.report(groups)
    assert replayed, "the server replayed no group"
    for group in replayed:
        back_sols, back_logp = grpo_torch.decode_payload(group.payload)
        want_sols, want_logp = sent[group.key]
        assert back_sols == want_sols
        for a, b in zip(want_logp, back_logp):
            assert np.asarray(a, np.float32).tobytes() == b.tobytes()
        # The policy did not change: the carried mu is exactly what it computes again.
        prompts = [words_task.prompt_ids(tok, qs.text[index[group.key]])] * len(back_sols)
        stats = grpo_torch.grpo_update(model, torch.optim.SGD(model.parameters(), lr=0.0),
                                       prompts, back_sols, back_logp,
                                       np.array(group.rewards) - np.mean(group.rewards),
                                       np.zeros(len(back_sols), dtype=int), minibatches=1)
        assert abs(stats["ratio_old"] - 1) < 1e-4


def test_payload_round_trip_is_exact():
    rng = np.random.default_rng(0)
    sols = [[5, 7, 3], [9, 3], [], [4, 4, 4, 4, 3]]
    logp = [(-rng.random(len(s)) * 5).astype(np.float32) for s in sols]
    logp[0][1] = np.float32(-1e-30)  # subnormal-adjacent values survive too
    back_sols, back_logp = grpo_torch.decode_payload(grpo_torch.encode_payload(sols, logp))
    assert back_sols == sols
    for a, b in zip(logp, back_logp):
        assert a.dtype == b.dtype == np.float32
        assert a.tobytes() == b.tobytes()


def test_replayed_behaviour_logprobs_match_the_policy_that_sampled():
    tok = words_task.Tokenizer()
    torch.manual_seed(0)
    model = transformer.TinyGPT(transformer.ModelConfig(vocab=len(tok), width=32, layers=1,
                                                        heads=2)).eval()
    qs = words_task.generate(6, np.random.default_rng(1), 3)
    sols, logps, rewards = grpo_torch.rollout(model, tok, qs, 4, 1.0, 5,
                                              torch.Generator().manual_seed(2))
    assert rewards.shape == (6, 4)
    # The payload's log-probs are the sampling policy's: recomputing them by teacher forcing on
    # the decoded solutions gives the same numbers (left padding changes nothing).
    s, lp = grpo_torch.decode_payload(grpo_torch.encode_payload(sols[0], logps[0]))
    prompts = [words_task.prompt_ids(tok, qs.text[0])] * 4
    ids, start, mask = transformer.sequence_batch(prompts, s)
    again = transformer.token_logp(model, ids, start, mask)
    for i in range(4):
        assert np.allclose(again[i, :len(s[i])].detach().numpy(), lp[i], atol=1e-5)
    # And an update on fresh rollouts starts exactly on-policy: pi_old / mu = 1.
    flat_p = [words_task.prompt_ids(tok, qs.text[q]) for q in range(6) for _ in range(4)]
    flat_s = [x for g in sols for x in g]
    flat_l = [x for g in logps for x in g]
    adv = (rewards - rewards.mean(1, keepdims=True)).reshape(-1)
    stats = grpo_torch.grpo_update(model, torch.optim.Adam(model.parameters(), 1e-3), flat_p,
                                   flat_s, flat_l, adv, np.repeat(np.arange(6), 4))
    assert abs(stats["ratio_old"] - 1) < 1e-4 and stats["ratio_old_max"] < 1 + 1e-3


def test_reward_is_exact_match_and_held_out_accuracy_is_its_expectation():
    tok = words_task.Tokenizer()
    d, eos = tok.digit, words_task.EOS
    assert words_task.reward(tok, [d(3), d(7), eos], [3, 7]) == 1.0
    assert words_task.reward(tok, [d(4), d(7), eos], [3, 7]) == 0.0  # right answer, wrong work
    assert words_task.reward(tok, [d(3), d(7)], [3, 7]) == 0.0  # no <eos>: cut, no answer
    assert words_task.reward(tok, [d(3), d(7), eos, d(1)], [3, 7]) == 0.0
    # The exact success rate (teacher forcing) matches the sampled rewards' mean.
    torch.manual_seed(3)
    model = transformer.TinyGPT(transformer.ModelConfig(vocab=len(tok), width=32, layers=1,
                                                        heads=2)).eval()
    with torch.no_grad():  # a policy that writes digits and <eos> often enough to succeed
        model.head.bias[:] = -4.0
        model.head.bias[tok.digit0:tok.digit0 + 10] = 0.0
        model.head.bias[words_task.EOS] = 0.5
    qs = words_task.generate(3, np.random.default_rng(4), 1)
    exact = transformer.solution_probability(model, tok, qs)
    _, _, rewards = grpo_torch.rollout(model, tok, qs, 4000, 1.0, 3,
                                       torch.Generator().manual_seed(5))
    assert (exact > 0.01).all()
    assert np.abs(rewards.mean(axis=1) - exact).max() < 4 * np.sqrt(exact.max() / 4000)
