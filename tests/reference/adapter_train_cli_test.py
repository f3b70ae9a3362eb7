#!/usr/bin/python3
"""`dotsctl adapter train` end to end: training, held-out report, the file, bad input.

A synthetic pool (questions in topics that share a success rate, embeddings in an .npy) is
labelled by two sources (the second labels 1 - rate). Checks:
  - training exits 0, prints progress with the loss on stderr and a JSON summary whose
    held-out reports show the trained adapter beating the identity projection on held-out
    questions and on the held-out source;
  - the same command gives the same file byte for byte, with 1 or 2 threads;
  - `dotsctl estimate --adapter FILE --mode paper` loads the file;
  - a pool without embeddings trains on the built-in text embedder, and --embeddings-out
    writes the matrix estimate needs to load the adapter;
  - bad labels (NaN, a rate outside [0, 1], an unknown key, a missing field, a duplicate
    (key, source)), an unknown --holdout-source and a bad flag fail with the file:line or the
    flag in the message and write no adapter file;
  - --help explains the flags and the metrics.

Usage: adapter_train_cli_test.py --dotsctl PATH
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def synthetic(workdir, n=400, d=16, seed=1):
    rng = np.random.default_rng(seed)
    rates = np.array([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])
    centres = rng.standard_normal((len(rates), d))
    topic = rng.integers(0, len(rates), size=n)
    # A large shared offset and one huge nuisance dimension (as mean-pooled LLM states have)
    # hide the topics from raw cosine similarity; a learned projection removes them.
    emb = 2 * rng.standard_normal(d) + centres[topic] + 0.6 * rng.standard_normal((n, d))
    emb[:, 0] += 5 * rng.standard_normal(n)
    emb = emb.astype(np.float32)
    keys = [f"q{i:03d}" for i in range(n)]
    with open(os.path.join(workdir, "q.jsonl"), "w") as f:
        for i, key in enumerate(keys):
            f.write(json.dumps({"key": key, "prompt": f"topic {topic[i]} problem {i}: "
                                f"{'alpha beta' if topic[i] % 2 else 'gamma delta'}"}) + "\n")
    np.save(os.path.join(workdir, "e.npy"), emb)
    with open(os.path.join(workdir, "l.jsonl"), "w") as f:
        for i, key in enumerate(keys):
            f.write(json.dumps({"key": key, "source": "A", "rate": float(rates[topic[i]])}) + "\n")
            f.write(json.dumps({"key": key, "source": "B", "rate": 1 - float(rates[topic[i]])})
                    + "\n")
    return keys


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dotsctl", required=True)
    args = parser.parse_args()
    failures = []

    def check(ok, what, detail=""):
        print(f"{'PASS' if ok else 'FAIL'} {what}" + (f"\n     {detail}" if detail else ""))
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as w:
        keys = synthetic(w)
        p = lambda name: os.path.join(w, name)  # noqa: E731
        base = [args.dotsctl, "adapter", "train", "--questions", p("q.jsonl"), "--embeddings",
                p("e.npy"), "--labels", p("l.jsonl"), "--epochs", "6", "--hidden", "24",
                "--layers", "2", "--batch-size", "32", "--ref-size", "32", "--lr", "0.003",
                "--holdout", "0.25", "--eval-ref-size", "24", "--eval-every", "3"]

        run = subprocess.run(base + ["--out", p("a.safetensors"), "--holdout-source", "B"],
                             capture_output=True, text=True)
        check(run.returncode == 0, "training exits 0", run.stderr[-500:] if run.returncode else "")
        if run.returncode != 0:
            return 1
        summary = json.loads(run.stdout)
        reports = {r["model"]: r for r in summary["reports"]}
        final = reports["epoch 6"]
        check("loss" in run.stderr and "epoch 6/6" in run.stderr,
              "progress with the loss on stderr", run.stderr.splitlines()[-1])
        check(set(reports) == {"identity", "epoch 3", "epoch 6"},
              "reports before training and every 3 epochs", str(sorted(reports)))
        for part in ("questions", "source"):
            trained, identity = final[part]["pearson"], reports["identity"][part]["pearson"]
            check(trained > identity and trained > 0.8,
                  f"held-out {part}: trained Pearson beats the identity's",
                  f"{trained:.3f} vs {identity:.3f}; interval precision "
                  f"{final[part]['interval_precision']:.3f} vs "
                  f"{reports['identity'][part]['interval_precision']:.3f}")
        check(summary["labels"]["heldout"] > 0 and summary["labels"]["train"] > 0 and
              summary["steps"] == 6 * -(-summary["labels"]["train"] // 32),
              "label split and step count", json.dumps(summary["labels"]))

        for threads in ("1", "2"):
            again = subprocess.run(base + ["--out", p(f"t{threads}.safetensors"),
                                           "--holdout-source", "B", "--threads", threads,
                                           "--quiet"], capture_output=True, text=True)
            same = again.returncode == 0 and open(p("a.safetensors"), "rb").read() == open(
                p(f"t{threads}.safetensors"), "rb").read()
            check(same and again.stderr == "",
                  f"same file byte for byte with --threads {threads} (and --quiet is quiet)",
                  again.stderr[-300:])

        with open(p("refs.jsonl"), "w") as f:
            for key in keys[:40]:
                f.write(json.dumps({"key": key, "rate": 0.5}) + "\n")
        est = subprocess.run([args.dotsctl, "estimate", "--questions", p("q.jsonl"),
                              "--embeddings", p("e.npy"), "--labels", p("refs.jsonl"),
                              "--adapter", p("a.safetensors"), "--mode", "paper"],
                             capture_output=True, text=True)
        check(est.returncode == 0 and len(est.stdout.splitlines()) == len(keys),
              "dotsctl estimate --adapter loads the file", est.stderr[-300:])

        text = subprocess.run([args.dotsctl, "adapter", "train", "--questions", p("q.jsonl"),
                               "--labels", p("l.jsonl"), "--out", p("text.safetensors"),
                               "--epochs", "1", "--hidden", "8", "--layers", "1",
                               "--text-dim", "32", "--embeddings-out", p("text.npy"),
                               "--quiet"], capture_output=True, text=True)
        ok = text.returncode == 0 and np.load(p("text.npy")).shape == (len(keys), 32)
        est = subprocess.run([args.dotsctl, "estimate", "--questions", p("q.jsonl"),
                              "--embeddings", p("text.npy"), "--labels", p("refs.jsonl"),
                              "--adapter", p("text.safetensors"), "--mode", "paper"],
                             capture_output=True, text=True)
        check(ok and est.returncode == 0,
              "text embeddings: --embeddings-out feeds estimate --adapter",
              (text.stderr + est.stderr)[-300:])

        good = open(p("l.jsonl")).read().splitlines()
        bad_cases = [
            ("NaN", '{"key": "q001", "source": "C", "rate": NaN}',
             'bad.jsonl:3: field "rate": NaN is not a number'),
            ("rate 1.5", '{"key": "q001", "source": "C", "rate": 1.5}',
             'bad.jsonl:3: field "rate": 1.5 is outside [0, 1]'),
            ("unknown key", '{"key": "nope", "source": "C", "rate": 0.5}',
             'bad.jsonl:3: field "key": "nope" is not in the question pool'),
            ("missing rate", '{"key": "q001", "source": "C"}',
             'bad.jsonl:3: field "rate": missing'),
            ("duplicate", '{"key": "q000", "source": "A", "rate": 0.5}',
             'bad.jsonl:3: key "q000" with source "A" is labeled twice (first on line 1)'),
        ]
        for name, line, want in bad_cases:
            with open(p("bad.jsonl"), "w") as f:
                f.write("\n".join(good[:2] + [line] + good[2:]) + "\n")
            out = p("bad.safetensors")
            cmd = [args.dotsctl, "adapter", "train", "--questions", p("q.jsonl"), "--embeddings",
                   p("e.npy"), "--labels", p("bad.jsonl"), "--out", out, "--quiet"]
            bad = subprocess.run(cmd, capture_output=True, text=True)
            check(bad.returncode == 1 and want in bad.stderr and not os.path.exists(out),
                  f"bad labels ({name}) refused naming file:line", bad.stderr.strip())
        bad = subprocess.run(base + ["--out", p("x.safetensors"), "--holdout-source", "Z"],
                             capture_output=True, text=True)
        check(bad.returncode == 1 and 'holdout_source: "Z" is not a source' in bad.stderr and
              "(sources: A, B)" in bad.stderr and not os.path.exists(p("x.safetensors")),
              "unknown --holdout-source refused", bad.stderr.strip())
        zero_batch = list(base)
        zero_batch[zero_batch.index("--batch-size") + 1] = "0"
        bad = subprocess.run(zero_batch + ["--out", p("x.safetensors")],
                             capture_output=True, text=True)
        check(bad.returncode == 1 and "--batch-size: 0 is outside" in bad.stderr,
              "bad flag value refused naming the flag", bad.stderr.strip())
        helped = subprocess.run([args.dotsctl, "adapter", "train", "--help"],
                                capture_output=True, text=True)
        check(helped.returncode == 0 and "interval" in helped.stdout and
              "--holdout-source" in helped.stdout and '"source"' in helped.stdout,
              "--help explains flags, label format and metrics")
    print(f"adapter train CLI: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
