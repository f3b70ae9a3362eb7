#!/usr/bin/python3
"""tools/convert_adapter.py: a released-architecture checkpoint predicts the same in dots.

The released FewShotRegressor (docs/paper.md §2.2; `build_projection`, `RegressionHead`,
`ResidualHead` of `adaptive_difficulty_prediction/model.py`) is rebuilt in PyTorch with random
weights (LayerNorm weights and biases perturbed away from 1 and 0), saved with torch.save as a
bare state_dict and as the released train.py's checkpoint dict ({"model_state_dict", "config",
"train_metrics"}), and converted. Then:
  - adapter_forward_tool (the C++ inference path) on the converted file gives the same
    calibrated predictions as the PyTorch model in eval mode, for the released dimensions
    (D 1536, h 896, 3 layers, group_logit_temp) and for 1-layer platt / temperature / plain
    models, within |dots - torch| <= 1e-5 |torch| + 1e-7 (float32 against float64);
  - `dotsctl estimate --mode paper` on the converted file equals PyTorch's predictions followed
    by the released post-hoc OLS y = a x + b on the references, within 1e-5 relative plus
    1e-6 (1 + |a|) (OLS scales rounding by |a| and cancels where a x is close to -b);
  - files of another architecture are refused, naming the offending or missing key, and write
    nothing: an unrelated network, a reference projection with fewer layers, a mis-shaped
    Linear, an extra key, a checkpoint dict without a state_dict, pickled code.

Usage: convert_adapter_test.py --converter tools/convert_adapter.py --tool adapter_forward_tool
       --dotsctl dotsctl
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adapter_grad_test import build_projection  # noqa: E402
from adapter_reference_test import random_embeddings  # noqa: E402

RTOL = 1e-5
ATOL = 1e-7


class ResidualHead(nn.Module):
    """The released ResidualHead (its sim_head is a RegressionHead) in eval mode."""

    def __init__(self, d, h, layers, scaling):
        super().__init__()
        self.sim_head = nn.Module()
        self.sim_head.query_proj, _ = build_projection(d, h, layers, 0.1)
        self.sim_head.ref_proj, _ = build_projection(d, h, layers, 0.1)
        self.scaling = scaling
        if scaling == "platt":
            self.res_scale = nn.Parameter(torch.ones(1))
            self.scale = nn.Parameter(torch.ones(1))
        elif scaling == "temperature":
            self.scale = nn.Parameter(torch.ones(1))
        elif scaling == "group_logit_temp":
            self.mlp = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 2))

    def forward(self, q, r, ref_vals, tau):
        qp, rp = self.sim_head.query_proj(q), self.sim_head.ref_proj(r)
        scores = qp @ rp.T / rp.size(-1) ** 0.5
        w = scores / tau
        w = F.softmax(w - w.max(dim=-1, keepdim=True).values, dim=-1)
        base = (w * ref_vals).sum(dim=-1)
        logit = torch.logit(base.clamp(1e-4, 1 - 1e-4))
        if self.scaling == "platt":
            return torch.sigmoid(self.scale * logit + self.res_scale)
        if self.scaling == "temperature":
            return torch.sigmoid(logit / self.scale)
        if self.scaling == "group_logit_temp":
            stats = torch.stack([ref_vals.mean(), ref_vals.std()])
            m = self.mlp(stats)
            return torch.sigmoid(logit / F.softplus(m[0]).clamp(1e-2, 10) + torch.tanh(m[1]))
        return base


class FewShotRegressor(nn.Module):
    def __init__(self, d, h, layers, scaling):
        super().__init__()
        self.regressor = ResidualHead(d, h, layers, scaling)


def random_model(d, h, layers, scaling, seed):
    torch.manual_seed(seed)
    model = FewShotRegressor(d, h, layers, scaling)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith(".weight"):  # LayerNorm gains
                p.add_(0.2 * torch.randn_like(p))
            elif p.dim() == 1 and ("proj.0." in name or f"proj.{3 * layers - 1}." in name):
                p.add_(0.1 * torch.randn_like(p))  # LayerNorm biases
            elif name.endswith("scale"):
                p.copy_(0.5 + torch.rand_like(p))
    return model


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def convert(converter, src, dst, *extra):
    return run([sys.executable, converter, "--in", src, "--out", dst, *extra])


def torch_predictions(model, emb, refs, labels, tau):
    m = model.double().eval()
    with torch.no_grad():
        x = torch.tensor(emb, dtype=torch.float64)
        return m.regressor(x, x[refs], torch.tensor(labels, dtype=torch.float64), tau).numpy()


def compare(what, got, want, atol=ATOL):
    err = np.abs(np.asarray(got, np.float64) - want)
    bound = RTOL * np.abs(want) + atol
    worst = int(np.argmax(err / bound))
    rel = float(np.max(err / np.maximum(np.abs(want), 1e-12)))
    ok = bool(err[worst] <= bound[worst])
    return ok, (f"{what}: max relative error {rel:.2e}, max |err| {float(err.max()):.2e}, "
                f"worst err/tol {float(err[worst] / bound[worst]):.3f}")


def prediction_case(args, workdir, name, d, h, layers, scaling, seed, as_checkpoint):
    rng = np.random.default_rng(seed)
    n, k, tau = 300, 48, 0.5
    model = random_model(d, h, layers, scaling, seed)
    pt = os.path.join(workdir, "model.pt")
    if as_checkpoint:
        torch.save({"model_state_dict": model.state_dict(),
                    "config": {"model_name": "Qwen/Qwen2.5-Math-1.5B-Instruct",
                               "num_layers": layers, "hidden_size": h, "scaling": scaling,
                               "tau": tau},
                    "train_metrics": {"epoch_losses": [0.6, 0.5]}}, pt)
        extra = []
    else:
        torch.save(model.state_dict(), pt)
        extra = ["--tau", repr(tau)]
    out = os.path.join(workdir, "a.safetensors")
    proc = convert(args.converter, pt, out, *extra)
    if proc.returncode != 0:
        return False, [f"conversion failed: {proc.stderr.strip()}"]
    emb = random_embeddings(rng, n, d)
    refs = rng.choice(n, size=k, replace=False)
    labels = rng.integers(0, 9, size=k) / 8
    np.save(os.path.join(workdir, "e.npy"), emb)
    with open(os.path.join(workdir, "refs.txt"), "w") as f:
        for j, y in zip(refs, labels):
            f.write(f"{int(j)} {float(y)!r}\n")
    tool = run([args.tool, "--adapter", out, "--embeddings", os.path.join(workdir, "e.npy"),
                "--refs", os.path.join(workdir, "refs.txt"), "--out-dir", workdir])
    if tool.returncode != 0:
        return False, [f"adapter_forward_tool failed: {tool.stderr.strip()}"]
    info = json.loads(tool.stdout)
    want = torch_predictions(model, emb, refs, labels, tau)
    got = np.load(os.path.join(workdir, "calibrated.npy")).reshape(-1)
    ok, msg = compare("calibrated predictions", got, want)
    notes = [proc.stderr.strip(), msg, f"tool read: {info}"]
    if info["tau"] != tau or info["layers"] != layers or info["head"] != scaling:
        ok, notes = False, notes + ["metadata did not survive the conversion"]
    if not args.dotsctl or scaling != "group_logit_temp":
        return ok, notes

    # End to end: dotsctl estimate --mode paper against PyTorch + the released OLS.
    keys = [f"q{i}" for i in range(n)]
    with open(os.path.join(workdir, "q.jsonl"), "w") as f:
        for key in keys:
            f.write(json.dumps({"key": key, "prompt": ""}) + "\n")
    with open(os.path.join(workdir, "l.jsonl"), "w") as f:
        for j, y in zip(refs, labels):
            f.write(json.dumps({"key": keys[j], "rate": float(y)}) + "\n")
    est = run([args.dotsctl, "estimate", "--questions", os.path.join(workdir, "q.jsonl"),
               "--embeddings", os.path.join(workdir, "e.npy"), "--labels",
               os.path.join(workdir, "l.jsonl"), "--adapter", out, "--mode", "paper"])
    if est.returncode != 0:
        return False, notes + [f"dotsctl estimate failed: {est.stderr.strip()}"]
    got = np.array([json.loads(line)["p_hat"] for line in est.stdout.splitlines()])
    x = want[refs]
    a = float(np.sum((x - x.mean()) * (labels - labels.mean())) / np.sum((x - x.mean()) ** 2))
    b = float(labels.mean() - a * x.mean())
    # OLS multiplies float32 rounding by |a| and cancels near a * x = -b: an absolute floor.
    e_ok, e_msg = compare("dotsctl estimate --mode paper", got, a * want + b, 1e-6 * (1 + abs(a)))
    return ok and e_ok, notes + [e_msg + f" (OLS a={a:.3f}, b={b:.3f})"]


def refusal_cases(args, workdir):
    """(name, object to torch.save, substring the error must contain)."""
    good = random_model(16, 8, 3, "group_logit_temp", 7).state_dict()
    fewer = dict(good)
    for key in list(fewer):  # the reference projection with 1 layer instead of 3
        if key.startswith("regressor.sim_head.ref_proj."):
            del fewer[key]
    small = random_model(16, 8, 1, "group_logit_temp", 7).state_dict()
    for key, value in small.items():
        if key.startswith("regressor.sim_head.ref_proj."):
            fewer[key] = value
    misshaped = dict(good)
    misshaped["regressor.sim_head.ref_proj.4.weight"] = torch.zeros(8, 9)
    extra = dict(good)
    extra["regressor.extra.weight"] = torch.zeros(3)
    unrelated = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)).state_dict()
    nan = dict(good)
    nan["regressor.mlp.2.bias"] = torch.tensor([float("nan"), 0.0])
    return [
        ("an unrelated network", unrelated,
         "missing key 'regressor.sim_head.query_proj.0.weight'"),
        ("a 1-layer reference projection beside a 3-layer query projection", fewer,
         "missing key 'regressor.sim_head.ref_proj.4.weight'"),
        ("a mis-shaped Linear", misshaped,
         "key 'regressor.sim_head.ref_proj.4.weight': shape [8, 9], expected [8, 8]"),
        ("an extra key", extra, "unexpected key 'regressor.extra.weight'"),
        ("a checkpoint dict without a state_dict", {"config": {"x": 1}, "weights": [1, 2]},
         "no state_dict found"),
        ("a NaN weight", nan, "key 'regressor.mlp.2.bias': holds NaN"),
    ]


class Code:
    """Pickled code: unpickling it would create the file MARKER."""

    MARKER = ""

    def __reduce__(self):
        return (open, (Code.MARKER, "w"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--converter", required=True)
    parser.add_argument("--tool", required=True, help="path to adapter_forward_tool")
    parser.add_argument("--dotsctl", help="path to dotsctl (end-to-end paper-mode check)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    passed = failed = 0

    def report(ok, name, notes):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}")
        for note in notes:
            print(f"     {note}")

    with tempfile.TemporaryDirectory() as workdir:
        cases = [("released dimensions, checkpoint dict", 1536, 896, 3, "group_logit_temp", True),
                 ("bare state_dict, 3 layers", 64, 32, 3, "group_logit_temp", False),
                 ("1 layer, platt", 48, 24, 1, "platt", False),
                 ("2 layers, temperature", 48, 24, 2, "temperature", True),
                 ("1 layer, plain", 48, 24, 1, "plain", False)]
        for seed, (name, d, h, layers, scaling, as_checkpoint) in enumerate(cases, start=1):
            ok, notes = prediction_case(args, workdir, name, d, h, layers, scaling, seed,
                                        as_checkpoint)
            report(ok, name, notes)

        for name, obj, want in refusal_cases(args, workdir):
            pt, out = os.path.join(workdir, "bad.pt"), os.path.join(workdir, "bad.safetensors")
            torch.save(obj, pt)
            proc = convert(args.converter, pt, out)
            ok = proc.returncode == 1 and want in proc.stderr and not os.path.exists(out)
            report(ok, f"refuses {name}", [proc.stderr.strip()])

        pt = os.path.join(workdir, "code.pt")
        Code.MARKER = os.path.join(workdir, "code-ran")
        torch.save({"model_state_dict": random_model(16, 8, 1, "plain", 3).state_dict(),
                    "config": Code()}, pt)
        proc = convert(args.converter, pt, os.path.join(workdir, "code.safetensors"))
        ran = os.path.exists(Code.MARKER)
        report(proc.returncode == 1 and "is not allowed" in proc.stderr and not ran,
               "refuses pickled code without --unsafe-load (and does not run it)",
               [proc.stderr.strip(), f"code ran: {ran}"])
    print(f"convert_adapter: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
