"""The Python client's fragment codec against the golden streams of tests/proto/golden.

The C++ codec (proto/payload_codec.h) wrote the .hex files from cases.json (one serialized
message per line; regenerated with build/bin/payload_golden, see the README there). Here the
Python client must produce the same bytes for every report case (encode_report) and read every
batch case back to the values of cases.json (decode_batch), and refuse the same streams broken.
No server needed.
"""

import json
import os

import pytest

from dots.v1 import dots_pb2
from dots_client import DotsError, Group
from dots_client.client import decode_batch, encode_report

GOLDEN = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "proto", "golden"
)

with open(os.path.join(GOLDEN, "cases.json")) as f:
    CASES = json.load(f)


def pattern(n, seed):
    """tests/client/test_payload.h Pattern: n bytes of a xorshift32 stream seeded by seed."""
    x = (seed * 2654435761 + 1) & 0xFFFFFFFF
    out = bytearray(n)
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


def golden(name):
    with open(os.path.join(GOLDEN, name + ".hex")) as f:
        return [bytes.fromhex(line.strip()) for line in f if line.strip()]


def payload(spec):
    return pattern(spec["payload_bytes"], spec["payload_seed"])


def prompt(item):
    return "x" * item["prompt_bytes"] if "prompt_bytes" in item else item["prompt"]


@pytest.mark.parametrize("case", CASES["report"], ids=lambda c: c["name"])
def test_encode_report_writes_the_golden_bytes(case):
    groups = [
        Group(key=g["key"], rewards=g["rewards"], policy_version=g["policy_version"],
              payload=payload(g))
        for g in case["groups"]
    ]
    messages = encode_report(
        case["run_id"], case["step"], groups, case["max_message_bytes"], case["max_fragment_bytes"]
    )
    got = [m.SerializeToString() for m in messages]
    want = golden(case["name"])
    assert len(got) == len(want), f"{len(got)} messages, the golden stream has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"message {i} differs from line {i + 1} of {case['name']}.hex"


@pytest.mark.parametrize("case", CASES["batch"], ids=lambda c: c["name"])
def test_decode_batch_reads_the_golden_stream(case):
    chunks = [dots_pb2.NextBatchChunk.FromString(line) for line in golden(case["name"])]
    batch = decode_batch(chunks)
    assert (batch.step, batch.round, batch.reference_batch, batch.batch_size) == (
        case["step"], case["round"], case["reference_batch"], case["batch_size"])
    assert [(i.key, i.role, i.prompt, i.metadata) for i in batch.items] == [
        (i["key"], i["role"], prompt(i), json.loads(i["metadata_json"])) for i in case["items"]
    ]
    assert len(batch.replay) == len(case["replay"])
    for got, want in zip(batch.replay, case["replay"]):
        assert (got.key, got.step, got.policy_version, got.rewards) == (
            want["key"], want["step"], want["policy_version"], want["rewards"])
        assert got.payload == payload(want), got.key


def test_the_golden_batch_spans_chunks_and_a_group_spans_fragments():
    chunks = [dots_pb2.NextBatchChunk.FromString(line) for line in golden("batch_basic")]
    assert len(chunks) >= 4
    offsets = [f.offset for c in chunks for f in c.replay]
    assert any(o > 0 for o in offsets), "no group was cut into fragments"


def broken(mutate):
    chunks = [dots_pb2.NextBatchChunk.FromString(line) for line in golden("batch_basic")]
    mutate(chunks)
    with pytest.raises(DotsError) as e:
        decode_batch(chunks)
    assert e.value.code == "DATA_LOSS"
    return e.value.message


def test_decode_batch_refuses_the_golden_stream_broken():
    assert "out of order" in broken(lambda c: c.pop(len(c) - 2))  # a chunk of fragments lost
    assert "second chunk" in broken(lambda c: c.insert(1, c[0]))
    assert "no header" in broken(lambda c: c.pop(0))
    assert "stream ended" in broken(lambda c: c[-1].replay[-1].ClearField("data"))
    assert "header says" in broken(lambda c: c[0].header.__setattr__("item_count", 4))
    assert "no header" in broken(lambda c: c.clear())
