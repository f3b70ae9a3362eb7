"""Tests of dots_client against a live dots-server (DOTS_SERVER_BIN) and a fake gRPC server.

Run by ctest (one `python_test_*` entry per file), which sets PYTHONPATH to the generated stubs and the package:
    PYTHONPATH=BUILD/python:client/python DOTS_SERVER_BIN=BUILD/bin/dots-server \
        /usr/bin/python3 -m pytest -q tests/python
"""

import time
from concurrent import futures

import grpc
import numpy as np
import pytest

import dots_client
from dots.v1 import dots_pb2, dots_pb2_grpc

CONFIG = {
    "batch_size": 8,
    "group_size": 4,
    "reference_size": 2,
    "seed": 3,
    "estimator": {"mode": "history"},
}


# The `server` and `client` fixtures (a live dots-server per module) are in conftest.py.


def make_pool(n, dim, seed=0):
    questions = [
        {
            "key": f"q{i}",
            "prompt": f"What is {i} + {i}?",
            "metadata": {"answer": 2 * i, "tags": ["toy", i % 3]},
            "prior": (i % 5) / 5,
        }
        for i in range(n)
    ]
    embeddings = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return questions, embeddings


def new_run(client, run_id, n=60, dim=8):
    client.create_run(run_id, CONFIG)
    questions, embeddings = make_pool(n, dim)
    result = client.upsert_questions(run_id, questions, embeddings)
    assert result == {"added": n, "updated": 0, "rejected": []}


def payload_for(key, step, index):
    # Every byte value, NUL included, so any text/escaping mistake changes it.
    return f"{key}@{step}|".encode() + b"\x00" + bytes(range(256)) * (index + 1) + b"\x00"


# ---- runs ----


def test_run_lifecycle(client):
    info = client.create_run("life", CONFIG)
    assert info["run_id"] == "life" and info["pool_size"] == 0
    assert info["config"]["batch_size"] == 8 and info["config"]["group_size"] == 4
    assert "fresh_fraction" in info["config"], "the config is canonical (every key)"
    assert info["created_unix_seconds"] > 1_600_000_000

    got = client.get_run("life")
    assert got == info

    client.create_run("life-b", {})
    ids = [r["run_id"] for r in client.list_runs()]
    assert "life" in ids and "life-b" in ids and ids == sorted(ids)

    with pytest.raises(dots_client.DotsError) as e:
        client.create_run("life", CONFIG)
    assert e.value.code == "ALREADY_EXISTS"

    client.delete_run("life-b")
    assert "life-b" not in [r["run_id"] for r in client.list_runs()]
    with pytest.raises(dots_client.DotsError) as e:
        client.get_run("life-b")
    assert e.value.code == "NOT_FOUND"
    assert e.value.status_code == grpc.StatusCode.NOT_FOUND
    assert "life-b" in e.value.message
    client.delete_run("life")


# ---- questions ----


def test_upsert_with_embeddings_and_a_rejected_question(client):
    client.create_run("pool", CONFIG)
    questions, embeddings = make_pool(20, 16)
    questions[7]["prior"] = 1.5  # outside [0, 1]
    result = client.upsert_questions("pool", questions, embeddings)
    assert result["added"] == 19 and result["updated"] == 0
    assert len(result["rejected"]) == 1
    rejected = result["rejected"][0]
    assert rejected["index"] == 7 and rejected["key"] == "q7" and "prior" in rejected["error"]
    assert client.get_run("pool")["pool_size"] == 19

    # Same keys again: replaced, not added.
    questions[7]["prior"] = 0.5
    again = client.upsert_questions("pool", questions[:10], embeddings[:10])
    assert again == {"added": 1, "updated": 9, "rejected": []}

    # A wrong embedding dimension is rejected by the server for that question only.
    bad = client.upsert_questions("pool", [{"key": "wide"}], np.zeros((1, 17), np.float32))
    assert bad["added"] == 0 and len(bad["rejected"]) == 1 and bad["rejected"][0]["key"] == "wide"

    with pytest.raises(ValueError, match="embeddings"):
        client.upsert_questions("pool", questions[:3], embeddings[:2])
    client.delete_run("pool")


def test_upsert_larger_than_one_message(client):
    # 3000 x 128 float32 = 1.5 MiB of embeddings: must travel in several requests.
    client.create_run("bigpool", CONFIG)
    questions, embeddings = make_pool(3000, 128, seed=5)
    result = client.upsert_questions("bigpool", questions, embeddings)
    assert result == {"added": 3000, "updated": 0, "rejected": []}
    assert client.get_run("bigpool")["pool_size"] == 3000
    client.delete_run("bigpool")


# ---- training ----


def test_training_steps_with_byte_identical_replay(client):
    new_run(client, "train")
    reported = {}
    batches = []
    for step in range(4):
        batch = client.next_batch("train", step, policy_version=step)
        assert isinstance(batch, dots_client.Batch)
        assert batch.step == step and batch.batch_size == 8
        assert len(batch.items) + len(batch.replay) == 8
        # Same step again (a retry): the same batch.
        assert client.next_batch("train", step, policy_version=step) == batch
        groups = []
        for i, item in enumerate(batch.items):
            assert item.role in ("fresh", "reference")
            n = int(item.key[1:])
            assert item.prompt == f"What is {n} + {n}?"
            assert item.metadata == {"answer": 2 * n, "tags": ["toy", n % 3]}
            mixed = i % 2 == 0
            group = dots_client.Group(
                key=item.key,
                rewards=[1.0, 0.0, 1.0, 0.0] if mixed else [1.0, 1.0, 1.0, 1.0],
                policy_version=step,
                payload=payload_for(item.key, step, i),
            )
            groups.append(group)
            reported[(item.key, step)] = group
        result = client.report("train", step, groups)
        assert result == {"accepted": len(groups), "duplicates": 0, "rejected": []}
        batches.append(batch)

    assert [b.round for b in batches] == [0, 0, 1, 1]
    assert batches[0].replay == [] and batches[1].replay == []
    replayed = [g for b in batches[2:] for g in b.replay]
    assert replayed, "round 1 replays informative groups of round 0"
    for b in batches[2:]:
        for g in b.replay:
            assert isinstance(g, dots_client.ReplayGroup)
            original = reported[(g.key, g.step)]
            assert g.step < b.step
            assert g.rewards == list(original.rewards)
            assert 0 < sum(g.rewards) < len(g.rewards), "only informative groups are replayed"
            assert g.policy_version == original.policy_version
            assert g.payload == original.payload and b"\x00" in g.payload

    # Reporting step 0 again: every group a duplicate.
    again = [reported[(item.key, 0)] for item in batches[0].items]
    assert client.report("train", 0, again) == {
        "accepted": 0,
        "duplicates": len(again),
        "rejected": [],
    }
    # A group with a key not handed out at that step, and malformed rewards: rejected alone.
    mixed = client.report(
        "train",
        3,
        [
            dots_client.Group("not-a-question", [1.0, 0.0, 1.0, 0.0], 3),
            dots_client.Group(batches[3].items[0].key, [2.0, 0.0, 1.0, 0.0], 3),
        ],
    )
    assert mixed["accepted"] == 0
    assert sorted(r["key"] for r in mixed["rejected"]) == sorted(
        ["not-a-question", batches[3].items[0].key]
    )

    # ---- stats and estimates after the run ----
    stats = client.stats("train")
    assert set(stats) == {f.name for f in dots_pb2.RunStats.DESCRIPTOR.fields}
    for k in (
        "step",
        "round",
        "pool_size",
        "reported_groups",
        "effective_ratio_last_step",
        "replay_groups",
        "replay_bytes",
        "leases_outstanding",
        "leases_expired",
    ):
        assert k in stats
    assert stats["step"] == 3 and stats["round"] == 1 and stats["pool_size"] == 60
    assert stats["reported_groups"] == sum(len(b.items) for b in batches)
    assert stats["duplicate_reports"] == len(again)
    assert stats["replayed_groups"] == len(replayed)
    assert stats["replay_groups"] > 0 and stats["replay_bytes"] > 0
    assert stats["leases_outstanding"] == 0
    assert 0.0 <= stats["effective_ratio_last_step"] <= 1.0
    assert isinstance(stats["last_planning_seconds"], float)

    rows = client.estimates("train")
    assert [r["key"] for r in rows] == [f"q{i}" for i in range(60)], "pool order"
    for r in rows:
        assert set(r) == {"key", "p_hat", "observations", "last_policy_version"}
        assert 0.0 <= r["p_hat"] <= 1.0
        if r["observations"] == 0:
            assert r["last_policy_version"] == -1
    observed = {k for k, _ in reported}
    assert {r["key"] for r in rows if r["observations"] > 0} == observed
    assert client.estimates("train", page_size=7) == rows, "paging follows the tokens"
    first = batches[0].items[0].key
    some = client.estimates("train", keys=["q59", first])
    assert [r["key"] for r in some] == ["q59", first] and some[1]["observations"] >= 1


def test_three_mib_payload_round_trips(client):
    # Only one informative group is ever reported, so it is the one round 1 replays.
    new_run(client, "big")
    big = np.random.default_rng(11).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    big_key = None
    for step in range(2):
        batch = client.next_batch("big", step, policy_version=step)
        groups = []
        for item in batch.items:
            if big_key is None:
                big_key = item.key
                groups.append(dots_client.Group(item.key, [1, 0, 0, 1], step, big))
            else:
                groups.append(dots_client.Group(item.key, [1, 1, 1, 1], step, b"\x00"))
        assert client.report("big", step, groups)["accepted"] == len(groups)
    assert client.stats("big")["replay_bytes"] >= len(big)
    batch = client.next_batch("big", 2, policy_version=2)
    assert [g.key for g in batch.replay] == [big_key]
    group = batch.replay[0]
    assert group.step == 0 and group.rewards == [1.0, 0.0, 0.0, 1.0]
    assert len(group.payload) == len(big) and group.payload == big


# ---- errors ----


def test_errors_carry_the_status(client):
    with pytest.raises(dots_client.DotsError) as e:
        client.stats("no-such-run")
    assert e.value.code == "NOT_FOUND" and "no-such-run" in str(e.value)
    with pytest.raises(dots_client.DotsError) as e:
        client.next_batch("no-such-run", 0)
    assert e.value.code == "NOT_FOUND"
    with pytest.raises(dots_client.DotsError) as e:
        client.create_run("bad-config", {"batch_size": 0})
    assert e.value.code == "INVALID_ARGUMENT" and "batch_size" in e.value.message
    with pytest.raises(dots_client.DotsError) as e:
        client.create_run("bad-config", {"no_such_key": 1})
    assert e.value.code == "INVALID_ARGUMENT" and "no_such_key" in e.value.message
    assert "bad-config" not in [r["run_id"] for r in client.list_runs()]


def test_unreachable_server_is_unavailable():
    start = time.monotonic()
    c = dots_client.Client("127.0.0.1:1", timeout=2.0, max_attempts=3, initial_backoff=0.05)
    with pytest.raises(dots_client.DotsError) as e:
        c.list_runs()
    assert e.value.code == "UNAVAILABLE"
    assert time.monotonic() - start < 5
    c.close()


# ---- retries and the token, against a fake server ----


class FlakyDots(dots_pb2_grpc.DotsServicer):
    """Answers UNAVAILABLE to the first `failures` calls of each method, recording metadata."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = {}
        self.metadata = []
        self.largest_request = 0

    def _enter(self, name, context):
        self.calls[name] = self.calls.get(name, 0) + 1
        self.metadata.append(dict(context.invocation_metadata()))
        if self.calls[name] <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

    def GetRunStats(self, request, context):
        self._enter("GetRunStats", context)
        return dots_pb2.RunStats(step=4, pool_size=9)

    def ReportRollouts(self, request_iterator, context):
        self._enter("ReportRollouts", context)
        fragments = []
        for r in request_iterator:
            self.largest_request = max(self.largest_request, r.ByteSize())
            fragments.extend(r.groups)
        return dots_pb2.ReportRolloutsResponse(accepted=len(fragments))

    def CreateRun(self, request, context):
        self._enter("CreateRun", context)
        return dots_pb2.RunInfo(run_id=request.run_id, config_json="{}")

    def ListRuns(self, request, context):
        self._enter("ListRuns", context)
        return dots_pb2.ListRunsResponse()


@pytest.fixture
def flaky():
    servicer = FlakyDots(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    dots_pb2_grpc.add_DotsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_idempotent_calls_retry_unavailable_and_send_the_token(flaky):
    servicer, address = flaky
    with dots_client.Client(address, token="s3cret", initial_backoff=0.01) as c:
        stats = c.stats("r")
        assert stats["step"] == 4 and stats["pool_size"] == 9
        assert servicer.calls["GetRunStats"] == 3
        # A streamed report is re-sent from the start on each retry.
        result = c.report("r", 0, [dots_client.Group("k", [1, 0], 0, b"x" * (2 << 20))])
        assert result["accepted"] == 3  # 2 MiB in three fragments of at most 768 KiB
        assert servicer.calls["ReportRollouts"] == 3
        assert 0 < servicer.largest_request <= 1 << 20, "requests stay under ~1 MiB"
        # CreateRun is not idempotent: one try, the error surfaces.
        with pytest.raises(dots_client.DotsError) as e:
            c.create_run("r", {})
        assert e.value.code == "UNAVAILABLE" and e.value.message == "draining"
        assert servicer.calls["CreateRun"] == 1
    assert all(m.get("authorization") == "Bearer s3cret" for m in servicer.metadata)
    # Every call that names a run carries it as the routing header.
    assert all(m.get("x-dots-run") == "r" for m in servicer.metadata)


def test_only_calls_that_name_a_run_carry_the_routing_header(flaky):
    servicer, address = flaky
    with dots_client.Client(address, initial_backoff=0.01) as c:
        assert c.list_runs() == []
        c.stats("run-7")
    assert [m.get("x-dots-run") for m in servicer.metadata] == [None] * 3 + ["run-7"] * 3


def test_retries_stop_after_max_attempts(flaky):
    servicer, address = flaky
    with dots_client.Client(address, max_attempts=2, initial_backoff=0.01) as c:
        with pytest.raises(dots_client.DotsError) as e:
            c.stats("r")
        assert e.value.code == "UNAVAILABLE"
    assert servicer.calls["GetRunStats"] == 2
    assert all("authorization" not in m for m in servicer.metadata)
