#!/usr/bin/python3
"""lm_grpo: the paper's pipeline end to end with a small transformer, driven by a live dots-server.

A decoder-only transformer (PyTorch, CPU) is pre-trained from scratch on a generated corpus of
multi-step arithmetic questions written in words (words_task.py, transformer.py), knowing its
operations unevenly, then fine-tuned with GRPO (grpo_torch.py) once per seed and arm:
  uniform      uniform selection, no replay: the GRPO baseline;
  dots         the paper's DOTS: `paper` estimator with the adapter trained offline by
               `dotsctl adapter train` on multi-source labels, paper reference mode (K reference
               questions rolled out at the start of every round, not trained on), no replay;
  dots_rr      the best default configuration with rollout replay: `default` estimator (history,
               similarity over the embeddings, the online model), dots selector, inline
               reference questions (trained on), replay with delta 0.5 and C = B groups;
  dots_online  `paper` estimator with no offline labels: the adapter is trained online from the
               run's own outcomes (estimator.adapter_training "online", fresh weights; the server
               accepts online adapter training in paper mode only), paper reference mode.
Question embeddings are the mean-pooled last hidden states of the frozen base model over the
question text. The adapter's labels are the pool's success rates under other models: snapshots
of the base model's pre-training at 1/2 and 3/4 of its length and a second model pre-trained
with another seed for half the length; never the policy.

Reports the paper's tables in miniature: Table 1 (steps, wall-clock and generation seconds to
reach uniform's final held-out accuracy and a fixed accuracy), Table 2 / Table 8 (Pearson of the
predicted and true success rates of each step's selected questions, trained adapter against the
raw embeddings) and Figure 3 (effective ratio per step).

    PYTHONPATH=build/python:client/python /usr/bin/python3 examples/lm_grpo/lm_grpo.py \\
        --server-bin build/bin/dots-server --seeds 3 --out /tmp/lm_grpo [--quick]

Progress goes to stderr; the tables to stdout; results.json, table.md, curves.png to --out.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import torch
except ImportError:  # before anything that needs it
    sys.exit("lm_grpo: PyTorch is missing. Install Debian's package: "
             "sudo apt-get install python3-torch (scripts/install-deps.sh installs it), and run "
             "the example with /usr/bin/python3")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(ROOT, "examples", "tiny_grpo"))

import dots_client  # noqa: E402
from dots_client.trainer import StepIterator  # noqa: E402

import grpo_torch  # noqa: E402
import tiny_grpo  # noqa: E402  (server start/stop, seeds, curve helpers)
import transformer  # noqa: E402
import words_task  # noqa: E402

GROUP_SIZE = 8
MAX_NEW = 6  # max_ops digits + <eos> (a longer answer is cut and gets reward 0)
LABEL_SNAPSHOTS = (0.5, 0.75)  # base-model pre-training snapshots that label the pool


def arm_config(arm, b, k, adapter_path):
    """The run config of an arm (batch size b, paper-mode reference size k)."""
    if arm == "uniform":
        return {"selector": {"strategy": "uniform"}, "reference_mode": "none",
                "replay": {"enabled": False}}
    if arm == "dots":
        return {"selector": {"strategy": "dots"},
                "estimator": {"mode": "paper", "adapter_path": adapter_path},
                "reference_mode": "paper", "reference_size": k, "replay": {"enabled": False}}
    if arm == "dots_rr":
        return {"selector": {"strategy": "dots"}, "reference_mode": "inline",
                "reference_size": max(1, b // 4),
                "replay": {"enabled": True, "capacity_groups": b}}
    if arm == "dots_online":
        return {"selector": {"strategy": "dots"},
                "estimator": {"mode": "paper", "adapter_training": {
                    "mode": "online", "hidden_size": 128}},
                "reference_mode": "paper", "reference_size": k, "replay": {"enabled": False}}
    raise ValueError(arm)


ARMS = ("uniform", "dots", "dots_rr", "dots_online")


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() < 1e-12 or y.std() < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def identity_paper_prediction(emb, ref_index, ref_rates, query_index, tau=0.05):
    """What `paper` mode predicts with the identity projection (no adapter, no head): cosine
    attention (temperature tau) over the round's reference questions, then the released code's
    OLS of the reference labels on the references' own predictions (each attends to itself),
    unclipped. The raw-embedding baseline of the paper's Table 8."""
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    refs = z[ref_index]
    rates = np.asarray(ref_rates, float)

    def base(rows):
        s = rows @ refs.T / tau
        w = np.exp(s - s.max(axis=1, keepdims=True))
        return (w / w.sum(axis=1, keepdims=True)) @ rates

    x = base(refs)
    design = np.stack([x, np.ones_like(x)], 1)
    coef = np.linalg.lstsq(design, rates, rcond=None)[0]
    return base(z[query_index]) * coef[0] + coef[1]


# ---- the shared world: task, base model, embeddings, labels, adapter ----


class World:
    """Everything the arms share: tokenizer, pool, held-out set, base model, embeddings."""

    def __init__(self, args):
        self.tokenizer = words_task.Tokenizer()
        data_rng = np.random.default_rng([args.data_seed, 1])
        self.pool = words_task.generate(args.pool, data_rng, args.max_ops)
        self.heldout = words_task.generate(args.heldout, data_rng, args.max_ops)
        self.keys = [f"q{i:05d}" for i in range(len(self.pool))]
        self.index_of = {k: i for i, k in enumerate(self.keys)}
        self.model_cfg = transformer.ModelConfig(vocab=len(self.tokenizer), width=args.width,
                                                 layers=args.layers, heads=args.heads)
        self.pre_cfg = transformer.PretrainConfig(steps=args.pretrain_steps,
                                                  max_ops=args.max_ops, seed=0)
        started = time.monotonic()
        self.base, self.snapshots, spent, path = transformer.pretrained(
            self.tokenizer, self.model_cfg, self.pre_cfg, args.cache, LABEL_SNAPSHOTS, log)
        log(f"lm_grpo: base model {path} ({'pre-trained in %.0f s' % spent if spent else 'cached'};"
            f" {sum(p.numel() for p in self.base.parameters())} parameters)")
        self.pretrain_seconds = spent
        alt_cfg = transformer.PretrainConfig(steps=int(round(0.5 * args.pretrain_steps)),
                                             max_ops=args.max_ops, seed=1)
        self.alt, _, spent_alt, _ = transformer.pretrained(
            self.tokenizer, self.model_cfg, alt_cfg, args.cache, (), log)
        self.pretrain_seconds += spent_alt
        self.label_models = {f"base@{f:g}": m for f, m in self.snapshots.items()}
        self.label_models["seed1@0.5"] = self.alt
        self.embeddings = transformer.embed(self.base, self.tokenizer, self.pool.text)
        self.setup_seconds = time.monotonic() - started
        self.heldout_solutions = None

    def records(self):
        return [{"key": k, "prompt": t, "metadata": json.dumps({"answer": int(a)})}
                for k, t, a in zip(self.keys, self.pool.text, self.pool.answer)]

    def exact(self, model, index=None):
        questions = self.pool if index is None else self.pool.subset(np.asarray(index))
        return transformer.solution_probability(model, self.tokenizer, questions)

    def heldout_accuracy(self, model):
        p = transformer.solution_probability(model, self.tokenizer, self.heldout)
        return float(p.mean()), float(p.std() / np.sqrt(len(p)))

    def train_adapter(self, dotsctl, out_dir, args):
        """Labels the pool under the label models and trains the paper's adapter offline.
        Returns (adapter path, dotsctl's JSON report, label figures)."""
        os.makedirs(out_dir, exist_ok=True)
        questions = os.path.join(out_dir, "pool.jsonl")
        with open(questions, "w") as f:
            for r in self.records():
                f.write(json.dumps(r) + "\n")
        np.save(os.path.join(out_dir, "pool.npy"), self.embeddings)
        labels = os.path.join(out_dir, "labels.jsonl")
        figures = {}
        policy_rates = self.exact(self.base)
        with open(labels, "w") as f:
            for source, model in self.label_models.items():
                rates = self.exact(model)
                figures[source] = {"mean_rate": float(rates.mean()),
                                   "pearson_with_policy": pearson(rates, policy_rates)}
                for k, r in zip(self.keys, rates):
                    f.write(json.dumps({"key": k, "source": source,
                                        "rate": float(np.clip(r, 0, 1))}) + "\n")
        adapter = os.path.join(out_dir, "adapter.safetensors")
        cmd = [dotsctl, "adapter", "train", "--questions", questions, "--embeddings",
               os.path.join(out_dir, "pool.npy"), "--labels", labels, "--out", adapter,
               "--epochs", str(args.adapter_epochs), "--hidden", str(args.adapter_hidden),
               "--ref-size", str(args.adapter_ref_size), "--batch-size", "128",
               "--holdout", "0.2", "--eval-every", "0", "--eval-ref-size",
               str(args.adapter_ref_size), "--threads", str(args.threads), "--quiet"]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"lm_grpo: dotsctl adapter train failed ({done.returncode}):\n{done.stderr}")
        report = json.loads(done.stdout)
        report["seconds"] = time.monotonic() - started
        return adapter, report, figures


# ---- one training run ----


def run_arm(client, world, arm, seed, args, run_id, adapter_path):
    """GRPO for args.steps steps on the server's batches. Returns the run's curves."""
    torch.manual_seed(seed)
    model = transformer.TinyGPT(world.model_cfg)
    model.load_state_dict(world.base.state_dict())
    model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 11])
    config = {"batch_size": args.batch_size, "group_size": GROUP_SIZE, "seed": seed,
              **arm_config(arm, args.batch_size, args.reference_size, adapter_path)}
    client.create_run(run_id, config)
    result = client.upsert_questions(run_id, world.records(), world.embeddings)
    if result["rejected"]:
        raise RuntimeError(f"{run_id}: questions rejected: {result['rejected'][:3]}")

    curve = {k: [] for k in (
        "step", "heldout", "heldout_se", "seconds", "generation_seconds", "generated",
        "fresh_effective", "batch_effective", "replayed", "clip_fraction", "ratio_old",
        "ratio_old_max", "pearson_observed", "pearson_exact", "raw_pearson_observed",
        "raw_pearson_exact", "pool_pearson", "raw_pool_pearson")}
    seconds = generation = 0.0
    generated = 0
    heldout0, se0 = world.heldout_accuracy(model)
    refs = None  # the round's paper-mode reference questions and their observed rates
    step_number = 0
    iterator = StepIterator(client, run_id, num_steps=args.steps, wait_seconds=120.0)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                step = next(iterator)
            except StopIteration:
                break
            step_number = step.step
            index = np.array([world.index_of[it.key] for it in step.items], dtype=np.int64)
            questions = world.pool.subset(index)
            t1 = time.perf_counter()
            sols, logps, rewards = grpo_torch.rollout(
                model, world.tokenizer, questions, GROUP_SIZE, args.temperature, MAX_NEW,
                generator)
            t2 = time.perf_counter()
            generation += t2 - t1
            generated += len(index) * GROUP_SIZE
            groups = [step.group(it.key, rewards[i], grpo_torch.encode_payload(sols[i], logps[i]))
                      for i, it in enumerate(step.items)]
            if step.reference_batch:  # roll out and report, do not train
                step.report(groups)
                seconds += time.perf_counter() - t0
                refs = (index, rewards.mean(axis=1))
                continue
            # Diagnostics, outside the timed loop: predictions and exact rates of the step's
            # selected questions under the policy that rolls them out.
            d0 = time.perf_counter()
            fresh = [i for i, it in enumerate(step.items) if it.role == "fresh"]
            if arm != "uniform" and len(fresh) >= 3:
                p_hat = np.array([e["p_hat"] for e in client.estimates(
                    run_id, [step.items[i].key for i in fresh])])
                observed = rewards[fresh].mean(axis=1)
                exact = world.exact(model, index[fresh])
                curve["pearson_observed"].append(pearson(p_hat, observed))
                curve["pearson_exact"].append(pearson(p_hat, exact))
                if refs is not None:
                    raw = identity_paper_prediction(world.embeddings, refs[0], refs[1],
                                                    index[fresh])
                    curve["raw_pearson_observed"].append(pearson(raw, observed))
                    curve["raw_pearson_exact"].append(pearson(raw, exact))
                if step.step % 2 == 0:
                    all_hat = np.array([e["p_hat"] for e in client.estimates(run_id)])
                    all_exact = world.exact(model)
                    curve["pool_pearson"].append(pearson(all_hat, all_exact))
                    if refs is not None:
                        raw = identity_paper_prediction(world.embeddings, refs[0], refs[1],
                                                        np.arange(len(world.pool)))
                        curve["raw_pool_pearson"].append(pearson(raw, all_exact))
            diagnostics = time.perf_counter() - d0  # excluded from the timed span
            # Replayed groups: solutions and behaviour log-probs come back in the payload.
            rows_prompt, rows_sol, rows_logp, rows_adv, rows_group = [], [], [], [], []
            all_rewards = [rewards]

            def add(group_id, text, g_sols, g_logp, g_rewards):
                adv = np.asarray(g_rewards) - np.mean(g_rewards)  # no std division
                prompt = words_task.prompt_ids(world.tokenizer, text)
                for s, lp, a in zip(g_sols, g_logp, adv):
                    rows_prompt.append(prompt)
                    rows_sol.append(s)
                    rows_logp.append(lp)
                    rows_adv.append(a)
                    rows_group.append(group_id)

            for i in range(len(index)):
                add(i, questions.text[i], sols[i], logps[i], rewards[i])
            for j, g in enumerate(step.replay):
                r_sols, r_logp = grpo_torch.decode_payload(g.payload)
                add(len(index) + j, world.pool.text[world.index_of[g.key]], r_sols, r_logp,
                    g.rewards)
                all_rewards.append(np.array(g.rewards)[None])
            stats = grpo_torch.grpo_update(
                model, optimizer, rows_prompt, rows_sol, rows_logp, rows_adv, rows_group,
                clip_eps=args.clip_eps, minibatches=args.minibatches,
                temperature=args.temperature, rng=rng)
            step.report(groups)
            seconds += time.perf_counter() - t0 - diagnostics
            all_mean = np.concatenate(all_rewards).mean(axis=1)
            fresh_mean = rewards.mean(axis=1)
            acc, se = world.heldout_accuracy(model)
            curve["step"].append(step.step + 1)
            curve["heldout"].append(acc)
            curve["heldout_se"].append(se)
            curve["generation_seconds"].append(generation)
            curve["generated"].append(generated)
            curve["fresh_effective"].append(float(((fresh_mean > 0) & (fresh_mean < 1)).mean()))
            curve["batch_effective"].append(float(((all_mean > 0) & (all_mean < 1)).mean()))
            curve["replayed"].append(len(step.replay))
            for k in ("clip_fraction", "ratio_old", "ratio_old_max"):
                curve[k].append(stats[k])
            curve["seconds"].append(seconds)
            if (step.step + 1) % args.log_every == 0:
                log(f"  [{arm} seed {seed}] step {step.step + 1:3d}  held-out {acc:.3f}  "
                    f"{seconds:6.1f} s (generation {generation:5.1f} s)  fresh effective "
                    f"{np.mean(curve['fresh_effective'][-args.log_every:]):.2f}  replayed "
                    f"{len(step.replay):2d}")
    except dots_client.DotsError as e:
        raise RuntimeError(f"dots-server failed during run {run_id!r} at step {step_number} "
                           f"({e.code}: {e.message}); restart it on the same state directory "
                           f"and resume the run from step {step_number} with StepIterator("
                           f"start_step={step_number})") from e
    return {"arm": arm, "seed": seed, "run_id": run_id, "heldout_initial": heldout0,
            "heldout_initial_se": se0, "curve": curve}


# ---- tables ----


def first_reaching(curve, target):
    """(steps, seconds, generation seconds) when held-out accuracy first reaches target."""
    for i, acc in enumerate(curve["heldout"]):
        if acc >= target - 1e-12:
            return curve["step"][i], curve["seconds"][i], curve["generation_seconds"][i]
    return None


def final_accuracy(curve, last=3):
    """Held-out accuracy at the end of the budget (mean of the last `last` evaluations)."""
    return float(np.mean(curve["heldout"][-last:]))


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _all_or_none(values):
    """Mean over seeds when every seed has a value, else None (not reached in some seed)."""
    return None if any(v is None for v in values) or not values else float(np.mean(values))


def summarize(results, arms, fixed_target):
    seeds = sorted({r["seed"] for r in results})
    by = {(r["arm"], r["seed"]): r for r in results}
    out = {"seeds": seeds, "fixed_target": fixed_target, "arms": {}, "targets": {}}
    uniform_final = ({s: final_accuracy(by[("uniform", s)]["curve"]) for s in seeds}
                     if "uniform" in arms else None)
    out["targets"]["uniform_final"] = uniform_final
    for arm in arms:
        runs = [by[(arm, s)] for s in seeds]
        entry = {
            "initial_heldout": float(np.mean([r["heldout_initial"] for r in runs])),
            "final_heldout": float(np.mean([final_accuracy(r["curve"]) for r in runs])),
            "heldout_se": float(np.mean([r["curve"]["heldout_se"][-1] for r in runs])),
            "total_seconds": float(np.mean([r["curve"]["seconds"][-1] for r in runs])),
            "total_generation_seconds": float(np.mean([r["curve"]["generation_seconds"][-1]
                                                       for r in runs])),
            "generated_per_step": float(np.mean([r["curve"]["generated"][-1] /
                                                 r["curve"]["step"][-1] for r in runs])),
            "fresh_effective": float(np.mean([np.mean(r["curve"]["fresh_effective"])
                                              for r in runs])),
            "batch_effective": float(np.mean([np.mean(r["curve"]["batch_effective"])
                                              for r in runs])),
        }
        for name, targets in (("uniform_final", uniform_final),
                              ("fixed", {s: fixed_target for s in seeds})):
            if targets is None:
                continue
            hits = [first_reaching(by[(arm, s)]["curve"], targets[s]) for s in seeds]
            for j, what in enumerate(("steps", "seconds", "generation_seconds")):
                per_seed = [h[j] if h else None for h in hits]
                entry[f"{what}_to_{name}_per_seed"] = per_seed
                entry[f"{what}_to_{name}"] = _all_or_none(per_seed)
        for k in ("pearson_observed", "pearson_exact", "raw_pearson_observed",
                  "raw_pearson_exact", "pool_pearson", "raw_pool_pearson"):
            entry[k] = _mean([_mean(r["curve"][k]) for r in runs])
        out["arms"][arm] = entry
    if "dots" in arms:
        d = out["arms"]["dots"]
        out["adapter_pearson"] = {"trained": d["pearson_observed"],
                                  "raw": d["raw_pearson_observed"],
                                  "trained_exact": d["pearson_exact"],
                                  "raw_exact": d["raw_pearson_exact"],
                                  "trained_pool": d["pool_pearson"],
                                  "raw_pool": d["raw_pool_pearson"]}
    return out


def _fmt(v, f="{:.1f}"):
    return "—" if v is None else f.format(v)


def _saving(arm_values, uniform_values):
    """1 - sum(arm) / sum(uniform) over the seeds where both reached the target."""
    pairs = [(a, u) for a, u in zip(arm_values, uniform_values) if a is not None and u is not None]
    if not pairs:
        return None, 0
    return 1 - sum(a for a, _ in pairs) / sum(u for _, u in pairs), len(pairs)


def format_tables(summary, args):
    arms = summary["arms"]
    seeds = len(summary["seeds"])
    lines = [f"Table 1 (miniature): steps, wall-clock seconds (generation + training, evaluation "
             f"excluded) and generation seconds until held-out accuracy first reaches the "
             f"target; mean over {seeds} seed(s), '—' = not reached in some seed within "
             f"{args.steps} steps; saving = 1 - arm / uniform over seeds where both reach it.",
             ""]
    for name, label in (("uniform_final", "uniform's final accuracy"),
                        ("fixed", f"accuracy {summary['fixed_target']:.2f}")):
        if "uniform" not in arms or f"steps_to_{name}" not in arms["uniform"]:
            continue
        lines += [f"Target: {label}", "",
                  "| arm | steps | seconds | generation s | steps saved | time saved | "
                  "generation saved |", "|---|---|---|---|---|---|---|"]
        u = arms["uniform"]
        for arm, a in arms.items():
            cells = []
            for what in ("steps", "seconds", "generation_seconds") if arm != "uniform" else ():
                s, n = _saving(a[f"{what}_to_{name}_per_seed"], u[f"{what}_to_{name}_per_seed"])
                cells.append("—" if s is None else f"{100 * s:.0f} % ({n})")
            lines.append(f"| {arm} | {_fmt(a[f'steps_to_{name}'])} | "
                         f"{_fmt(a[f'seconds_to_{name}'])} | "
                         f"{_fmt(a[f'generation_seconds_to_{name}'])} | "
                         + " | ".join(cells or ["(baseline)"] * 3) + " |")
        lines.append("")
    lines += ["| arm | held-out start → end (± s.e. over questions) | run seconds (generation) "
              "| "
              "rollouts per step | effective ratio fresh / batch |", "|---|---|---|---|---|"]
    for arm, a in arms.items():
        lines.append(f"| {arm} | {a['initial_heldout']:.3f} → {a['final_heldout']:.3f} "
                     f"(± {a['heldout_se']:.3f}) | {a['total_seconds']:.0f} "
                     f"({a['total_generation_seconds']:.0f}) | {a['generated_per_step']:.0f} | "
                     f"{a['fresh_effective']:.2f} / {a['batch_effective']:.2f} |")
    lines += ["", "Table 2 / Table 8 (miniature): Pearson of predicted and true success rates of "
              "each step's selected questions, mean over steps and seeds; true = the 8 "
              "rollouts' observed rate (the paper's protocol) / the exact probability of the "
              "correct solution; pool = all pool questions against their exact rates.", "",
              "| arm | estimator | Pearson (observed) | Pearson (exact) | pool Pearson |",
              "|---|---|---|---|---|"]
    names = {"dots": "paper, trained adapter", "dots_online": "paper, adapter trained online",
             "dots_rr": "default (history + similarity + online model)"}
    for arm in ("dots", "dots_online", "dots_rr"):
        if arm in arms:
            a = arms[arm]
            lines.append(f"| {arm} | {names[arm]} | {_fmt(a['pearson_observed'], '{:.3f}')} | "
                         f"{_fmt(a['pearson_exact'], '{:.3f}')} | "
                         f"{_fmt(a['pool_pearson'], '{:.3f}')} |")
            if arm == "dots":
                lines.append(f"| dots | paper, identity projection (raw embeddings), same "
                             f"references | {_fmt(a['raw_pearson_observed'], '{:.3f}')} | "
                             f"{_fmt(a['raw_pearson_exact'], '{:.3f}')} | "
                             f"{_fmt(a['raw_pool_pearson'], '{:.3f}')} |")
    verdicts = []
    if "dots_rr" in arms and "uniform" in arms:
        s, n = _saving(arms["dots_rr"]["seconds_to_uniform_final_per_seed"],
                       arms["uniform"]["seconds_to_uniform_final_per_seed"])
        if s is None:
            verdicts.append("- dots_rr never reached uniform's final accuracy (target >= 25 % "
                            "less wall-clock: not met)")
        else:
            met = s >= 0.25 and n == seeds
            verdicts.append(
                f"- dots_rr wall-clock saving to uniform's final accuracy: {100 * s:.0f} % over "
                f"the {n} of {seeds} seed(s) where it reached it (target >= 25 % in every seed: "
                f"{'met' if met else 'not met'})")
    ap = summary.get("adapter_pearson")
    if ap and ap["trained"] is not None and ap["raw"] is not None:
        met = ap["trained"] >= 0.6 and ap["trained"] >= 2 * ap["raw"]
        verdicts.append(f"- trained adapter Pearson {ap['trained']:.3f}, raw {ap['raw']:.3f} "
                        f"(target >= 0.6 and >= 2 x raw: {'met' if met else 'not met'})")
    if verdicts:
        lines += [""] + verdicts
    return "\n".join(lines)


def plot(results, arms, path):
    """Held-out accuracy per step and per second, and the effective ratio per step (Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"uniform": "tab:blue", "dots": "tab:orange", "dots_rr": "tab:red",
               "dots_online": "tab:green"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for arm in arms:
        runs = [r["curve"] for r in results if r["arm"] == arm]
        c = colours.get(arm)
        steps = np.array(runs[0]["step"])
        acc = np.array([r["heldout"] for r in runs])
        axes[0].plot(steps, acc.mean(0), color=c, label=f"{arm} ({len(runs)} seeds)")
        axes[0].fill_between(steps, acc.min(0), acc.max(0), color=c, alpha=0.2, lw=0)
        top = min(r["seconds"][-1] for r in runs)
        grid = np.linspace(0, top, 200)
        per_s = np.array([np.interp(grid, r["seconds"], r["heldout"]) for r in runs])
        axes[1].plot(grid, per_s.mean(0), color=c, label=arm)
        eff = np.array([r["fresh_effective"] for r in runs])
        axes[2].plot(steps, eff.mean(0), color=c, label=arm)
    axes[0].set_xlabel("training step")
    axes[1].set_xlabel("wall-clock seconds (generation + training)")
    axes[2].set_xlabel("training step")
    for ax in axes[:2]:
        ax.set_ylabel("held-out accuracy (P(correct solution))")
    axes[2].set_ylabel("effective ratio of fresh groups")
    axes[0].set_title("learning curve per step (mean, min-max band)")
    axes[1].set_title("learning curve per second")
    axes[2].set_title("Figure 3: effective questions (0 < mean reward < 1)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- command line ----


QUICK = {"steps": 16, "pool": 512, "heldout": 256, "pretrain_steps": 1000, "adapter_epochs": 20}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="3",
                        help='N (= seeds 1..N), a range "4-6" or a list "1,5" (default 3)')
    parser.add_argument("--quick", action="store_true",
                        help=f"the reduced version make demo runs: {QUICK} (explicit flags win)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of "
                        + ", ".join(ARMS) + " (Table 1 needs uniform)")
    parser.add_argument("--steps", type=int, help="training steps per run (default 40)")
    parser.add_argument("--batch-size", type=int, default=16, help="B, questions per step")
    parser.add_argument("--reference-size", type=int, default=16,
                        help="K, reference questions per round of the paper-mode arms")
    parser.add_argument("--pool", type=int, help="questions in the pool (default 512)")
    parser.add_argument("--heldout", type=int, help="held-out questions (default 384)")
    parser.add_argument("--max-ops", type=int, default=4, help="longest chain of operations")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of pool and held-out set")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate of GRPO")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--clip-eps", type=float, default=0.2)
    parser.add_argument("--minibatches", type=int, default=2, help="optimizer steps per batch")
    parser.add_argument("--fixed-target", type=float, default=None,
                        help="the fixed held-out accuracy of Table 1 (default: halfway between "
                        "the base model's accuracy and uniform's final one, mean over seeds)")
    parser.add_argument("--width", type=int, default=128, help="transformer width")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--pretrain-steps", type=int, help="base pre-training steps (default 1000)")
    parser.add_argument("--adapter-epochs", type=int, help="dotsctl adapter train epochs (20)")
    parser.add_argument("--adapter-hidden", type=int, default=128, help="adapter width h")
    parser.add_argument("--adapter-ref-size", type=int, default=64,
                        help="references per adapter training batch")
    parser.add_argument("--cache", default=os.path.join(ROOT, "build", "lm_grpo_cache"),
                        help="where pre-trained models are cached (keyed by their config hash)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine)")
    parser.add_argument("--server", help="HOST:PORT of a running dots-server (else one is "
                        "started from --server-bin)")
    parser.add_argument("--server-bin", default=os.environ.get("DOTS_SERVER_BIN"),
                        help="dots-server binary (default $DOTS_SERVER_BIN)")
    parser.add_argument("--dotsctl", default=None,
                        help="dotsctl binary (default: beside --server-bin, else build/bin)")
    parser.add_argument("--out", default="lm_grpo_out", help="output directory")
    parser.add_argument("--log-every", type=int, default=10, help="progress every N steps")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    defaults = {"steps": 40, "pool": 512, "heldout": 384, "pretrain_steps": 1000,
                "adapter_epochs": 20}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, QUICK[k] if args.quick else v)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for arm in arms:
        if arm not in ARMS:
            parser.error(f"--arms: unknown arm {arm!r} (known: {', '.join(ARMS)})")
    seeds = tiny_grpo.parse_seeds(args.seeds)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    dotsctl = args.dotsctl or os.path.join(
        os.path.dirname(args.server_bin) if args.server_bin else os.path.join(ROOT, "build", "bin"),
        "dotsctl")

    wall = time.monotonic()
    world = World(args)
    adapter = adapter_report = label_figures = None
    if "dots" in arms:
        adapter, adapter_report, label_figures = world.train_adapter(
            dotsctl, os.path.join(args.out, "adapter"), args)
        reports = adapter_report["reports"]
        log(f"lm_grpo: adapter trained in {adapter_report['seconds']:.0f} s; held-out questions "
            f"Pearson identity {reports[0]['questions']['pearson']:.3f} → trained "
            f"{reports[-1]['questions']['pearson']:.3f}")
    process = state_dir = None
    address = args.server
    if address is None:
        if not args.server_bin:
            parser.error("give --server HOST:PORT or --server-bin (or set DOTS_SERVER_BIN)")
        state_dir = tempfile.mkdtemp(prefix="lm-grpo-state-")
        process, address = tiny_grpo.start_server(args.server_bin, state_dir)
        log(f"lm_grpo: started dots-server on {address} (state {state_dir})")
    results = []
    try:
        with dots_client.Client(address, timeout=60.0) as client:
            tag = f"{os.getpid()}-{int(time.time())}"
            for seed in seeds:
                for arm in arms:
                    log(f"lm_grpo: {arm}, seed {seed}, {args.steps} steps")
                    run_id = f"lm-grpo-{arm}-s{seed}-{tag}"
                    r = run_arm(client, world, arm, seed, args, run_id,
                                os.path.abspath(adapter) if adapter else "")
                    results.append(r)
                    log(f"lm_grpo: {arm}, seed {seed}: held-out {r['heldout_initial']:.3f} → "
                        f"{r['curve']['heldout'][-1]:.3f}, {r['curve']['seconds'][-1]:.1f} s")
    except RuntimeError as e:
        sys.exit(f"lm_grpo: {e}")
    finally:
        if process is not None:
            code = tiny_grpo.stop_server(process)
            log(f"lm_grpo: dots-server stopped (exit {code})")
            shutil.rmtree(state_dir, ignore_errors=True)

    fixed = args.fixed_target
    if fixed is None and "uniform" in arms:
        uni = [r for r in results if r["arm"] == "uniform"]
        fixed = float(np.mean([(r["heldout_initial"] + final_accuracy(r["curve"])) / 2
                               for r in uni]))
    summary = summarize(results, arms, fixed if fixed is not None else 1.0)
    summary["setup"] = {"pretrain_seconds": world.pretrain_seconds,
                        "setup_seconds": world.setup_seconds,
                        "parameters": sum(p.numel() for p in world.base.parameters()),
                        "total_seconds": time.monotonic() - wall}
    if adapter_report:
        summary["adapter_offline"] = {
            "identity": adapter_report["reports"][0], "trained": adapter_report["reports"][-1],
            "labels": adapter_report["labels"], "seconds": adapter_report["seconds"],
            "sources": label_figures}
    table = format_tables(summary, args)
    table += (f"\n\nSetup {summary['setup']['setup_seconds']:.0f} s (pre-training "
              f"{world.pretrain_seconds:.0f} s), whole benchmark "
              f"{summary['setup']['total_seconds']:.0f} s.")
    command = "examples/lm_grpo/lm_grpo.py " + " ".join(argv if argv is not None
                                                         else sys.argv[1:])
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"command": command, "args": vars(args), "summary": summary,
                   "runs": results}, f)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    if not args.no_plot:
        path = os.path.join(args.out, "curves.png")
        plot(results, arms, path)
        print(f"\nCurves: {os.path.abspath(path)}")
    return summary


if __name__ == "__main__":
    main()
