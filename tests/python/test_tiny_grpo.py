"""Smoke test of examples/tiny_grpo against a live dots-server: one seed, a few steps."""

import importlib.util
import json
import os

import numpy as np

import tiny_grpo
from policy import Adam, MLPPolicy, grpo_update, log_softmax
from task import make_task


def test_both_arms_learn_and_dots_rr_generates_fewer_rollouts(server, tmp_path):
    out = str(tmp_path / "out")
    # The plot needs python3-matplotlib (scripts/install-deps.sh); the rest runs without it.
    plot = importlib.util.find_spec("matplotlib") is not None
    summary = tiny_grpo.main(["--server", server, "--seeds", "1", "--steps", "30",
                              "--targets", "0.25,baseline", "--out", out, "--log-every", "10"]
                             + ([] if plot else ["--no-plot"]))
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    if plot:
        assert os.path.getsize(os.path.join(out, "curves.png")) > 10_000
    assert "dots_rr" in open(os.path.join(out, "table.md")).read()
    runs = {r["arm"]: r for r in results["runs"]}
    for arm, r in runs.items():
        c = r["curve"]
        assert c["step"] == list(range(1, 31))
        # Learning, not noise: the exact held-out accuracy rises well above the start.
        assert c["heldout"][-1] > r["heldout_initial"] + 0.05, arm
    dots, uniform = runs["dots_rr"]["curve"], runs["uniform"]["curve"]
    # Uniform rolls out B questions every step; dots_rr half of them once replay fills in.
    assert uniform["generated"][-1] == 30 * 64 * 8
    assert dots["generated"][-1] < 0.7 * uniform["generated"][-1]
    assert sum(dots["replayed"]) > 0 and sum(uniform["replayed"]) == 0
    # Replayed groups come back (payload decoded) nearly on-policy at this learning rate.
    assert 0.9 < np.mean(dots["ratio_old"]) < 1.1
    # Replay keeps only informative groups, so the whole batch is more often informative.
    assert np.mean(dots["batch_effective"]) > np.mean(uniform["batch_effective"])
    assert {t["name"] for t in summary["targets"]} == {"0.25", "uniform's final accuracy"}


def test_payload_round_trip():
    tokens = np.array([[3, 4, -1], [0, 11, -1]])
    logp = np.array([[-0.5, -1.25, 0.0], [-2.0, -0.125, 0.0]])
    t, lp = tiny_grpo.decode_payload(tiny_grpo.encode_payload(tokens, logp))
    assert (t == tokens).all() and np.allclose(lp, logp)


def test_exact_success_rates_match_sampling():
    task = make_task(3)
    questions = task.train.subset(np.arange(40))
    exact = task.success_rates(task.policy, questions)
    _, _, rewards = task.rollout(task.policy, questions, 400, np.random.default_rng(0))
    # 400 samples per question: standard error <= 0.025.
    assert np.abs(rewards.mean(axis=1) - exact).max() < 0.11
    # Difficulty varies: the pool holds near-solved, near-hopeless and in-between questions.
    pool = task.success_rates(task.policy, task.train)
    assert (pool > 0.9).mean() > 0.005 and (pool < 0.05).mean() > 0.1
    assert ((pool > 0.2) & (pool < 0.8)).mean() > 0.1


def test_grpo_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    policy = MLPPolicy(5, 7, 4, rng)
    x = rng.standard_normal((30, 5))
    tokens = rng.integers(0, 4, 30)
    adv = rng.standard_normal(30)
    mu = np.log(np.exp(log_softmax(policy.forward(x)[0]))[np.arange(30), tokens]) - \
        0.3 * rng.random(30)  # behaviour policy differs: off-policy tokens

    class Capture:
        def step(self, params, grads):
            self.grads = grads

    capture = Capture()
    grpo_update(policy, capture, x, tokens, adv, mu, np.zeros(30, dtype=int), minibatches=1)
    logp_old = log_softmax(policy.forward(x)[0])[np.arange(30), tokens]
    r_old = np.exp(logp_old - mu)

    def loss(params):
        z = np.tanh(x @ params["U"].T + params["c"]) @ params["V"].T + params["b"]
        r = np.exp(log_softmax(z)[np.arange(30), tokens] - mu)
        return np.maximum(-adv * r, -adv * np.clip(r, r_old * 0.8, r_old * 1.2)).mean()

    for name in ("U", "c", "V", "b"):
        index = tuple(rng.integers(0, n) for n in policy.params[name].shape)
        plus = {k: v.copy() for k, v in policy.params.items()}
        minus = {k: v.copy() for k, v in policy.params.items()}
        plus[name][index] += 1e-6
        minus[name][index] -= 1e-6
        numeric = (loss(plus) - loss(minus)) / 2e-6
        assert abs(numeric - capture.grads[name][index]) < 1e-6 + 1e-4 * abs(numeric), name


def test_adam_descends_a_quadratic():
    params = {"w": np.array([3.0, -2.0])}
    opt = Adam(params, 0.1)
    for _ in range(300):
        opt.step(params, {"w": 2 * params["w"]})
    assert np.abs(params["w"]).max() < 0.05
