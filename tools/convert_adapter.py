#!/usr/bin/python3
"""Converts the paper's released difficulty predictor (a PyTorch checkpoint) to a dots adapter.

    /usr/bin/python3 tools/convert_adapter.py --in model.pt --out adapter.safetensors \\
        [--top-k K] [--tau T] [--label success_rate|failure_rate] [--embedding-model NAME]

Input: a file written by torch.save holding the state_dict of the released code's
FewShotRegressor (Sun et al. 2025, `adaptive_difficulty_prediction/model.py`, trained with
precomputed embeddings), either
  - the bare state_dict ({name: tensor}), or
  - a checkpoint dict holding it under "model_state_dict" (what the released train.py saves,
    with "config" beside it) or "state_dict"; --key names another entry.
Keys "encoder.*" (the text encoder of a model trained on raw text) are dropped, as the released
RL code's loader does (it keeps the keys starting with "regressor."). A "module." prefix on
every key (DistributedDataParallel) is removed.

Architecture check: every key must be one of the released architecture's, with its shape:
  regressor.sim_head.{query_proj,ref_proj}.0.{weight,bias}             [D]      LayerNorm(D)
  regressor.sim_head.{query_proj,ref_proj}.{1+3i}.weight               [h, D] (i = 0) / [h, h]
  regressor.sim_head.{query_proj,ref_proj}.{1+3i}.bias                 [h]      i < n layers
  regressor.sim_head.{query_proj,ref_proj}.{3n-1}.{weight,bias}        [h]      LayerNorm(h)
  head group_logit_temp: regressor.mlp.0.weight [W, 2], .0.bias [W], .2.weight [2, W], .2.bias [2]
       platt: regressor.scale [1], regressor.res_scale [1]; temperature: regressor.scale [1]
A file of another architecture is refused, naming the first missing, unexpected or mis-shaped
key (exit status 1); nothing is written then.

Metadata written: num_layers, hidden_size, scaling, tau (--tau, else the checkpoint's
config["tau"], else 1.0), top_k (--top-k, else "None": the released default; the checkpoint does
not record it), label (--label, default success_rate: the released code's labels are mean
rewards), embedding_model (--embedding-model, else config["model_name"], when known) and source
(the input file name).

Loading: torch.load with an unpickler that admits only tensors, OrderedDict and plain data
(numbers, strings, lists, dicts), so a file cannot run code; a checkpoint whose config holds
other objects needs --unsafe-load, which unpickles arbitrary code: only for files you trust. The output is written in pure Python (u64 little-endian header length, JSON header
padded to 8 bytes, raw little-endian float32 data), next to the destination and renamed over it.
"""

import argparse
import json
import math
import os
import pickle
import re
import struct
import sys
import types

import torch

QUERY = "regressor.sim_head.query_proj."
REF = "regressor.sim_head.ref_proj."
STATE_KEYS = ("model_state_dict", "state_dict")


class ConversionError(Exception):
    pass


# What a state_dict and the released checkpoint's config and metrics need from pickle: the
# tensor rebuild functions and OrderedDict (storages are resolved by torch.load itself). Every
# other global is refused, so loading cannot run code. (torch 1.13's weights_only loader would
# do the same but refuses the floats of the released checkpoint's config.)
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


RESTRICTED_PICKLE = types.ModuleType("restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()


def safe_load(path):
    """torch.load that cannot run code. torch 1.13's load() ignores pickle_module (it resets it
    to pickle unless weights_only), so the zip archive is read with its internal _load, which
    honours it; without those internals (another torch) weights_only=True is used."""
    ser = torch.serialization
    if all(hasattr(ser, n) for n in ("_open_file_like", "_is_zipfile", "_open_zipfile_reader",
                                     "_load")):
        with ser._open_file_like(path, "rb") as f:
            if ser._is_zipfile(f):
                with ser._open_zipfile_reader(f) as archive:
                    return ser._load(archive, "cpu", RESTRICTED_PICKLE, encoding="utf-8")
    return torch.load(path, map_location="cpu", weights_only=True)


def is_state_dict(obj):
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def find_state_dict(obj, key, path):
    """(state_dict, where it was found, config dict or {})."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ConversionError(f"{path}: --key {key!r}: no such entry in the checkpoint")
        if not is_state_dict(obj[key]):
            raise ConversionError(f"{path}: entry {key!r} is not a state_dict of tensors")
        return obj[key], f"entry {key!r}", obj.get("config") or {}
    if is_state_dict(obj):
        return obj, "the bare state_dict", {}
    if isinstance(obj, dict):
        for k in STATE_KEYS:
            if k in obj and is_state_dict(obj[k]):
                config = obj.get("config")
                return obj[k], f"entry {k!r}", config if isinstance(config, dict) else {}
        raise ConversionError(
            f"{path}: no state_dict found: a checkpoint dict must hold one under "
            f"{' or '.join(repr(k) for k in STATE_KEYS)} (its keys: "
            f"{', '.join(repr(k) for k in list(obj)[:10])})")
    raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state_dict or a "
                          "checkpoint dict")


def expected_shapes(state, path):
    """The released architecture's keys and shapes, inferred from the query projection."""
    indices = [int(m.group(1)) for k in state
               for m in [re.fullmatch(re.escape(QUERY) + r"(\d+)\.weight", k)] if m]
    first = QUERY + "0.weight"
    if first not in state:
        raise ConversionError(f"{path}: missing key {first!r} (the query projection's input "
                              "LayerNorm): not the released FewShotRegressor")
    last = max(indices)
    if (last + 1) % 3:
        raise ConversionError(f"{path}: key '{QUERY}{last}.weight': the last module of an "
                              "n-layer projection has index 3n - 1 (2, 5, 8, ...)")
    layers = (last + 1) // 3
    if state[first].dim() != 1:
        raise ConversionError(f"{path}: key {first!r}: shape {list(state[first].shape)}, "
                              "expected [D]")
    d = state[first].shape[0]
    lin = QUERY + "1.weight"
    if lin not in state or state[lin].dim() != 2:
        raise ConversionError(f"{path}: key {lin!r}: "
                              f"{'missing' if lin not in state else list(state[lin].shape)}, "
                              f"expected [h, {d}]")
    h = state[lin].shape[0]
    shapes = {}
    for prefix in (QUERY, REF):
        shapes[prefix + "0.weight"] = shapes[prefix + "0.bias"] = [d]
        for i in range(layers):
            shapes[f"{prefix}{1 + 3 * i}.weight"] = [h, d if i == 0 else h]
            shapes[f"{prefix}{1 + 3 * i}.bias"] = [h]
        shapes[f"{prefix}{3 * layers - 1}.weight"] = shapes[f"{prefix}{3 * layers - 1}.bias"] = [h]
    if "regressor.mlp.0.weight" in state:
        scaling = "group_logit_temp"
        w = state["regressor.mlp.0.weight"].shape[0] if state[
            "regressor.mlp.0.weight"].dim() == 2 else 10
        shapes.update({"regressor.mlp.0.weight": [w, 2], "regressor.mlp.0.bias": [w],
                       "regressor.mlp.2.weight": [2, w], "regressor.mlp.2.bias": [2]})
    elif "regressor.res_scale" in state:
        scaling = "platt"
        shapes.update({"regressor.scale": [1], "regressor.res_scale": [1]})
    elif "regressor.scale" in state:
        scaling = "temperature"
        shapes["regressor.scale"] = [1]
    else:
        scaling = "plain"
    return shapes, layers, d, h, scaling


def convert(args):
    try:
        if args.unsafe_load:
            obj = torch.load(args.input, map_location="cpu")
        else:
            obj = safe_load(args.input)
    except FileNotFoundError:
        raise ConversionError(f"{args.input}: no such file")
    except Exception as e:  # torch raises pickle.UnpicklingError, RuntimeError, ...
        hint = "" if args.unsafe_load else (
            " (if the file holds more than tensors and plain data, and you trust it: "
            "--unsafe-load)")
        raise ConversionError(f"{args.input}: cannot load: {e}{hint}")
    state, where, config = find_state_dict(obj, args.key, args.input)
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    dropped = [k for k in state if k.startswith("encoder.")]
    for k in dropped:
        del state[k]

    shapes, layers, d, h, scaling = expected_shapes(state, args.input)
    for name, shape in shapes.items():
        if name not in state:
            raise ConversionError(f"{args.input}: missing key {name!r} (expected shape {shape}) "
                                  f"for a {layers}-layer {scaling} adapter")
        if list(state[name].shape) != shape:
            raise ConversionError(f"{args.input}: key {name!r}: shape {list(state[name].shape)}, "
                                  f"expected {shape}")
        if not state[name].is_floating_point():
            raise ConversionError(f"{args.input}: key {name!r}: dtype {state[name].dtype}, "
                                  "expected a floating-point tensor")
        if not bool(torch.isfinite(state[name]).all()):
            raise ConversionError(f"{args.input}: key {name!r}: holds NaN or infinite values")
    for name in state:
        if name not in shapes:
            raise ConversionError(f"{args.input}: unexpected key {name!r} (shape "
                                  f"{list(state[name].shape)}) for a {layers}-layer {scaling} "
                                  "adapter")
    for field, value in (("num_layers", layers), ("hidden_size", h), ("scaling", scaling)):
        if field in config and config[field] != value:
            raise ConversionError(f"{args.input}: config[{field!r}] = {config[field]!r}, but the "
                                  f"tensors describe {value!r}")

    tau = args.tau if args.tau is not None else float(config.get("tau", 1.0))
    if not (math.isfinite(tau) and tau > 0):
        raise ConversionError(f"tau: {tau} is not a finite number > 0")
    metadata = {"num_layers": str(layers), "hidden_size": str(h), "scaling": scaling,
                "tau": repr(tau), "top_k": str(args.top_k) if args.top_k else "None",
                "label": args.label, "source": os.path.basename(args.input)}
    model_name = args.embedding_model or config.get("model_name")
    if model_name:
        metadata["embedding_model"] = str(model_name)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}
    write_safetensors(args.output, tensors, metadata)
    return where, dropped, layers, d, h, scaling, len(tensors)


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    temp = path + ".tmp"
    with open(temp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def main():
    parser = argparse.ArgumentParser(
        description="Convert the released FewShotRegressor checkpoint to a dots adapter file.",
        epilog="The accepted layouts and the checks are described at the top of this file.")
    parser.add_argument("--in", dest="input", required=True, help="checkpoint from torch.save")
    parser.add_argument("--out", dest="output", required=True, help="adapter .safetensors")
    parser.add_argument("--key", help="checkpoint entry holding the state_dict")
    parser.add_argument("--top-k", type=int, default=0, help="attention top-k (0 = all)")
    parser.add_argument("--tau", type=float, help="attention temperature")
    parser.add_argument("--label", choices=("success_rate", "failure_rate"),
                        default="success_rate", help="what the labels were (default: success)")
    parser.add_argument("--embedding-model", help="name of the embedding backbone")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="unpickle arbitrary objects (trusted files only)")
    args = parser.parse_args()
    if args.top_k < 0:
        parser.error("--top-k: must be >= 0")
    try:
        where, dropped, layers, d, h, scaling, count = convert(args)
    except ConversionError as e:
        print(f"convert_adapter: {e}", file=sys.stderr)
        return 1
    note = f"; dropped {len(dropped)} encoder.* keys" if dropped else ""
    print(f"convert_adapter: {args.output}: {count} tensors from {where} of {args.input}: "
          f"{layers} layers, D {d}, h {h}, head {scaling}{note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
