#!/usr/bin/python3
"""Checks the C++ adapter backward pass against PyTorch autograd (Debian's python3-torch).

The released architecture is rebuilt here in PyTorch from its description (docs/paper.md §2.2:
`build_projection`, `RegressionHead`, `ResidualHead` with the group_logit_temp head of
`adaptive_difficulty_prediction/model.py`), in float64. For each case the script writes random
weights (.safetensors), embeddings (.npy) and a training batch (JSON: queries with soft targets
and weights, reference sets, and contexts = one source's labels over a reference set), runs
`adapter_grad_tool` (the C++ forward + backward, core/estimation/adapter_model.h), runs the same
batch through the PyTorch model, and compares the loss and the gradient of EVERY parameter
(both projections' LayerNorms and Linears, the head MLP).

Tolerance: for the loss and each parameter tensor, ||g_cpp - g_torch|| <= 1e-4 ||g_torch|| and
every element |g_cpp - g_torch| <= 1e-4 max|g_torch|; a tensor whose true gradient is exactly
zero (a clamp is active) must come out as zero up to 1e-12.

Cases: three layers with a query among its own references (excluded from its attention), two
sources sharing a reference set and a third set, unequal weights including 0; the same with
dropout 0.1, whose masks the tool writes and PyTorch replays; one layer with top-k and tau 0.5
without self-exclusion; the clamps (labels all 0 so base hits 1e-4, targets 0 and 1, a head
whose softplus output is past the 10 clamp); a larger case (D 256, h 128, B 64, K 64) that runs
the blocked GEMM paths; and six Adam updates with the warm-up/decay schedule, compared with
torch.optim.Adam + LambdaLR on the final parameters.

Usage: adapter_grad_test.py --tool PATH [--keep DIR]. Exits 1 on any failure.
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adapter_reference_test import random_embeddings, write_safetensors  # noqa: E402

RTOL = 1e-4
ZERO = 1e-12
QUERY = "regressor.sim_head.query_proj."
REF = "regressor.sim_head.ref_proj."


# ---------------------------------------------------------------- the released architecture

class ReplayDropout(nn.Module):
    """nn.Dropout with a given keep mask (so both sides drop the same elements)."""

    def __init__(self, p):
        super().__init__()
        self.p = p
        self.mask = None

    def forward(self, x):
        return x if self.mask is None else x * self.mask / (1 - self.p)


def build_projection(d, h, layers, p):
    mods, drops = [nn.LayerNorm(d)], []
    for i in range(layers):
        mods.append(nn.Linear(d if i == 0 else h, h))
        if layers > 1 and i < layers - 1:
            mods.append(nn.GELU())
            drops.append(ReplayDropout(p))
            mods.append(drops[-1])
    mods.append(nn.LayerNorm(h))
    return nn.Sequential(*mods), drops


class SimHead(nn.Module):
    def __init__(self, d, h, layers, p):
        super().__init__()
        self.query_proj, self.query_drops = build_projection(d, h, layers, p)
        self.ref_proj, self.ref_drops = build_projection(d, h, layers, p)


class Regressor(nn.Module):
    def __init__(self, d, h, layers, width, p):
        super().__init__()
        self.sim_head = SimHead(d, h, layers, p)
        self.mlp = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 2))


class FewShotRegressor(nn.Module):
    def __init__(self, d, h, layers, width=10, p=0.1):
        super().__init__()
        self.regressor = Regressor(d, h, layers, width, p)
        self.h = h

    def loss(self, emb, batch, tau, top_k, exclude_self):
        sim = self.regressor.sim_head
        rows = torch.tensor(batch["query_rows"])
        q = sim.query_proj(emb[rows])
        ref_rows = [r for s in batch["ref_sets"] for r in s]
        r = sim.ref_proj(emb[torch.tensor(ref_rows)])
        offsets = np.cumsum([0] + [len(s) for s in batch["ref_sets"]])
        preds = []
        for i, row in enumerate(batch["query_rows"]):
            ctx = batch["contexts"][batch["query_context"][i]]
            s = ctx["ref_set"]
            refs = r[offsets[s]:offsets[s + 1]]
            y = torch.tensor(ctx["labels"])
            scores = refs @ q[i] / self.h ** 0.5          # RegressionHead.forward
            if exclude_self:
                own = torch.tensor([x == row for x in batch["ref_sets"][s]])
                scores = scores.masked_fill(own, float("-inf"))
            if top_k and top_k < scores.size(0):
                vals, idx = torch.topk(scores, top_k)
                scores = scores.new_full(scores.shape, float("-inf")).scatter(0, idx, vals)
            w = scores / tau
            w = F.softmax(w - w.max(), dim=-1)
            base = (w * y).sum()
            stats = torch.stack([y.mean(), y.std()])      # torch.std: unbiased
            m = self.regressor.mlp(stats)                  # ResidualHead, group_logit_temp
            temp, bias = F.softplus(m[0]), torch.tanh(m[1])
            preds.append(torch.sigmoid(torch.logit(base.clamp(1e-4, 1 - 1e-4)) /
                                       temp.clamp(1e-2, 10) + bias))
        p = torch.stack(preds)
        weights = torch.tensor(batch["weights"])
        return F.binary_cross_entropy(p, torch.tensor(batch["targets"]), weight=weights,
                                      reduction="sum") / weights.sum()


# ---------------------------------------------------------------- files

def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end], dtype="<f4").reshape(
            info["shape"]).astype(np.float64)
    return out


def random_weights(rng, d, h, layers, width):
    t = {}
    for prefix in (QUERY, REF):
        t[prefix + "0.weight"] = 1 + 0.2 * rng.standard_normal(d)
        t[prefix + "0.bias"] = 0.1 * rng.standard_normal(d)
        for i in range(layers):
            fan_in = d if i == 0 else h
            bound = 1 / math.sqrt(fan_in)
            t[f"{prefix}{1 + 3 * i}.weight"] = rng.uniform(-bound, bound, (h, fan_in))
            t[f"{prefix}{1 + 3 * i}.bias"] = rng.uniform(-bound, bound, h)
        last = 3 * layers - 1
        t[f"{prefix}{last}.weight"] = 1 + 0.2 * rng.standard_normal(h)
        t[f"{prefix}{last}.bias"] = 0.1 * rng.standard_normal(h)
    t["regressor.mlp.0.weight"] = rng.uniform(-0.7, 0.7, (width, 2))
    t["regressor.mlp.0.bias"] = rng.uniform(-0.7, 0.7, width)
    t["regressor.mlp.2.weight"] = rng.uniform(-0.3, 0.3, (2, width))
    t["regressor.mlp.2.bias"] = rng.uniform(-0.3, 0.3, 2)
    return {k: v.astype(np.float32) for k, v in t.items()}


def random_batch(rng, n, queries, set_sizes, contexts, self_refs):
    """Queries over reference sets; `contexts` is a list of ref-set indices (one per source)."""
    sets = [sorted(rng.choice(n, size=k, replace=False).tolist()) for k in set_sizes]
    query_context = rng.integers(0, len(contexts), size=queries).tolist()
    rows = rng.choice(n, size=queries, replace=False).tolist()
    for i in range(self_refs):  # put some queries among their own references
        s = sets[contexts[query_context[i]]]
        if rows[i] not in s:
            rows[i] = s[i % len(s)]
    weights = rng.uniform(0.5, 2.0, size=queries)
    weights[-1] = 0.0
    return {"query_rows": rows,
            "targets": (rng.integers(0, 9, size=queries) / 8).tolist(),
            "weights": weights.tolist(),
            "query_context": query_context,
            "ref_sets": sets,
            "contexts": [{"ref_set": s, "labels": (rng.integers(0, 9, size=len(sets[s])) /
                                                   8).tolist()} for s in contexts]}


# ---------------------------------------------------------------- comparison

def compare(name, got, want, zero_scale=0.0):
    """(ok, message, the larger of the two relative errors).

    A tensor whose true gradient is zero up to rounding (|want| <= 1e-9 zero_scale) is compared
    absolutely: ||got|| <= 1e-6 zero_scale, with zero_scale the norm of the whole gradient.
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if np.linalg.norm(want) <= 1e-9 * zero_scale or not np.any(want):
        size = float(np.linalg.norm(got))
        ok = size <= max(ZERO, 1e-6 * zero_scale)
        return ok, (f"{name}: true gradient is 0 (|torch| {np.linalg.norm(want):.1e}), "
                    f"|C++| {size:.1e} = {size / max(zero_scale, ZERO):.1e} of the whole "
                    "gradient"), 0.0
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    elem = float(np.abs(got - want).max() / np.abs(want).max())
    # Elements an active clamp or ReLU zeroes exactly must be exactly zero here too.
    stray = float(np.abs(got[want == 0]).max()) if np.any(want == 0) else 0.0
    ok = rel <= RTOL and elem <= RTOL and stray <= ZERO
    msg = f"{name}: relative error {rel:.2e} (norm), {elem:.2e} (max element)"
    if np.any(want == 0):
        msg += f", {int(np.sum(want == 0))} exact zeros (C++ max |g| there {stray:.1e})"
    return ok, msg, max(rel, elem)


def run_case(tool, workdir, case, seed):
    rng = np.random.default_rng(seed)
    d, h, layers = case["d"], case["h"], case["layers"]
    n, p = case.get("n", 80), case.get("dropout", 0.0)
    weights = random_weights(rng, d, h, layers, 10)
    weights.update(case.get("override", {}))
    emb = random_embeddings(rng, n, d)
    batch = random_batch(rng, n, case["queries"], case["sets"], case["contexts"],
                         case.get("self_refs", 0))
    if "edit_batch" in case:
        case["edit_batch"](batch)
    paths = {k: os.path.join(workdir, k) for k in ("a.safetensors", "e.npy", "batch.json")}
    write_safetensors(paths["a.safetensors"], weights,
                      {"num_layers": layers, "hidden_size": h, "scaling": "group_logit_temp"})
    np.save(paths["e.npy"], emb)
    with open(paths["batch.json"], "w") as f:
        json.dump(batch, f)
    tau, top_k, exclude = case.get("tau", 1.0), case.get("top_k", 0), case.get("exclude", True)
    cmd = [tool, "--adapter", paths["a.safetensors"], "--embeddings", paths["e.npy"], "--batch",
           paths["batch.json"], "--out-dir", workdir, "--tau", repr(tau), "--top-k", str(top_k)]
    if not exclude:
        cmd.append("--no-exclude-self")
    if p:
        cmd += ["--dropout", repr(p), "--seed", str(seed)]
    adam = case.get("adam")
    if adam:
        cmd += ["--adam-steps", str(adam["steps"]), "--lr", repr(adam["lr"]), "--warmup",
                str(adam["warmup"])]
    for stale in ("grads.safetensors", "params.safetensors", "result.json"):
        if os.path.exists(os.path.join(workdir, stale)):
            os.remove(os.path.join(workdir, stale))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return False, [f"adapter_grad_tool failed ({proc.returncode}): {proc.stderr.strip()}"]

    model = FewShotRegressor(d, h, layers, 10, p).double()
    model.load_state_dict({k: torch.tensor(v, dtype=torch.float64) for k, v in weights.items()})
    model.train()
    sim = model.regressor.sim_head
    if p:
        for which, drops in (("query", sim.query_drops), ("ref", sim.ref_drops)):
            for l, drop in enumerate(drops):
                drop.mask = torch.tensor(np.load(os.path.join(workdir, f"mask_{which}_{l}.npy")),
                                         dtype=torch.float64)
    emb_t = torch.tensor(emb, dtype=torch.float64)
    notes, ok_all = [], True
    loss = model.loss(emb_t, batch, tau, top_k, exclude)
    with open(os.path.join(workdir, "result.json")) as f:
        got_loss = json.load(f)["loss"]
    ok, msg, _ = compare("loss", got_loss, loss.item())
    ok_all &= ok
    notes.append(msg)
    if p:
        kept = np.mean([np.load(os.path.join(workdir, f)).mean() for f in os.listdir(workdir)
                        if f.startswith("mask_")])
        notes.append(f"dropout masks replayed, kept fraction {kept:.3f}")

    if not adam:
        loss.backward()
        got = read_safetensors(os.path.join(workdir, "grads.safetensors"))
        params = dict(model.named_parameters())
        if set(got) != set(params):
            return False, [f"parameter names differ: {sorted(set(got) ^ set(params))}"]
        scale = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params.values()))
        results = [compare(name, got[name], param.grad.numpy(), scale)
                   for name, param in params.items()]
        bad = [msg for ok, msg, _ in results if not ok]
        ok_all &= not bad
        zeros = [msg for _, msg, _ in results
                 if "true gradient is 0" in msg or "exact zeros" in msg]
        notes += bad or [f"all {len(params)} parameter gradients within tolerance"]
        notes.append("worst " + max(results, key=lambda r: r[2])[1])
        notes += zeros
        return ok_all, notes

    # Adam on the same batch, the learning rate following the warm-up / linear decay schedule.
    # A tensor whose gradient is zero in exact arithmetic (the reference projection's output
    # LayerNorm bias: it moves every score of a query by the same constant, which softmax
    # ignores) gets Adam updates driven by rounding noise on both sides: not compared.
    loss.backward()
    scale = math.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters()))
    noise_only = {name for name, p in model.named_parameters()
                  if float(p.grad.norm()) <= 1e-9 * scale}
    total, warm = adam["steps"], adam["warmup"]
    opt = torch.optim.Adam(model.parameters(), lr=adam["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    for _ in range(total):
        opt.zero_grad()
        model.loss(emb_t, batch, tau, top_k, exclude).backward()
        opt.step()
        sched.step()
    got = read_safetensors(os.path.join(workdir, "params.safetensors"))
    for name, param in model.named_parameters():
        if name in noise_only:
            notes.append(f"{name}: zero gradient in exact arithmetic, update not compared")
            continue
        moved = param.detach().numpy() - weights[name]
        ok, msg, _ = compare(f"{name} (update)", got[name] - weights[name], moved)
        ok_all &= ok
        if not ok:
            notes.append(msg)
    notes.append(f"{total} Adam steps (lr {adam['lr']}, warm-up {warm}): parameter updates "
                 f"{'within' if ok_all else 'NOT within'} tolerance")
    return ok_all, notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tool", required=True, help="path to adapter_grad_tool")
    parser.add_argument("--keep", help="write files here instead of a temporary directory")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)

    def all_zero_labels(batch):
        batch["contexts"][0]["labels"] = [0.0] * len(batch["contexts"][0]["labels"])
        batch["targets"][0], batch["targets"][1] = 0.0, 1.0

    cases = [
        {"name": "3 layers, shared and separate reference sets, self-exclusion", "d": 40,
         "h": 24, "layers": 3, "queries": 20, "sets": [12, 9], "contexts": [0, 0, 1],
         "self_refs": 4},
        {"name": "3 layers with dropout 0.1 (replayed masks)", "d": 40, "h": 24, "layers": 3,
         "queries": 20, "sets": [12, 9], "contexts": [0, 1], "self_refs": 2, "dropout": 0.1},
        {"name": "1 layer, top_k 4, tau 0.5, no self-exclusion", "d": 32, "h": 16,
         "layers": 1, "queries": 16, "sets": [10], "contexts": [0, 0], "top_k": 4,
         "tau": 0.5, "exclude": False},
        {"name": "clamps: base at 1e-4, targets 0 and 1, softplus past 10", "d": 24, "h": 16,
         "layers": 2, "queries": 12, "sets": [8, 8], "contexts": [0, 1],
         "edit_batch": all_zero_labels,
         "override": {"regressor.mlp.2.bias": np.array([30.0, 0.1], dtype=np.float32)}},
        {"name": "larger: D 256, h 128, B 64, K 64, dropout", "d": 256, "h": 128, "layers": 3,
         "n": 200, "queries": 64, "sets": [64], "contexts": [0, 0, 0], "self_refs": 8,
         "dropout": 0.1},
        {"name": "Adam + warm-up/decay schedule, 6 steps", "d": 32, "h": 16, "layers": 3,
         "queries": 16, "sets": [10, 10], "contexts": [0, 1], "self_refs": 2,
         "adam": {"steps": 6, "lr": 1e-2, "warmup": 2}},
    ]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or tmp
        os.makedirs(workdir, exist_ok=True)
        for seed, case in enumerate(cases, start=1):
            ok, notes = run_case(args.tool, workdir, case, seed)
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'PASS' if ok else 'FAIL'} {case['name']}")
            for note in notes:
                print(f"     {note}")
    print(f"adapter gradient check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
