#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (replacing it).

run_archive_fuzz's seeds are archives of real runs, written by the target itself:
    DOTS_FUZZ_WRITE_SEEDS=fuzz/corpus/run_archive_fuzz build-fuzz/bin/run_archive_fuzz

Standard library only, deterministic: run it again after changing a format and commit the
result. Each target gets valid examples and a few edge cases; the rpc_fuzz seeds are serialized
request messages in the record format described at the top of fuzz/rpc_fuzz.cc.

    /usr/bin/python3 fuzz/make_corpus.py
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
# The bundled real run (data/ of this repository), for realistic pool lines.
REAL_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "data",
                         "oneshot-rlvr", "questions.jsonl")


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


# ---- json ----

def json_seeds():
    seeds = {
        "object": '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}',
        "array": ' [1, -0, 0.5, 1e308, 5e-324, -1.5E+3, 12345678901234567890] ',
        "escapes": r'["\"\\\/\b\f\n\r\t", "\u00e9\u4e2d\ud83d\ude00", "caf\u00e9 \u0000"]',
        "utf8": '{"\u00e9t\u00e9": "\u4e2d\u6587 \U0001f600"}',
        "scalars": "true",
        "empty": "{}",
        "deep": "[" * 40 + "1" + "]" * 40,
        "too_deep": "[" * 300 + "]" * 300,
        "dup_key": '{"a": 1, "a": 2}',
        "trailing": '{"a": 1} x',
        "lone_surrogate": '"\\ud800"',
        "bad_number": "[01, 1., .5, +1, NaN, Infinity]",
        "huge_number": "1e400",
        "control_char": '"a\x01b"',
    }
    for name, text in seeds.items():
        write("json_fuzz", name, text)
    write("json_fuzz", "invalid_utf8", b'{"a": "\xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80"}')
    # Objects of more than 16 members: the parser switches to a hash set for duplicate keys.
    wide = ", ".join('"k%d": %d' % (i, i) for i in range(20))
    write("json_fuzz", "wide_object", "{" + wide + "}")
    write("json_fuzz", "wide_duplicate", "{" + wide + ', "k18": 0}')


# ---- run config ----

def run_config_seeds():
    full = {
        "batch_size": 512, "group_size": 8, "steps_per_round": 2, "reference_size": 256,
        "reference_mode": "inline", "reference_sampling": None, "alpha": 0.5, "tau": 0.001,
        "fresh_fraction": 0.5, "seed": 0, "lease_timeout_seconds": 3600,
        "estimator": {"mode": "default", "adapter_path": "", "attention_tau": None,
                      "top_k": None, "label_window": 0, "decay": 0.95, "prior_strength": 1.0,
                      "max_labeled": 4096, "recalibration_window": 3, "use_priors": True},
        "selector": {"strategy": "dots", "cooldown_steps": 0, "band_lo": 0.2, "band_hi": 0.8},
        "replay": {"enabled": True, "capacity_groups": 512, "capacity_bytes": 1073741824,
                   "strategy": "uniform", "max_age_versions": 0, "max_replays": 0,
                   "underfill": "fill_fresh"},
    }
    seeds = {
        "defaults": "{}",
        "full": json.dumps(full),
        "small": '{"batch_size": 16, "group_size": 4, "steps_per_round": 2, '
                 '"reference_size": 4, "estimator": {"mode": "history"}}',
        "paper": '{"reference_mode": "paper", "reference_sampling": "uniform", '
                 '"estimator": {"mode": "paper", "top_k": 8, "attention_tau": 0.1}}',
        "paper_online": '{"reference_mode": "paper", "estimator": {"mode": "paper", '
                        '"adapter_training": {"mode": "online", "epochs": 3, "hidden_size": 64, '
                        '"num_layers": 2, "label_decay": 0.8}}}',
        "none": '{"reference_mode": "none", "reference_size": 0, "replay": {"enabled": false}, '
                '"selector": {"strategy": "uniform"}}',
        "band": '{"selector": {"strategy": "band", "band_lo": 0.3, "band_hi": 0.7, '
                '"cooldown_steps": 5}, "replay": {"strategy": "informative", '
                '"underfill": "shrink", "max_replays": 2, "max_age_versions": 4}}',
        "bad_float_int": '{"batch_size": 1.5}',
        "bad_unknown": '{"batchsize": 16}',
        "bad_range": '{"replay": {"capacity_groups": -1}, "alpha": 2}',
        "big_int": '{"seed": 9007199254740993}',
    }
    for name, text in seeds.items():
        write("run_config_fuzz", name, text)


# ---- npy ----

def npy(shape, values, descr="<f4", version=(1, 0), fortran=False, fmt="<f", extra=b""):
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, "True" if fortran else "False",
        ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else ""))
    length_bytes = 2 if version[0] == 1 else 4
    prefix = 6 + 2 + length_bytes
    header += " " * ((64 - (prefix + len(header) + 1) % 64) % 64) + "\n"
    head = b"\x93NUMPY" + bytes(version)
    head += struct.pack("<H" if length_bytes == 2 else "<I", len(header))
    return head + header.encode("latin-1") + struct.pack(fmt[0] + fmt[1] * len(values),
                                                           *values) + extra


def npy_seeds():
    inf, nan = float("inf"), float("nan")
    write("npy_fuzz", "f4_2x3", npy((2, 3), [0, 1, -2.5, 3e38, -1e-45, 6]))
    write("npy_fuzz", "f2_2x4",
          npy((2, 4), [0.0, -0.0, 65504.0, 6e-8, inf, -inf, nan, 1.5], descr="<f2", fmt="<e"))
    write("npy_fuzz", "v2", npy((1, 2), [1, 2], version=(2, 0)))
    write("npy_fuzz", "v3", npy((2, 1), [1, 2], version=(3, 0)))
    write("npy_fuzz", "fortran", npy((2, 2), [1, 2, 3, 4], fortran=True))
    write("npy_fuzz", "big_endian", npy((1, 2), [1, 2], descr=">f4", fmt=">f"))
    write("npy_fuzz", "f8", npy((1, 2), [1, 2], descr="<f8", fmt="<d"))
    write("npy_fuzz", "one_dim", npy((3,), [1, 2, 3]))
    write("npy_fuzz", "zero_rows", npy((0, 3), []))
    write("npy_fuzz", "truncated", npy((2, 3), [1, 2, 3, 4, 5, 6])[:-5])
    write("npy_fuzz", "trailing", npy((1, 1), [1], extra=b"\0\0\0\0"))


# ---- safetensors ----

def safetensors(tensors, metadata=None, raw_header=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    if metadata is not None:
        header["__metadata__"] = metadata
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    f32 = lambda *v: struct.pack("<%df" % len(v), *v)
    write("safetensors_fuzz", "f32", safetensors(
        [("head.weight", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6)), ("head.bias", "F32", [2],
                                                                   f32(0.5, -0.5))],
        metadata={"format": "pt"}))
    write("safetensors_fuzz", "f16_bf16_f64", safetensors([
        ("a", "F16", [2], struct.pack("<2e", 1.0, -2.0)),
        ("b", "BF16", [2], b"\x80\x3f\x00\xc0"),
        ("c", "F64", [1, 2], struct.pack("<2d", 1e300, -3.5)),
    ]))
    write("safetensors_fuzz", "scalar_and_empty", safetensors([
        ("s", "F32", [], f32(7)), ("e", "F32", [0, 4], b"")]))
    write("safetensors_fuzz", "many_tensors", safetensors(
        [("layer%d.weight" % i, "F32", [1], f32(i)) for i in range(20)]))
    write("safetensors_fuzz", "unknown_dtype", safetensors([("i", "I8", [2], b"\x01\x02")]))
    write("safetensors_fuzz", "overlap", safetensors(
        [], raw_header=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                       b'"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')
        + f32(1, 2))
    write("safetensors_fuzz", "short_data", safetensors(
        [], raw_header=b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}')
        + f32(1))
    write("safetensors_fuzz", "bad_length", struct.pack("<Q", 1 << 40) + b"{}")


# ---- labels (labels_fuzz: first byte = options, bit 0 require_source; pool keys q0..q6, é) ----

def labels_seeds():
    lines = [
        '{"key": "q0", "source": "qwen2.5-7b", "rate": 0.375}',
        '{"key": "q1", "source": "qwen2.5-7b", "rate": 1, "weight": 0.5, "rollouts": 8}',
        '{"key": "q0", "source": "gpt-oss-20b", "success_rate": 0}',
        '',
        '{"key": "\u00e9", "rate": 0.5, "extra": {"a": [1, 2]}}\r',
    ]
    write("labels_fuzz", "sources", b"\0" + "\n".join(lines).encode())
    write("labels_fuzz", "require_source", b"\1" + "\n".join(lines[:3]).encode() + b"\n")
    for name, line in [
            ("nan", '{"key": "q2", "source": "m", "rate": NaN}'),
            ("infinity", '{"key": "q2", "rate": -Infinity, "source": "m"}'),
            ("outside", '{"key": "q2", "source": "m", "rate": 1.5}'),
            ("unknown_key", '{"key": "q9", "source": "m", "rate": 0.5}'),
            ("missing_rate", '{"key": "q2", "source": "m"}'),
            ("both_rates", '{"key": "q2", "rate": 0.5, "success_rate": 0.5}'),
            ("bad_weight", '{"key": "q2", "rate": 0.5, "weight": -1}'),
            ("bad_rollouts", '{"key": "q2", "rate": 0.5, "rollouts": 0.5}'),
            ("not_object", '[{"key": "q2"}]')]:
        write("labels_fuzz", name, b"\0" + (lines[0] + "\n" + line).encode())
    write("labels_fuzz", "duplicate", b"\0" + (lines[0] + "\n" + lines[1] + "\n" + lines[0]).encode())


# ---- adapter tensors (adapter_fuzz: Adapter::FromTensors on safetensors bytes) ----

def adapter_file(d, h, layers, head, metadata, seed, tweak=None):
    """A small adapter of the released layout with deterministic pseudo-random weights."""
    state = [seed]

    def values(n):
        out = []
        for _ in range(n):
            state[0] = (state[0] * 1103515245 + 12345) % (1 << 31)
            out.append(state[0] / (1 << 31) - 0.5)
        return out

    tensors = {}
    for prefix in ("regressor.sim_head.query_proj.", "regressor.sim_head.ref_proj."):
        tensors[prefix + "0.weight"] = ([d], [1 + v for v in values(d)])
        tensors[prefix + "0.bias"] = ([d], values(d))
        for i in range(layers):
            fan_in = d if i == 0 else h
            tensors[f"{prefix}{1 + 3 * i}.weight"] = ([h, fan_in], values(h * fan_in))
            tensors[f"{prefix}{1 + 3 * i}.bias"] = ([h], values(h))
        tensors[f"{prefix}{3 * layers - 1}.weight"] = ([h], [1 + v for v in values(h)])
        tensors[f"{prefix}{3 * layers - 1}.bias"] = ([h], values(h))
    if head == "group_logit_temp":
        tensors["regressor.mlp.0.weight"] = ([4, 2], values(8))
        tensors["regressor.mlp.0.bias"] = ([4], values(4))
        tensors["regressor.mlp.2.weight"] = ([2, 4], values(8))
        tensors["regressor.mlp.2.bias"] = ([2], values(2))
    elif head == "platt":
        tensors["regressor.scale"] = ([1], [1.5])
        tensors["regressor.res_scale"] = ([], [0.25])
    elif head == "temperature":
        tensors["regressor.scale"] = ([1], [0.5])
    if tweak:
        tweak(tensors)
    return safetensors([(name, "F32", shape, struct.pack("<%df" % len(v), *v))
                        for name, (shape, v) in sorted(tensors.items())], metadata=metadata)


def adapter_seeds():
    meta = {"num_layers": "3", "hidden_size": "3", "scaling": "group_logit_temp", "tau": "0.5",
            "top_k": "2", "label": "failure_rate", "embedding_model": "x"}
    write("adapter_fuzz", "group_logit_temp_3", adapter_file(4, 3, 3, "group_logit_temp", meta, 1))
    write("adapter_fuzz", "group_logit_temp_1", adapter_file(5, 2, 1, "group_logit_temp", None, 2))
    write("adapter_fuzz", "platt", adapter_file(3, 2, 1, "platt", {"top_k": "None"}, 3))
    write("adapter_fuzz", "temperature", adapter_file(3, 2, 2, "temperature", {}, 4))
    write("adapter_fuzz", "plain", adapter_file(2, 2, 1, "plain", {"scaling": "plain"}, 5))

    def nan(t):
        t["regressor.mlp.2.bias"] = ([2], [float("nan"), 0.0])

    def misshaped(t):
        t["regressor.sim_head.ref_proj.4.weight"] = ([3, 2], [0.0] * 6)

    def extra(t):
        t["regressor.other"] = ([1], [1.0])

    write("adapter_fuzz", "nan", adapter_file(4, 3, 3, "group_logit_temp", None, 6, nan))
    write("adapter_fuzz", "misshaped", adapter_file(4, 3, 3, "group_logit_temp", None, 7,
                                                    misshaped))
    write("adapter_fuzz", "extra", adapter_file(4, 3, 1, "plain", None, 8, extra))
    write("adapter_fuzz", "bad_metadata", adapter_file(
        4, 3, 1, "group_logit_temp", {"num_layers": "2", "tau": "-1"}, 9))


# ---- jsonl pool ----

def jsonl_seeds():
    real = []
    with open(REAL_DATA, encoding="utf-8") as f:
        for line in list(f)[:4]:
            q = json.loads(line)
            q["history"] = q["history"][:4]
            real.append(json.dumps(q, ensure_ascii=False))
    write("jsonl_pool_fuzz", "real", "\n".join(real) + "\n")
    lines = [
        '{"key": "a", "prompt": "1 + 1?", "metadata": {"answer": 2}, "prior": 0.5}',
        '',
        '{"key": "b", "prompt": "", "prior": null, "extra": [1, 2]}\r',
        '   ',
        '{"key": "c\\u00e9", "prompt": "x", "metadata": "just a string"}',
    ]
    write("jsonl_pool_fuzz", "mixed", "\n".join(lines))
    emb = ['{"key": "e%d", "prompt": "p%d", "embedding": [%d, 0.5, -1e-3]}' % (i, i, i)
           for i in range(3)]
    write("jsonl_pool_fuzz", "inline_embeddings", "\n".join(emb) + "\n")
    plain = "\n".join('{"key": "n%d", "prompt": "p"}' % i for i in range(3)) + "\n"
    write("jsonl_pool_fuzz", "with_npy", plain.encode() + npy((3, 2), [1, 2, 3, 4, 5, 6]))
    write("jsonl_pool_fuzz", "with_npy_wrong_rows", plain.encode() + npy((2, 2), [1, 2, 3, 4]))
    write("jsonl_pool_fuzz", "duplicate", '{"key": "a", "prompt": ""}\n{"key": "a", "prompt": ""}')
    write("jsonl_pool_fuzz", "bad_prior", '{"key": "a", "prompt": "", "prior": 1.5}\n')
    write("jsonl_pool_fuzz", "mixed_embeddings",
          '{"key": "a", "prompt": "", "embedding": [1]}\n{"key": "b", "prompt": ""}\n')
    write("jsonl_pool_fuzz", "nan_embedding", '{"key": "a", "prompt": "", "embedding": [1e999]}\n')


# ---- rpc: protobuf wire format by hand ----

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_int(num, v):
    return varint(num << 3) + varint(v) if v else b""


def f_bytes(num, v):
    if isinstance(v, str):
        v = v.encode()
    return varint(num << 3 | 2) + varint(len(v)) + v


def f_double(num, v):
    return varint(num << 3 | 1) + struct.pack("<d", v)


def f_floats(num, vs):
    return f_bytes(num, struct.pack("<%df" % len(vs), *vs)) if vs else b""


def question(key, prompt="p", metadata="", prior=None, embedding=()):
    m = f_bytes(1, key) + f_bytes(2, prompt)
    if metadata:
        m += f_bytes(3, metadata)
    if prior is not None:
        m += f_double(4, prior)
    return m + f_floats(5, list(embedding))


def fragment(key, rewards, payload, version=0, offset=0, size=None, first=True):
    m = b""
    if first:
        m += f_bytes(1, key) + f_floats(2, rewards) + f_int(3, version)
    m += f_int(4, len(payload) if size is None else size) + f_int(5, offset)
    return m + f_bytes(6, payload)


CREATE, GET, LIST, DELETE, UPSERT, IMPORT, NEXT, REPORT, ESTIMATES, STATS, EXPORT, IMPORT_RUN = \
    range(12)
SPLICE_EXPORT = 0x10  # ImportRun: the archive of the last ExportRun goes first
SMALL = ('{"batch_size": 16, "group_size": 4, "steps_per_round": 2, "reference_size": 4, '
         '"estimator": {"mode": "history"}}')
KEYS = ["q%d" % i for i in range(64)]
EMB8 = [0.5, -1, 2, 0, 1, 1, -3, 0.25]


def record(op, message):
    return bytes([op]) + struct.pack("<H", len(message)) + message


def next_batch(step, rank=0, world=1, version=0, chunk=0, run="fuzz"):
    return (f_bytes(1, run) + f_int(2, step) + f_int(3, rank) + f_int(4, world) +
            f_int(5, version) + f_int(6, chunk))


def report_all(step, op=REPORT, payload=b"rollout-bytes!!", version=0):
    """Every pool key with mixed rewards: the ones issued at `step` are accepted."""
    groups = b"".join(f_bytes(3, fragment(k, [1, 0, 0, 0] if i % 2 else [0, 1, 1, 1],
                                          payload, version)) for i, k in enumerate(KEYS))
    return record(op, f_bytes(1, "fuzz") + f_int(2, step) + groups)


def rpc_seeds():
    seeds = {
        "create": record(CREATE, f_bytes(1, "run-2") + f_bytes(2, SMALL)),
        "create_defaults": record(CREATE, f_bytes(1, "r") + f_bytes(2, "{}")),
        "create_exists": record(CREATE, f_bytes(1, "fuzz") + f_bytes(2, "{}")),
        "create_bad_config": record(CREATE, f_bytes(1, "x") + f_bytes(2, '{"alpha": "a"}')),
        "get": record(GET, f_bytes(1, "fuzz")),
        "get_bad_id": record(GET, f_bytes(1, "no/such run")),
        "list": record(LIST, b""),
        "delete": record(DELETE, f_bytes(1, "fuzz")) + record(GET, f_bytes(1, "fuzz")),
        "upsert": record(UPSERT, f_bytes(1, "fuzz") + f_bytes(2, question(
            "q0", "new prompt", '{"a": 1}', 0.25, EMB8)) + f_bytes(2, question(
                "new", embedding=EMB8))) + record(UPSERT, f_bytes(2, question(
                    "nan", embedding=[float("nan")] * 8)) + f_bytes(2, question(
                        "prior", prior=1.5, embedding=EMB8)) + f_bytes(2, question(
                            "dim", embedding=[1, 2])) + f_bytes(2, question(
                                "meta", metadata="{bad", embedding=EMB8))),
        "upsert_no_run": record(UPSERT, f_bytes(2, question("a"))),
        "import": record(IMPORT, f_bytes(1, "fuzz") + f_bytes(2, "pool.jsonl") +
                         f_bytes(3, "pool.npy")),
        "import_inline": record(IMPORT, f_bytes(1, "fuzz") + f_bytes(2, "inline.jsonl")),
        "import_bad": record(IMPORT, f_bytes(1, "fuzz") + f_bytes(2, "bad.jsonl")),
        "import_short_npy": record(IMPORT, f_bytes(1, "fuzz") + f_bytes(2, "pool.jsonl") +
                                   f_bytes(3, "short.npy")),
        "import_missing": record(IMPORT, f_bytes(1, "fuzz") + f_bytes(2, "nope.jsonl")),
        "next_step0": record(NEXT, next_batch(0, rank=1, world=3, chunk=1024)),
        "next_step1": record(NEXT, next_batch(1, version=3)),
        "next_bad_rank": record(NEXT, next_batch(0, rank=2, world=2)),
        "next_cancel": record(NEXT | 0x20, next_batch(0, chunk=1024)),
        "report_step0": report_all(0),
        "report_fragmented": record(REPORT, f_bytes(1, "fuzz") + f_int(2, 0) + f_bytes(
            3, fragment("q1", [1, 0, 1, 0], b"abcdef", size=10))) + record(
                REPORT, f_bytes(3, fragment("q1", [], b"ghij", offset=6, size=10, first=False))),
        "report_out_of_order": record(REPORT, f_bytes(1, "fuzz") + f_bytes(3, fragment(
            "q1", [1, 0, 1, 0], b"ab", offset=3, size=10))),
        "report_cancel": record(REPORT | 0x20, f_bytes(1, "fuzz") + f_bytes(3, fragment(
            "q2", [1, 0, 1, 0], b"xy"))),
        "estimates": record(ESTIMATES, f_bytes(1, "fuzz") + f_int(3, 10) + f_bytes(4, "20")),
        "estimates_keys": record(ESTIMATES, f_bytes(1, "fuzz") + f_bytes(2, "q1") +
                                 f_bytes(2, "q63")),
        "estimates_bad_token": record(ESTIMATES, f_bytes(1, "fuzz") + f_bytes(4, "x")),
        "stats": record(STATS, f_bytes(1, "fuzz")),
        "export": record(EXPORT, f_bytes(1, "fuzz")),
        "export_import": (report_all(0) + record(EXPORT, f_bytes(1, "fuzz")) +
                          record(IMPORT_RUN | SPLICE_EXPORT, f_bytes(1, "copy")) +
                          record(NEXT, next_batch(1, run="copy")) +
                          record(IMPORT_RUN | SPLICE_EXPORT | 0x40, b"")),
        "import_run_split": (record(EXPORT, f_bytes(1, "fuzz")) +
                             record(IMPORT_RUN | SPLICE_EXPORT, f_bytes(1, "c2")) +
                             record(IMPORT_RUN | SPLICE_EXPORT, f_bytes(2, b"trailing"))),
        "import_run_garbage": record(IMPORT_RUN, f_bytes(1, "g") +
                                     f_bytes(2, b"DOTSRUN\n\1\0\0\0K")),
        # Two rounds of training: replay appears at step 2.
        "training": (report_all(0) + record(NEXT, next_batch(1, version=1)) +
                     report_all(1, op=REPORT | 0x40, version=1) +
                     record(NEXT, next_batch(2, world=2, version=2)) +
                     record(NEXT, next_batch(2, rank=1, world=2, version=2, chunk=1024)) +
                     record(STATS, f_bytes(1, "fuzz"))),
        "second_run": (record(CREATE, f_bytes(1, "b") + f_bytes(2, SMALL)) +
                       record(UPSERT, f_bytes(1, "b") + b"".join(
                           f_bytes(2, question(k)) for k in KEYS[:40])) +
                       record(NEXT, next_batch(0, run="b")) +
                       record(ESTIMATES, f_bytes(1, "b"))),
    }
    for name, data in seeds.items():
        write("rpc_fuzz", name, data)


# Targets whose seeds this script writes; run_archive_fuzz writes its own (real runs' archives,
# see fuzz/run_archive_fuzz.cc).
TARGETS = ["json_fuzz", "run_config_fuzz", "npy_fuzz", "safetensors_fuzz", "jsonl_pool_fuzz",
           "rpc_fuzz", "labels_fuzz", "adapter_fuzz"]


def main():
    # Reproducers of fixed bugs (regression-*) are kept; every other seed is rewritten.
    for target in TARGETS:
        directory = os.path.join(ROOT, target)
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if not name.startswith("regression-"):
                os.remove(os.path.join(directory, name))
    json_seeds()
    run_config_seeds()
    npy_seeds()
    safetensors_seeds()
    jsonl_seeds()
    rpc_seeds()
    labels_seeds()
    adapter_seeds()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    count = sum(len(fs) for _, _, fs in os.walk(ROOT))
    print("make_corpus: %d files, %d bytes in %s" % (count, total, ROOT))


if __name__ == "__main__":
    main()
