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
        "--seeds", "1", "--steps", str(STEPS), "--pool", "96", "--heldout", "48",
        "--batch-size", "8", "--reference-size", "8", "--pretrain-steps", "30",
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
    # Uniform rolls out B questions a step; dots_rr replays once its store fills (from round 1).
    assert runs["uniform"]["curve"]["generated"][-1] == STEPS * 8 * lm_grpo.GROUP_SIZE
    assert sum(runs["dots_rr"]["curve"]["replayed"]) > 0
    assert sum(runs["uniform"]["curve"]["replayed"]) == 0
    # Paper reference mode: K extra rollouts per round, not trained on.
    assert runs["dots"]["curve"]["generated"][-1] > runs["uniform"]["curve"]["generated"][-1]
    # Replayed groups came back one step old: pi_old / mu stays near 1.
    replayed = [r for r, n in zip(runs["dots_rr"]["curve"]["ratio_old"],
                                  runs["dots_rr"]["curve"]["replayed"]) if n]
    assert 0.5 < np.mean(replayed) < 2.0
    for key in ("steps_to_uniform_final", "seconds_to_uniform_final",
                "generation_seconds_to_uniform_final"):
        assert key in summary["arms"]["dots_rr"]
    assert set(summary["adapter_pearson"]) >= {"trained", "raw"}
    assert os.path.exists(os.path.join(saved["args"]["out"], "adapter", "adapter.safetensors"))


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
