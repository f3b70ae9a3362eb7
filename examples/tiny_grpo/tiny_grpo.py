#!/usr/bin/python3
"""tiny_grpo: a real GRPO loop in numpy, driven by a live dots-server.

Trains the toy multi-step policy of task.py with GRPO (policy.py), once per seed and arm:
  dots_rr  the dots selector (difficulty-targeted, paper defaults alpha 0.5, tau 1e-3, mu 2)
           with rollout replay (delta 0.5: half of each batch fresh, half replayed groups,
           corrected off-policy with the behaviour log-probs stored in the group's payload);
  uniform  uniform selection without replay: the plain GRPO baseline;
  dots     (ablation, not run by default) the dots selector without replay.
All arms see the same task, the same starting policy and the same hyper-parameters; only the
questions (and replayed groups) the server hands out differ. Each run stays on the server
afterwards (run id tiny-grpo-ARM-sSEED-TAG) for inspection with dotsctl or the metrics.
Reports, per arm, the steps and the generated rollouts needed to reach held-out accuracy
targets, the effective-question ratio per step, and a learning-curve PNG.

    PYTHONPATH=BUILD/python:client/python /usr/bin/python3 examples/tiny_grpo/tiny_grpo.py \
        --server-bin BUILD/bin/dots-server --seeds 3 --out /tmp/tiny_grpo

Progress goes to stderr; the comparison table to stdout; results.json, curves.png and
table.md to --out.
"""

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dots_client  # noqa: E402
from dots_client.trainer import StepIterator  # noqa: E402
from policy import Adam, grpo_update  # noqa: E402
from task import make_task  # noqa: E402

GROUP_SIZE = 8

ARMS = {
    # The paper's method: DOTS selection + rollout replay, with the paper's alpha 0.5, tau 1e-3,
    # mu 2 and delta 0.5 (server defaults). Sizes scale with the batch: the paper's K = 256 and
    # C = 512 for B = 512 become K = B / 4 (inline, so reference rollouts are trained on) and
    # C = B groups.
    "dots_rr": lambda b: {
        "selector": {"strategy": "dots"},
        "reference_mode": "inline",
        "reference_size": max(1, b // 4),
        "replay": {"enabled": True, "capacity_groups": b},
    },
    # Ablation: dots_rr without the run's online difficulty model (estimator.model).
    "dots_rr_no_model": lambda b: {
        "selector": {"strategy": "dots"},
        "estimator": {"model": {"enabled": False}},
        "reference_mode": "inline",
        "reference_size": max(1, b // 4),
        "replay": {"enabled": True, "capacity_groups": b},
    },
    # dots_rr with DOTS on the posterior (selector strategy "posterior"): a question predicted
    # at the target from little evidence counts as further from it than one whose rate is known.
    "posterior_rr": lambda b: {
        "selector": {"strategy": "posterior"},
        "reference_mode": "inline",
        "reference_size": max(1, b // 4),
        "replay": {"enabled": True, "capacity_groups": b},
    },
    # Ablation: DOTS selection alone, every question of the batch fresh.
    "dots": lambda b: {
        "selector": {"strategy": "dots"},
        "reference_mode": "inline",
        "reference_size": max(1, b // 4),
        "replay": {"enabled": False},
    },
    # The ceiling of selection: dots_rr's budget, reference set and replay, but the run selects
    # on the questions' exact success rates under the current policy. The trainer sends them as
    # priors after every update (see ORACLE_ESTIMATOR); the history estimator with an enormous
    # prior pseudo-count then predicts the prior alone, so p_hat is the exact rate when the round
    # is planned.
    "oracle": lambda b: {
        "selector": {"strategy": "dots"},
        "estimator": {"mode": "history", "prior_strength": 1e9},
        "reference_mode": "inline",
        "reference_size": max(1, b // 4),
        "replay": {"enabled": True, "capacity_groups": b},
    },
    # The GRPO baseline: uniform selection, no replay, no reference set.
    "uniform": lambda b: {
        "selector": {"strategy": "uniform"},
        "reference_mode": "none",
        "replay": {"enabled": False},
    },
}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# ---- payloads: what the trainer needs to train on a group again ----


def encode_payload(tokens, logp):
    """tokens (G, L) int, logp (G, L) float -> bytes (an .npz, no pickle)."""
    buffer = io.BytesIO()
    np.savez(buffer, tokens=tokens.astype(np.int8), logp=logp.astype(np.float32))
    return buffer.getvalue()


def decode_payload(payload):
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return z["tokens"].astype(np.int64), z["logp"].astype(np.float64)


# ---- one training run ----


def run_arm(client, arm, seed, args, run_id):
    """Trains one policy for args.steps steps with the server's batches. Returns its curves."""
    task = make_task(seed)
    policy = task.policy.copy()
    optimizer = Adam(policy.params, args.lr)
    rng = np.random.default_rng([seed, 11])
    config = {
        "batch_size": args.batch_size,
        "group_size": GROUP_SIZE,
        "seed": seed,
        **ARMS[arm](args.batch_size),
    }
    client.create_run(run_id, config)
    records = task.records(task.train, "q")

    def with_exact_priors():
        # The oracle's pool: no embeddings (its estimator needs none), exact rates as priors.
        exact = task.success_rates(policy, task.train)
        return [dict(r, prior=float(p)) for r, p in zip(records, exact)]

    if arm == "oracle":
        result = client.upsert_questions(run_id, with_exact_priors())
    else:
        result = client.upsert_questions(run_id, records, task.embeddings(task.train))
    if result["rejected"]:
        raise RuntimeError(f"{run_id}: questions rejected: {result['rejected'][:3]}")
    index_of = {r["key"]: i for i, r in enumerate(records)}

    curve = {
        "step": [], "heldout": [], "generated": [], "fresh_effective": [],
        "batch_effective": [], "replayed": [], "clip_fraction": [], "ratio_old": [],
        "ratio_old_max": [],
    }
    generated = 0
    heldout0 = float(task.success_rates(policy, task.heldout).mean())
    started = time.monotonic()
    history = [] if args.dump_history else None
    for step in StepIterator(client, run_id, num_steps=args.steps):
        if history is not None:  # the exact rate of every pool question under this step's policy
            history.append(task.success_rates(policy, task.train).astype(np.float32))
        # Fresh rollouts for the handed-out questions (fresh and inline reference alike).
        fresh_index = np.array([index_of[item.key] for item in step.items], dtype=np.int64)
        fresh_q = task.train.subset(fresh_index)
        tokens, logp, rewards = task.rollout(policy, fresh_q, GROUP_SIZE, rng)
        generated += len(fresh_index) * GROUP_SIZE
        # Replayed groups: the tokens and behaviour log-probs come back in the payload.
        replay_index, replay_tokens, replay_logp, replay_rewards = [], [], [], []
        for group in step.replay:
            t, lp = decode_payload(group.payload)
            replay_index.append(index_of[group.key])
            replay_tokens.append(t)
            replay_logp.append(lp)
            replay_rewards.append(group.rewards)
        all_index = np.concatenate([fresh_index, np.array(replay_index, dtype=np.int64)])
        all_tokens = np.concatenate([tokens] + [t[None] for t in replay_tokens])
        all_logp = np.concatenate([logp] + [lp[None] for lp in replay_logp])
        all_rewards = np.concatenate([rewards, np.array(replay_rewards).reshape(-1, GROUP_SIZE)])

        x, token, q_of, r_of = task.token_inputs(task.train.subset(all_index), all_tokens)
        advantage = all_rewards - all_rewards.mean(axis=1, keepdims=True)  # no std division
        stats = grpo_update(
            policy, optimizer, x, token, advantage[q_of, r_of], all_logp[all_tokens >= 0], q_of,
            clip_eps=args.clip_eps, minibatches=args.minibatches, rng=rng,
            ratio_old_cap=args.ratio_old_cap,
        )
        if arm == "oracle":
            # Before the report, which lets the server plan the next round: the plan then uses
            # the exact rates of the policy that will roll it out.
            client.upsert_questions(run_id, with_exact_priors())
        step.report([
            step.group(item.key, rewards[i], encode_payload(tokens[i], logp[i]))
            for i, item in enumerate(step.items)
        ])

        fresh_mean = rewards.mean(axis=1)
        all_mean = all_rewards.mean(axis=1)
        heldout = float(task.success_rates(policy, task.heldout).mean())
        curve["step"].append(step.step + 1)  # optimizer updates done
        curve["heldout"].append(heldout)
        curve["generated"].append(generated)
        curve["fresh_effective"].append(float(((fresh_mean > 0) & (fresh_mean < 1)).mean()))
        curve["batch_effective"].append(float(((all_mean > 0) & (all_mean < 1)).mean()))
        curve["replayed"].append(len(step.replay))
        curve["clip_fraction"].append(stats["clip_fraction"])
        curve["ratio_old"].append(stats["ratio_old"])
        curve["ratio_old_max"].append(stats["ratio_old_max"])
        if (step.step + 1) % args.log_every == 0:
            log(f"  [{arm} seed {seed}] step {step.step + 1:4d}  held-out {heldout:.3f}  "
                f"generated {generated:7d}  fresh effective "
                f"{np.mean(curve['fresh_effective'][-args.log_every:]):.2f}  "
                f"replayed {len(step.replay):3d}")
    server_stats = client.stats(run_id)
    if history is not None:
        path = dump_path(args.dump_history, arm, seed, len(args.arm_list) * len(args.seed_list))
        write_history(path, records, np.stack(history, axis=1), task.embeddings(task.train))
        log(f"  [{arm} seed {seed}] wrote the exact success rates of every step to {path}")
    return {
        "arm": arm, "seed": seed, "run_id": run_id, "heldout_initial": heldout0,
        "seconds": time.monotonic() - started, "curve": curve,
        "server_stats": {k: server_stats[k] for k in (
            "effective_groups", "solve_all_groups", "solve_none_groups", "replayed_groups",
            "rounds_planned")},
    }


def dump_path(path, arm, seed, runs):
    """The history file of one run: `path` itself when it is the only run, else PATH-ARM-sSEED."""
    if runs == 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}-{arm}-s{seed}{ext or '.jsonl'}"


def write_history(path, records, rates, embeddings):
    """Writes the pool in the bundled trajectory format (examples: data/oneshot-rlvr): one JSONL
    line per question with its key, prompt, metadata and `history` (its exact success rate at
    every step, rates (N, steps)), and the N x D embeddings as PATH-without-extension.npy."""
    with open(path, "w") as f:
        for record, row in zip(records, rates):
            f.write(json.dumps({**record, "history": [round(float(v), 6) for v in row]}) + "\n")
    np.save(os.path.splitext(path)[0] + ".npy", embeddings.astype(np.float32))


def first_reaching(curve, target):
    """(steps, generated rollouts) when held-out accuracy first reaches target, or None."""
    for steps, acc, gen in zip(curve["step"], curve["heldout"], curve["generated"]):
        if acc >= target - 1e-12:
            return steps, gen
    return None


def final_accuracy(curve, last=5):
    """Held-out accuracy at the end of the budget (mean of the last `last` evaluations)."""
    return float(np.mean(curve["heldout"][-last:]))


def parse_targets(text):
    targets = []
    for part in text.split(","):
        part = part.strip()
        if part == "baseline":
            targets.append(part)
        elif part:
            targets.append(float(part))
    return targets


def summarize(results, targets, arms):
    """Per target and arm: steps and generated rollouts to the target, per seed."""
    seeds = sorted({r["seed"] for r in results})
    by = {(r["arm"], r["seed"]): r for r in results}
    out = {"targets": [], "arms": {}}
    for target in targets:
        if target == "baseline":
            if "uniform" not in arms:
                continue
            # The paper's protocol (Table 1): the accuracy the GRPO baseline ends with, per seed.
            per_seed = {s: final_accuracy(by[("uniform", s)]["curve"]) for s in seeds}
            name = "uniform's final accuracy"
        else:
            per_seed = {s: float(target) for s in seeds}
            name = f"{target:.2f}"
        entry = {"target": target, "name": name, "per_seed_target": per_seed, "arms": {}}
        for arm in arms:
            hits = [first_reaching(by[(arm, s)]["curve"], per_seed[s]) for s in seeds]
            entry["arms"][arm] = {
                "steps": [h[0] if h else None for h in hits],
                "generated": [h[1] if h else None for h in hits],
            }
        out["targets"].append(entry)
    for arm in arms:
        runs = [by[(arm, s)] for s in seeds]
        thirds = [np.array_split(np.array(r["curve"]["fresh_effective"]), 3) for r in runs]
        out["arms"][arm] = {
            "fresh_effective": float(np.mean([np.mean(r["curve"]["fresh_effective"])
                                              for r in runs])),
            "fresh_effective_thirds": [float(np.mean([t[i].mean() for t in thirds]))
                                       for i in range(3)],
            "batch_effective": float(np.mean([np.mean(r["curve"]["batch_effective"])
                                              for r in runs])),
            "initial_heldout": float(np.mean([r["heldout_initial"] for r in runs])),
            "final_heldout": float(np.mean([final_accuracy(r["curve"]) for r in runs])),
            "generated_per_step": float(np.mean([r["curve"]["generated"][-1] /
                                                 r["curve"]["step"][-1] for r in runs])),
        }
    return out


def _mean_or_dash(values, fmt):
    got = [v for v in values if v is not None]
    if len(got) != len(values) or not got:
        return "—"
    return fmt.format(np.mean(got))


def format_table(summary, steps):
    """Markdown: one row per (target, arm), then the savings of dots_rr over uniform."""
    cell = lambda values: " / ".join("—" if v is None else str(v) for v in values)  # noqa: E731
    lines = [
        f"Steps and generated rollouts until held-out accuracy first reaches the target "
        f"(budget {steps} steps; per seed, then the mean; '—' = not reached in the budget).",
        "",
        "| target | arm | steps to target | mean | generated rollouts to target | mean |",
        "|---|---|---|---|---|---|",
    ]
    savings = []
    for entry in summary["targets"]:
        for arm, hit in entry["arms"].items():
            lines.append(
                f"| {entry['name']} | {arm} | {cell(hit['steps'])} | "
                f"{_mean_or_dash(hit['steps'], '{:.1f}')} | {cell(hit['generated'])} | "
                f"{_mean_or_dash(hit['generated'], '{:.0f}')} |"
            )
        arms = entry["arms"]
        if "dots_rr" in arms and "uniform" in arms:
            d, u = arms["dots_rr"], arms["uniform"]
            pairs = [(a, b, c, e) for a, b, c, e in
                     zip(d["steps"], u["steps"], d["generated"], u["generated"])
                     if None not in (a, b, c, e)]
            if pairs:
                step_saving = 1 - sum(p[0] for p in pairs) / sum(p[1] for p in pairs)
                gen_saving = 1 - sum(p[2] for p in pairs) / sum(p[3] for p in pairs)
                met = step_saving >= 0.30 and gen_saving >= 0.40
                savings.append(
                    f"- target {entry['name']}: dots_rr needs {100 * step_saving:.0f} % fewer "
                    f"steps and {100 * gen_saving:.0f} % fewer generated rollouts than uniform "
                    f"({len(pairs)} seed(s) where both reach it; issue target >= 30 % / >= 40 %: "
                    f"{'met' if met else 'not met'})"
                )
            else:
                savings.append(f"- target {entry['name']}: not reached by both arms in any seed")
    lines += ["", "| arm | effective ratio: fresh groups / whole batch | generated rollouts "
              "per step | held-out start → end |", "|---|---|---|---|"]
    for arm, a in summary["arms"].items():
        lines.append(f"| {arm} | {a['fresh_effective']:.2f} / {a['batch_effective']:.2f} | "
                     f"{a['generated_per_step']:.0f} | {a['initial_heldout']:.3f} → "
                     f"{a['final_heldout']:.3f} |")
    if savings:
        lines += [""] + savings
    return "\n".join(lines)


def plot(results, arms, targets, path):
    """Three panels, one line per arm (mean over seeds) with its min-max band across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"dots_rr": "tab:red", "dots": "tab:orange", "uniform": "tab:blue"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for arm in arms:
        runs = [r["curve"] for r in results if r["arm"] == arm]
        colour = colours.get(arm)
        steps = np.array(runs[0]["step"])
        acc = np.array([c["heldout"] for c in runs])
        axes[0].plot(steps, acc.mean(0), color=colour, label=f"{arm} ({len(runs)} seeds)")
        axes[0].fill_between(steps, acc.min(0), acc.max(0), color=colour, alpha=0.2, lw=0)
        # Per generated rollout: each seed interpolated onto a common grid.
        top = min(c["generated"][-1] for c in runs)
        grid = np.linspace(0, top, 200)
        per_gen = np.array([np.interp(grid, [0] + c["generated"],
                                      [c["heldout"][0]] + c["heldout"]) for c in runs])
        axes[1].plot(grid / 1000, per_gen.mean(0), color=colour, label=arm)
        axes[1].fill_between(grid / 1000, per_gen.min(0), per_gen.max(0), color=colour,
                             alpha=0.2, lw=0)
        eff = np.array([np.convolve(c["fresh_effective"], np.ones(5) / 5, mode="valid")
                        for c in runs])
        axes[2].plot(steps[4:], eff.mean(0), color=colour, label=arm)
        axes[2].fill_between(steps[4:], eff.min(0), eff.max(0), color=colour, alpha=0.15, lw=0)
    for ax in axes[:2]:
        for target in targets:
            if target != "baseline":
                ax.axhline(target, color="grey", ls="--", lw=0.8)
        ax.set_ylabel("held-out accuracy (exact expected reward)")
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("generated rollouts (thousands)")
    axes[2].set_xlabel("training step")
    axes[2].set_ylabel("effective ratio of fresh groups (5-step mean)")
    axes[0].set_title("learning curve per step (mean, min-max band)")
    axes[1].set_title("learning curve per generated rollout")
    axes[2].set_title("effective questions (0 < mean reward < 1)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- server ----


def start_server(binary, state_dir, extra_args=()):
    """Starts dots-server on free ports, with `extra_args`; returns (process, "HOST:PORT").

    Raises RuntimeError with the server's stderr when it does not report its address in 30 s.
    """
    process = subprocess.Popen(
        [binary, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
         f"--state_dir={state_dir}", *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.match(r"dots-server listening on (\S+:\d+)", line)
        if match:
            threading.Thread(target=process.stdout.read, daemon=True).start()
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, match.group(1)
    process.kill()
    _, err = process.communicate()
    raise RuntimeError(f"dots-server did not start; stderr:\n{err}")


def stop_server(process):
    process.terminate()
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def parse_seeds(text):
    """"3" -> [1, 2, 3]; "4-6" -> [4, 5, 6]; "1,5" -> [1, 5]."""
    if re.fullmatch(r"\d+", text):
        return list(range(1, int(text) + 1))
    seeds = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    return seeds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="3",
                        help='N (= seeds 1..N), a range "4-6" or a list "1,5" (default 3)')
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--targets", default="0.5,0.8,baseline",
                        help="held-out accuracy targets, comma-separated; 'baseline' = the "
                        "accuracy the uniform arm ends with, per seed (the paper's protocol)")
    parser.add_argument("--arms", default="dots_rr,uniform", help="comma-separated: "
                        + ", ".join(ARMS))
    parser.add_argument("--batch-size", type=int, default=64, help="B, questions per step")
    parser.add_argument("--lr", type=float, default=0.003, help="Adam learning rate")
    parser.add_argument("--clip-eps", type=float, default=0.2)
    parser.add_argument("--ratio-old-cap", type=float, default=None,
                        help="truncate pi_old/mu of replayed tokens at this value (default: no "
                        "cap, as the released DOTS code)")
    parser.add_argument("--minibatches", type=int, default=2, help="optimizer steps per batch")
    parser.add_argument("--server", help="HOST:PORT of a running dots-server (else one is "
                        "started from --server-bin)")
    parser.add_argument("--server-bin", default=os.environ.get("DOTS_SERVER_BIN"),
                        help="dots-server binary (default $DOTS_SERVER_BIN)")
    parser.add_argument("--out", default="tiny_grpo_out", help="output directory")
    parser.add_argument("--log-every", type=int, default=25, help="progress every N steps")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--dump-history", metavar="FILE",
                        help="write every pool question's exact success rate at every step to "
                        "FILE (JSONL with a `history` array, embeddings in FILE's .npy beside "
                        "it) for dots-bench trajectory; with several runs, FILE-ARM-sSEED.jsonl")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for arm in arms:
        if arm not in ARMS:
            parser.error(f"--arms: unknown arm {arm!r} (known: {', '.join(ARMS)})")
    seeds = parse_seeds(args.seeds)
    args.arm_list, args.seed_list = arms, seeds
    os.makedirs(args.out, exist_ok=True)

    process = state_dir = None
    address = args.server
    if address is None:
        if not args.server_bin:
            parser.error("give --server HOST:PORT or --server-bin (or set DOTS_SERVER_BIN)")
        state_dir = tempfile.mkdtemp(prefix="tiny-grpo-state-")
        process, address = start_server(args.server_bin, state_dir)
        log(f"tiny_grpo: started dots-server on {address} (state {state_dir})")
    results = []
    try:
        with dots_client.Client(address, timeout=60.0) as client:
            tag = f"{os.getpid()}-{int(time.time())}"
            for seed in seeds:
                for arm in arms:
                    log(f"tiny_grpo: {arm}, seed {seed}, {args.steps} steps")
                    run_id = f"tiny-grpo-{arm}-s{seed}-{tag}"
                    results.append(run_arm(client, arm, seed, args, run_id))
                    r = results[-1]
                    log(f"tiny_grpo: {arm}, seed {seed}: held-out {r['heldout_initial']:.3f} → "
                        f"{r['curve']['heldout'][-1]:.3f} in {r['seconds']:.1f} s")
    finally:
        if process is not None:
            code = stop_server(process)
            log(f"tiny_grpo: dots-server stopped (exit {code})")
            shutil.rmtree(state_dir, ignore_errors=True)

    targets = parse_targets(args.targets)
    rows = summarize(results, targets, arms)
    table = format_table(rows, args.steps)
    command = "examples/tiny_grpo/tiny_grpo.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"command": command, "args": vars(args), "summary": rows, "runs": results}, f)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    if not args.no_plot:
        path = os.path.join(args.out, "curves.png")
        plot(results, arms, targets, path)
        print(f"\nLearning curves: {os.path.abspath(path)}")
    return rows


if __name__ == "__main__":
    main()
