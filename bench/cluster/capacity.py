"""Capacity planning figures for a dots cluster: the memory a replica needs per question and per
run, at several embedding dimensions, measured on a live dots-server (resident set size from
/proc, after the pool is uploaded and a round is planned).

    PYTHONPATH=build/python:client/python /usr/bin/python3 bench/cluster/capacity.py \
        --server-bin build/bin/dots-server [--questions 20000] [--dims 256,768,1536] [--runs 20]

Prints a Markdown table and, with --json, one JSON object. Each dimension gets a fresh server.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "tiny_grpo"))

import dots_client  # noqa: E402
import tiny_grpo  # noqa: E402  (start_server / stop_server)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settle(pid, seconds=1.0):
    time.sleep(seconds)
    return rss_bytes(pid)


def measure(server_bin, dim, questions, runs, batch_size):
    state = tempfile.mkdtemp(prefix="dots-capacity-")
    process, address = tiny_grpo.start_server(server_bin, state, ())
    try:
        with dots_client.Client(address, timeout=600.0) as client:
            base = settle(process.pid)
            # Empty runs: the fixed cost of a run.
            for i in range(runs):
                client.create_run(f"empty-{i}", {"batch_size": batch_size})
            per_run = (settle(process.pid) - base) / runs
            client.create_run("pool", {"batch_size": batch_size})
            rng = np.random.default_rng(dim)
            chunk = 5000
            for start in range(0, questions, chunk):
                n = min(chunk, questions - start)
                qs = [{"key": f"q{start + i}", "prompt": f"question {start + i} " + "x" * 150}
                      for i in range(n)]
                emb = rng.standard_normal((n, dim)).astype(np.float32)
                client.upsert_questions("pool", qs, emb)
            before_plan = settle(process.pid)
            client.next_batch("pool", 0, policy_version=0)  # plans round 0: projections, scores
            after = settle(process.pid)
            per_question = (after - base - per_run * runs) / questions
            return {
                "dim": dim,
                "questions": questions,
                "bytes_per_question": round(per_question),
                "embedding_bytes_per_question": 4 * dim,
                "bytes_per_empty_run": round(per_run),
                "planning_bytes": after - before_plan,
                "rss_bytes": after,
            }
    finally:
        tiny_grpo.stop_server(process)
        shutil.rmtree(state, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-bin", required=True, help="path of dots-server")
    parser.add_argument("--questions", type=int, default=20000, help="pool size per dimension")
    parser.add_argument("--dims", default="256,768,1536", help="embedding dimensions")
    parser.add_argument("--runs", type=int, default=20, help="empty runs to price a run")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = []
    for dim in [int(d) for d in args.dims.split(",")]:
        print(f"capacity: {args.questions} questions x {dim} dims ...", file=sys.stderr)
        results.append(measure(args.server_bin, dim, args.questions, args.runs, args.batch_size))
    if args.json:
        print(json.dumps({"results": results}))
        return
    print("| dims | bytes per question | of which the float32 embedding | bytes per empty run |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['dim']} | {r['bytes_per_question']:,} | {r['embedding_bytes_per_question']:,}"
              f" | {r['bytes_per_empty_run']:,} |")


if __name__ == "__main__":
    main()
