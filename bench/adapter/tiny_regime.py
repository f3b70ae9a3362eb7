#!/usr/bin/python3
"""Learned difficulty in the large-pool regime of examples/tiny_grpo (8,000 questions, 64 a step:
each question is handed out about once in a run).

Input: two `tiny_grpo.py --dump-history` files of one seed (the same pool), written by two
different training runs (e.g. the `dots_rr` and `uniform` arms): the exact success rate of every
pool question under the policy of every step, with the task's embeddings beside each file.

1. Offline prediction, the paper's Table 2 / Table 8 in miniature: the LABELS run's policies at
   several steps are the labelling sources (the paper's "other LLMs"). `dotsctl adapter train`
   fits the paper's adapter on them, holding out a fifth of the questions and the last source;
   Pearson, MAE and interval precision of the trained adapter against the identity projection
   (the released evaluation protocol: 5 seeds of 256 labelled references).
2. Trajectory replay of the REPLAY run (`dots-bench trajectory`, one epoch = one step of 64
   questions): default (online model on and off), history, paper with the trained adapter,
   paper with the identity projection, and uniform selection.

  /usr/bin/python3 bench/adapter/tiny_regime.py --labels-dump D1.jsonl --replay-dump D2.jsonl \\
      --out /tmp/regime

Writes OUT/regime.json and OUT/regime.md and prints both tables.
"""
import argparse
import json
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(cmd):
    print("+ " + " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"tiny_regime: command failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def npy_of(path):
    return os.path.splitext(path)[0] + ".npy"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels-dump", required=True, help="dump whose steps label the adapter")
    parser.add_argument("--replay-dump", required=True, help="dump replayed by the trajectory")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dotsctl", default=os.path.join(ROOT, "build/bin/dotsctl"))
    parser.add_argument("--dots-bench", default=os.path.join(ROOT, "build/bin/dots-bench"))
    parser.add_argument("--sources", type=int, default=6,
                        help="labelling sources: this many steps evenly spaced over the run")
    parser.add_argument("--epochs", type=int, default=20, help="adapter training epochs")
    parser.add_argument("--hidden", type=int, default=128, help="adapter width h")
    parser.add_argument("--budget", type=int, default=64, help="questions per replayed step")
    parser.add_argument("--ref-size", type=int, default=16, help="reference questions per step")
    parser.add_argument("--seeds", default="1-3", help="trajectory replay seeds")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    records = [json.loads(line) for line in open(args.labels_dump) if line.strip()]
    steps = len(records[0]["history"])
    chosen = sorted({int(round(i * (steps - 1) / (args.sources - 1))) for i in range(args.sources)})
    labels_path = os.path.join(args.out, "labels.jsonl")
    with open(labels_path, "w") as f:
        for r in records:
            for t in chosen:
                f.write(json.dumps({"key": r["key"], "source": f"step{t}",
                                    "rate": r["history"][t]}) + "\n")
    held_source = f"step{chosen[-1]}"
    adapter = os.path.join(args.out, "adapter.safetensors")
    trained = json.loads(run([
        args.dotsctl, "adapter", "train", "--questions", args.labels_dump, "--embeddings",
        npy_of(args.labels_dump), "--labels", labels_path, "--out", adapter, "--epochs",
        str(args.epochs), "--hidden", str(args.hidden), "--holdout", "0.2", "--holdout-source",
        held_source, "--eval-every", "0", "--quiet"]))
    reports = trained["reports"]
    offline = {"sources": [f"step{t}" for t in chosen], "held_out_source": held_source,
               "labels": trained["labels"], "identity": reports[0], "trained": reports[-1]}

    def trajectory(extra):
        out = run([args.dots_bench, "trajectory", "--data", args.replay_dump, "--embeddings",
                   npy_of(args.replay_dump), "--budget", str(args.budget), "--ref-size",
                   str(args.ref_size), "--seeds", args.seeds, "--json"] + extra)
        return json.loads(out)

    main_run = trajectory(["--adapter", adapter])
    no_model = trajectory(["--no-model", "--no-baselines"])
    identity = trajectory(["--estimator", "paper", "--no-baselines"])
    rows = [("default + dots, online model", main_run),
            ("default + dots, no model", no_model),
            ("history + dots", main_run["baselines"]["history"]),
            ("paper + dots, trained adapter", main_run["baselines"]["paper"]),
            ("paper + dots, identity", identity),
            ("uniform", main_run["baselines"]["uniform"])]
    rows = [(name, {"effective_ratio": m["effective_ratio"], "pearson": m["pearson"],
                    "mae": m["mae"]}) for name, m in rows]
    result = {"labels_dump": args.labels_dump, "replay_dump": args.replay_dump, "offline": offline,
              "replay": {name: metrics for name, metrics in rows}}
    with open(os.path.join(args.out, "regime.json"), "w") as f:
        json.dump(result, f, indent=1)

    md = ["Offline prediction (held-out questions / held-out source "
          f"{held_source}; sources {', '.join(offline['sources'])}):", "",
          "| adapter | questions Pearson | questions MAE | questions interval prec. | "
          "source Pearson | source MAE | source interval prec. |", "|---|---|---|---|---|---|---|"]
    for name in ("identity", "trained"):
        rep = offline[name]
        q, s = rep["questions"], rep["source"]
        md.append(f"| {name} | {q['pearson']:.3f} | {q['mae']:.3f} | {q['interval_precision']:.3f}"
                  f" | {s['pearson']:.3f} | {s['mae']:.3f} | {s['interval_precision']:.3f} |")
    md += ["", f"Trajectory replay ({steps} steps of {args.budget}, K = {args.ref_size}, seeds "
           f"{args.seeds}):", "", "| configuration | effective | pearson |", "|---|---|---|"]
    for name, metrics in rows:
        md.append(f"| {name} | {metrics['effective_ratio']:.4f} | {metrics['pearson']:.4f} |")
    text = "\n".join(md) + "\n"
    with open(os.path.join(args.out, "regime.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
