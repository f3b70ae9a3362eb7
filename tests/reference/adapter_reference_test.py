#!/usr/bin/python3
"""Checks the C++ adapter and scorer against an independent numpy (float64) reference.

For every calibration head x {1, 3} projection layers x top-k {off, on} (16 cases), plus an
Identity-adapter case and a leave-one-out case, this script writes random adapter weights with
PyTorch-like scales to a .safetensors file (format written by hand: u64 header length, JSON
header, raw little-endian float32), random embedding-like inputs to an .npy file and a reference
set, runs `adapter_forward_tool`, and compares its query projections, reference projections,
attention averages (base) and calibrated outputs with the reference computation below.

Tolerance (per element): |cpp - ref| <= RTOL * |ref| + ATOL * scale, with RTOL = 1e-5,
ATOL = 1e-5, and scale = the RMS of the reference array (so for O(1) outputs such as
LayerNorm'd projections or rates, tiny elements get an absolute floor of ~1e-5 times the typical
magnitude, where float32 rounding of an O(1) computation is ~1e-7..1e-6).

With --dotsctl, also runs `dotsctl estimate ... --mode paper` end to end and checks every p_hat
against the paper's released code path computed here (attention over the labelled reference set,
references attending to themselves, the calibration head, then OLS y ~ a*x + b fitted on the
references' own calibrated predictions and applied to all questions without clipping). There the
absolute floor is ATOL * (1 + |a|), since OLS scales rounding errors by |a|; the data is chosen
so that a leave-one-out or a clipped implementation would fail.

Usage: adapter_reference_test.py --tool PATH [--dotsctl PATH] [--keep DIR]
Prints one line per case and a summary "adapter reference: P passed, F failed"; exits 1 on any
failure. Needs only numpy (run with /usr/bin/python3).
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

RTOL = 1e-5
ATOL = 1e-5
LN_EPS = 1e-5
LOGIT_CLAMP = 1e-4
# Rows whose k-th and (k+1)-th best scores differ by less than this (in units of the scaled
# score) are skipped in the top-k comparison: float32 and float64 may legitimately pick a
# different k-th reference there.
TOPK_TIE_GAP = 1e-4

QUERY = "regressor.sim_head.query_proj."
REF = "regressor.sim_head.ref_proj."
HEADS = ("group_logit_temp", "platt", "temperature", "plain")


# ---------------------------------------------------------------- file formats

def write_safetensors(path, tensors, metadata):
    """safetensors: u64 LE header size, JSON header (padded to 8 bytes), then the data."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# ---------------------------------------------------------------- random inputs

def random_adapter(rng, d, h, layers, head):
    t = {}

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    for prefix in (QUERY, REF):
        t[prefix + "0.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
        t[prefix + "0.bias"] = (0.05 * rng.standard_normal(d)).astype(np.float32)
        for i in range(layers):
            fan_in = d if i == 0 else h
            t[f"{prefix}{1 + 3 * i}.weight"] = uniform((h, fan_in), 1 / math.sqrt(fan_in))
            t[f"{prefix}{1 + 3 * i}.bias"] = uniform((h,), 1 / math.sqrt(fan_in))
        last = 3 * layers - 1
        t[f"{prefix}{last}.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        t[f"{prefix}{last}.bias"] = (0.05 * rng.standard_normal(h)).astype(np.float32)
    if head == "group_logit_temp":  # PyTorch default init of Linear(2,10) and Linear(10,2)
        t["regressor.mlp.0.weight"] = uniform((10, 2), 1 / math.sqrt(2))
        t["regressor.mlp.0.bias"] = uniform((10,), 1 / math.sqrt(2))
        t["regressor.mlp.2.weight"] = uniform((2, 10), 1 / math.sqrt(10))
        t["regressor.mlp.2.bias"] = uniform((2,), 1 / math.sqrt(10))
    elif head == "platt":
        t["regressor.scale"] = rng.uniform(0.5, 2.0, size=(1,)).astype(np.float32)
        t["regressor.res_scale"] = rng.uniform(-1.0, 1.0, size=(1,)).astype(np.float32)
    elif head == "temperature":
        t["regressor.scale"] = rng.uniform(0.5, 2.0, size=(1,)).astype(np.float32)
    return t


def random_embeddings(rng, n, d):
    """Mean-pooled-LLM-like rows: a shared offset, topical clusters, noise, outlier dims."""
    offset = rng.standard_normal(d)
    centers = rng.standard_normal((12, d)) * 0.6
    rows = offset + centers[rng.integers(0, 12, size=n)] + 0.3 * rng.standard_normal((n, d))
    for dim in (3, d // 2, d - 5):  # "massive activation" dimensions
        rows[:, dim] *= 40
    return rows.astype(np.float32)


# ---------------------------------------------------------------- float64 reference

_erf = np.vectorize(math.erf, otypes=[np.float64])


def layer_norm(x, g, b):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as PyTorch
    return (x - mean) / np.sqrt(var + LN_EPS) * g + b


def project(t, prefix, layers, x):
    f = lambda name: t[prefix + name].astype(np.float64)
    a = layer_norm(x.astype(np.float64), f("0.weight"), f("0.bias"))
    for i in range(layers):
        a = a @ f(f"{1 + 3 * i}.weight").T + f(f"{1 + 3 * i}.bias")
        if i + 1 < layers:
            a = 0.5 * a * (1 + _erf(a / math.sqrt(2)))  # exact GELU
    last = 3 * layers - 1
    return layer_norm(a, f(f"{last}.weight"), f(f"{last}.bias"))


def l2_normalize(x):
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1), 0)


def attention(q, r, labels, score_scale, tau, top_k, exclude=None):
    """base per query; also a mask of rows whose top-k boundary is a near tie."""
    scores = (q @ r.T) * score_scale
    if exclude is not None:  # leave-one-out: exclude[i] = reference position of query i or -1
        rows = np.nonzero(exclude >= 0)[0]
        scores[rows, exclude[rows]] = -np.inf
    ambiguous = np.zeros(len(q), dtype=bool)
    if top_k and top_k < scores.shape[1]:
        order = np.sort(scores, axis=1)[:, ::-1]
        kth, next_ = order[:, top_k - 1], order[:, top_k]
        ambiguous = np.isfinite(next_) & (kth - next_ < TOPK_TIE_GAP)
        scores = np.where(scores >= kth[:, None], scores, -np.inf)
    w = scores / tau
    w = np.exp(w - w.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return w @ labels.astype(np.float64), ambiguous


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def calibrate(t, head, base, labels):
    if head == "plain":
        return base.copy()
    b = np.clip(base, LOGIT_CLAMP, 1 - LOGIT_CLAMP)
    logit = np.log(b / (1 - b))
    if head == "platt":
        return sigmoid(float(t["regressor.scale"][0]) * logit + float(t["regressor.res_scale"][0]))
    if head == "temperature":
        return sigmoid(logit / float(t["regressor.scale"][0]))
    y = labels.astype(np.float64)
    stats = np.array([y.mean(), y.std(ddof=1) if len(y) > 1 else 0.0])  # torch.std: unbiased
    g = lambda name: t[name].astype(np.float64)
    hidden = np.maximum(g("regressor.mlp.0.weight") @ stats + g("regressor.mlp.0.bias"), 0)
    m0, m1 = g("regressor.mlp.2.weight") @ hidden + g("regressor.mlp.2.bias")
    temp = min(max(softplus(m0), 0.01), 10.0)
    return sigmoid(logit / temp + math.tanh(m1))


# ---------------------------------------------------------------- comparison

def compare(what, got, want, skip_rows=None):
    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    scale = math.sqrt(float(np.mean(want ** 2))) or 1.0
    bound = RTOL * np.abs(want) + ATOL * scale
    err = np.abs(got - want)
    if skip_rows is not None:
        err = err.copy()
        err[skip_rows] = 0
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    ratio = float(err[worst] / bound[worst])
    msg = (f"{what}: max |err| {float(err.max()):.2e}, worst err/tol {ratio:.3f} at "
           f"{tuple(int(i) for i in worst)} (got {float(got[worst]):.9g}, want "
           f"{float(want[worst]):.9g})")
    return ratio <= 1.0, msg


# ---------------------------------------------------------------- cases

def run_case(tool, workdir, case, seed, verbose):
    rng = np.random.default_rng(seed)
    name = case["name"]
    d, h, n, k = case.get("d", 1536), case.get("h", 896), case.get("n", 257), case.get("k", 64)
    layers, head = case.get("layers", 3), case.get("head", "plain")
    tau, top_k = case.get("tau", 1.0), case.get("top_k", 0)
    embeddings = random_embeddings(rng, n, d)
    refs = rng.choice(n, size=k, replace=False)
    labels = (rng.integers(0, 9, size=k) / 8).astype(np.float32)  # G = 8 success rates

    emb_path = os.path.join(workdir, "e.npy")
    refs_path = os.path.join(workdir, "refs.txt")
    np.save(emb_path, embeddings)
    with open(refs_path, "w") as f:
        for j, y in zip(refs, labels):
            f.write(f"{int(j)} {float(y)!r}\n")
    cmd = [tool, "--embeddings", emb_path, "--refs", refs_path, "--out-dir", workdir]
    if case.get("identity"):
        cmd += ["--identity", "--tau", repr(tau), "--top-k", str(top_k)]
        t = None
        q, r = l2_normalize(embeddings), l2_normalize(embeddings[refs])
        score_scale = 1.0
    else:
        t = random_adapter(rng, d, h, layers, head)
        metadata = {"num_layers": layers, "hidden_size": h, "scaling": head, "tau": repr(tau),
                    "label": "success_rate",
                    "embedding_model": "Qwen/Qwen2.5-Math-1.5B-Instruct"}
        if top_k:
            metadata["top_k"] = top_k
        elif seed % 2:
            metadata["top_k"] = "None"  # what the paper's config writes for "off"
        adapter_path = os.path.join(workdir, "a.safetensors")
        write_safetensors(adapter_path, t, metadata)
        cmd += ["--adapter", adapter_path]
        q = project(t, QUERY, layers, embeddings)
        r = project(t, REF, layers, embeddings[refs])
        score_scale = 1 / math.sqrt(h)
    exclude = None
    if case.get("leave_one_out"):
        cmd.append("--leave-one-out")
        exclude = np.full(n, -1)
        exclude[refs] = np.arange(k)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return False, [f"cannot run adapter_forward_tool: {e}"]
    if proc.returncode != 0:
        return False, [f"adapter_forward_tool failed ({proc.returncode}): {proc.stderr.strip()}"]

    base, ambiguous = attention(q, r, labels, score_scale, tau, top_k, exclude)
    calibrated = base if t is None else calibrate(t, head, base, labels)
    load = lambda f: np.load(os.path.join(workdir, f))
    results = [compare("query_proj", load("query_proj.npy"), q),
               compare("ref_proj", load("ref_proj.npy"), r),
               compare("base", load("base.npy"), base, ambiguous),
               compare("calibrated", load("calibrated.npy"), calibrated, ambiguous)]
    notes = [m for ok, m in results if verbose or not ok]
    if ambiguous.any():
        notes.append(f"{int(ambiguous.sum())} rows skipped (top-k boundary tie < {TOPK_TIE_GAP})")
    return all(ok for ok, _ in results), notes


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def paper_mode_data(top_k, seed):
    """Random inputs for the end-to-end check and the released code path's p_hat on them."""
    rng = np.random.default_rng(seed)
    d, h, layers, n, k, tau = 64, 32, 3, 300, 48, 0.2
    head = "group_logit_temp"
    data = {"t": random_adapter(rng, d, h, layers, head),
            "metadata": {"num_layers": layers, "hidden_size": h, "scaling": head,
                         "tau": repr(tau), "top_k": top_k if top_k else "None",
                         "label": "success_rate"},
            "embeddings": random_embeddings(rng, n, d),
            "refs": rng.choice(n, size=k, replace=False),
            "labels": (rng.integers(0, 9, size=k) / 8).astype(np.float64)}
    t, refs, labels = data["t"], data["refs"], data["labels"]
    q = project(t, QUERY, layers, data["embeddings"])
    r = project(t, REF, layers, data["embeddings"][refs])

    def paper_path(exclude):
        base, ambiguous = attention(q, r, labels, 1 / math.sqrt(h), tau, top_k, exclude)
        cal = calibrate(t, head, base, labels)
        x = cal[refs]
        if np.var(x) == 0:  # sklearn LinearRegression on constant x: slope 0, intercept mean(y)
            a, b = 0.0, float(labels.mean())
        else:
            a = float(np.sum((x - x.mean()) * (labels - labels.mean())) /
                      np.sum((x - x.mean()) ** 2))
            b = float(labels.mean() - a * x.mean())
        return a * cal + b, a, b, ambiguous

    # The released code path: every question, references included and attending to themselves.
    data["want"], data["a"], data["b"], data["ambiguous"] = paper_path(None)
    # How far plausible deviations from it would land, to show the data tells them apart.
    exclude = np.full(n, -1)
    exclude[refs] = np.arange(k)
    data["deviations"] = {
        "leave-one-out": float(np.abs(paper_path(exclude)[0] - data["want"]).max()),
        "clipped": float(np.abs(np.clip(data["want"], 0, 1) - data["want"]).max())}
    return data


def run_dotsctl_case(dotsctl, workdir, top_k, first_seed):
    """`dotsctl estimate --mode paper` against the released code path, end to end."""
    # Take the first seed whose unclipped OLS output leaves [0, 1] (so clipping would show) and
    # whose reference rows have no top-k tie.
    for seed in range(first_seed, first_seed + 50):
        data = paper_mode_data(top_k, seed)
        if data["deviations"]["clipped"] > 1e-3 and not data["ambiguous"][data["refs"]].any():
            break
    refs, labels, want, a = data["refs"], data["labels"], data["want"], data["a"]
    n = len(want)
    paths = {name: os.path.join(workdir, name) for name in
             ("q.jsonl", "e.npy", "l.jsonl", "a.safetensors")}
    keys = [f"question-{i:04d}" for i in range(n)]
    write_jsonl(paths["q.jsonl"], [{"key": key, "prompt": f"Problem {i}: compute {i} + 1."}
                                   for i, key in enumerate(keys)])
    np.save(paths["e.npy"], data["embeddings"])
    write_jsonl(paths["l.jsonl"], [{"key": keys[j], "success_rate": float(y)}
                                   for j, y in zip(refs, labels)])
    write_safetensors(paths["a.safetensors"], data["t"], data["metadata"])
    cmd = [dotsctl, "estimate", "--questions", paths["q.jsonl"], "--embeddings", paths["e.npy"],
           "--labels", paths["l.jsonl"], "--adapter", paths["a.safetensors"], "--mode", "paper"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        return False, [f"cannot run dotsctl: {e}"]
    if proc.returncode != 0:
        return False, [f"dotsctl estimate failed ({proc.returncode}): {proc.stderr.strip()}"]
    try:
        out = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        got_keys = [row["key"] for row in out]
        got = np.array([row["p_hat"] for row in out], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as e:
        return False, [f"cannot parse dotsctl output: {e}: {proc.stdout[:200]!r}"]
    if got_keys != keys:
        return False, [f"dotsctl printed {len(got_keys)} keys, not the {n} pool keys in order"]

    # OLS multiplies the calibrated outputs' rounding errors by |a|, so the absolute floor
    # scales with it.
    err = np.abs(got - want)
    err[data["ambiguous"]] = 0
    bound = RTOL * np.abs(want) + ATOL * (1 + abs(a))
    worst = int(np.argmax(err / bound))
    ok = bool(err[worst] <= bound[worst])
    return ok, [f"seed {seed}: OLS a={a:.4f} b={data['b']:.4f}, p_hat in "
                f"[{want.min():.3f}, {want.max():.3f}], max |err| {float(err.max()):.2e}, "
                f"worst err/tol {float(err[worst] / bound[worst]):.3f} at {worst}",
                "a leave-one-out or clipped variant would differ by up to " +
                ", ".join(f"{v:.2e} ({name})" for name, v in data["deviations"].items())]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tool", required=True, help="path to adapter_forward_tool")
    parser.add_argument("--dotsctl", help="path to dotsctl (enables the end-to-end paper check)")
    parser.add_argument("--keep", help="write files here instead of a temporary directory")
    parser.add_argument("--verbose", action="store_true", help="print every comparison")
    args = parser.parse_args()

    cases = []
    for head in HEADS:
        for layers in (1, 3):
            for top_k in (0, 8):
                cases.append({"name": f"{head}/{layers}-layer/top_k={top_k}", "head": head,
                              "layers": layers, "top_k": top_k,
                              "tau": 1.0 if layers == 3 else 0.5})
    cases.append({"name": "identity/top_k=0", "identity": True, "tau": 0.05, "d": 384})
    cases.append({"name": "identity/top_k=5", "identity": True, "tau": 0.05, "top_k": 5,
                  "d": 384})
    cases.append({"name": "group_logit_temp/3-layer/leave-one-out", "head": "group_logit_temp",
                  "layers": 3, "leave_one_out": True, "d": 256, "h": 128})

    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or tmp
        os.makedirs(workdir, exist_ok=True)
        for seed, case in enumerate(cases, start=1):
            ok, notes = run_case(args.tool, workdir, case, seed, args.verbose)
            passed, failed = passed + ok, failed + (not ok)
            print(f"{'PASS' if ok else 'FAIL'} {case['name']}")
            for note in notes:
                print(f"     {note}")
        if args.dotsctl:
            for top_k in (0, 8):
                ok, notes = run_dotsctl_case(args.dotsctl, workdir, top_k, 1000 + top_k)
                passed, failed = passed + ok, failed + (not ok)
                print(f"{'PASS' if ok else 'FAIL'} dotsctl estimate --mode paper (top_k={top_k})")
                for note in notes:
                    print(f"     {note}")
    print(f"adapter reference: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
