#!/usr/bin/python3
"""The paper's Table 2 protocol on real labels (data/math-passrates).

For each of the six models whose MATH pass rates the file holds: train the paper's adapter with
`dotsctl adapter train` on the other five models' rates over the training split (7,500
questions, one source per model), then predict the held-out model's rates on the test split
(5,000 questions) from 256 of its labels, by the released evaluation protocol (5 seeds of 256
references; `paper` mode's attention, head and OLS). Reported per held-out model: Pearson, MAE and
interval precision of the trained adapter, of the identity projection (the off-the-shelf
embedding) and the Pearson of the static prior alone (the `prior` field, qwen2.5-7b's rate; not
defined when qwen2.5-7b itself is held out).

Embeddings: the built-in text embedder (256 dims, fitted on the pool's prompts) unless
--embeddings gives an N x D .npy in pool order (e.g. a trainer's mean-pooled hidden states).

  /usr/bin/python3 bench/adapter/table2.py --dotsctl build/bin/dotsctl --out /tmp/table2

Writes OUT/table2.json and OUT/table2.md and prints the table. Takes a few minutes per model at
the default --epochs on 2 cores (progress on stderr).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dotsctl", default=os.path.join(ROOT, "build/bin/dotsctl"))
    parser.add_argument("--data", default=os.path.join(ROOT, "data/math-passrates/questions.jsonl"))
    parser.add_argument("--embeddings", help="N x D .npy in pool order (default: text embedder)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per model")
    parser.add_argument("--models", help="comma-separated held-out models (default: all six)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    lines = [json.loads(line) for line in open(args.data) if line.strip()]
    models = list(lines[0]["rates"].keys())
    held_out = args.models.split(",") if args.models else models
    for m in held_out:
        if m not in models:
            sys.exit(f"table2: --models: unknown model {m!r} (models: {', '.join(models)})")
    train = [q for q in lines if q["metadata"]["split"] == "train"]
    test = [q for q in lines if q["metadata"]["split"] == "test"]
    print(f"{len(lines)} questions: {len(train)} train, {len(test)} test; models: "
          f"{', '.join(models)}", file=sys.stderr)

    rows = []
    for m in held_out:
        labels_path = os.path.join(args.out, f"labels-{m}.jsonl")
        with open(labels_path, "w") as f:
            for q in train:
                for source in models:
                    if source != m:
                        f.write(json.dumps({"key": q["key"], "source": source,
                                            "rate": q["rates"][source]}) + "\n")
            for q in test:
                f.write(json.dumps({"key": q["key"], "source": m, "rate": q["rates"][m]}) + "\n")
        cmd = [args.dotsctl, "adapter", "train", "--questions", args.data, "--labels", labels_path,
               "--out", os.path.join(args.out, f"adapter-{m}.safetensors"), "--epochs",
               str(args.epochs), "--holdout", "0", "--holdout-source", m, "--eval-every", "0",
               "--seed", str(args.seed)]
        if args.embeddings:
            cmd += ["--embeddings", args.embeddings]
        print(f"held out {m}: training on {len(train)} x {len(models) - 1} labels ...",
              file=sys.stderr)
        start = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"table2: {' '.join(cmd)} failed:\n{done.stderr}")
        result = json.loads(done.stdout)
        by_model = {r["model"]: r for r in result["reports"]}
        prior = float("nan")
        if m != "qwen2.5-7b":
            prior = pearson([q["prior"] for q in test], [q["rates"][m] for q in test])
        row = {"held_out": m, "seconds": round(time.time() - start, 1),
               "train_loss": result["train_loss"], "prior_pearson": prior}
        row["identity"] = by_model["identity"]["source"]
        row["trained"] = result["reports"][-1]["source"]  # after the last epoch
        rows.append(row)
        print(f"  {json.dumps(row)}", file=sys.stderr)
        os.remove(labels_path)

    with open(os.path.join(args.out, "table2.json"), "w") as f:
        json.dump({"data": args.data, "epochs": args.epochs, "embeddings": args.embeddings or
                   "text embedder", "rows": rows}, f, indent=1)
    header = ("| held-out model | trained Pearson | identity Pearson | prior Pearson | "
              "trained MAE | trained interval precision (base) |")
    table = [header, "|---|---|---|---|---|---|"]
    for r in rows:
        t, i = r.get("trained", {}), r.get("identity", {})
        table.append(f"| {r['held_out']} | {t.get('pearson', float('nan')):.3f} | "
                     f"{i.get('pearson', float('nan')):.3f} | {r['prior_pearson']:.3f} | "
                     f"{t.get('mae', float('nan')):.3f} | "
                     f"{t.get('interval_precision', float('nan')):.3f} "
                     f"({t.get('interval_base', float('nan')):.3f}) |")
    text = "\n".join(table) + "\n"
    with open(os.path.join(args.out, "table2.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
