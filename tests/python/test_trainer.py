"""Tests of dots_client.trainer.StepIterator against a live dots-server (conftest.py)."""

import threading

import numpy as np
import pytest

import dots_client
from dots_client import StepIterator

CONFIG = {
    "batch_size": 8,
    "group_size": 4,
    "reference_size": 2,
    "seed": 5,
    "estimator": {"mode": "history"},
}


def new_run(client, run_id, config=CONFIG, n=60):
    client.create_run(run_id, config)
    questions = [{"key": f"q{i}", "prompt": f"question {i}"} for i in range(n)]
    embeddings = np.random.default_rng(1).standard_normal((n, 6)).astype(np.float32)
    assert client.upsert_questions(run_id, questions, embeddings)["rejected"] == []


def rewards_for(key, step):
    """Deterministic rewards: every other question informative, the rest all-correct."""
    return [1.0, 0.0, 1.0, 0.0] if int(key[1:]) % 2 == 0 else [1.0, 1.0, 1.0, 1.0]


def payload_for(key, step):
    return f"{key}@{step}".encode() + bytes(range(256))


def report_all(step):
    return step.report(
        [step.group(it.key, rewards_for(it.key, step.step), payload_for(it.key, step.step))
         for it in step.items]
    )


def snapshot(step):
    return (step.step, [(i.key, i.role) for i in step.items],
            [(g.key, g.step, g.policy_version, tuple(g.rewards), g.payload) for g in step.replay])


def test_iterates_steps_and_reports(client):
    new_run(client, "iter")
    seen = []
    for step in StepIterator(client, "iter", num_steps=6, policy_version=lambda s: 10 + s):
        assert step.policy_version == 10 + step.step
        assert not step.reference_batch
        assert len(step.items) + len(step.replay) == 8
        assert step.batch == client.next_batch("iter", step.step, policy_version=10 + step.step)
        result = report_all(step)
        assert result == {"accepted": len(step.items), "duplicates": 0, "rejected": []}
        assert step.reported
        for g in step.replay:
            # Replayed groups come back with the behaviour version and payload of their step.
            assert g.policy_version == 10 + g.step and g.payload == payload_for(g.key, g.step)
            assert rewards_for(g.key, g.step) == g.rewards and g.step < step.step
        seen.append(step.step)
    assert seen == [0, 1, 2, 3, 4, 5]
    stats = client.stats("iter")
    assert stats["step"] == 5 and stats["policy_version"] == 15
    assert stats["replayed_groups"] > 0, "rounds after the first replay informative groups"


def test_resume_from_a_checkpoint_replays_identical_steps(client):
    new_run(client, "resume")
    first = {}
    it = StepIterator(client, "resume", num_steps=6)
    for step in it:
        first[step.step] = snapshot(step)
        report_all(step)
        if step.step == 4:
            break  # "crash" after reporting step 4, before training step 5

    # Restart from the checkpoint taken before step 3: steps 3 and 4 come back identically
    # (replay payloads included), their reports count as duplicates, and training goes on.
    resumed = StepIterator(client, "resume", start_step=3, num_steps=4)
    steps = []
    for step in resumed:
        if step.step in first:
            assert snapshot(step) == first[step.step]
            result = report_all(step)
            assert result["duplicates"] == len(step.items) and result["accepted"] == 0
        else:
            assert report_all(step)["accepted"] == len(step.items)
        steps.append(step.step)
    assert steps == [3, 4, 5, 6]
    assert client.stats("resume")["duplicate_reports"] == len(first[3][1]) + len(first[4][1])


def test_refuses_to_advance_past_an_unreported_step(client):
    new_run(client, "forgot")
    it = StepIterator(client, "forgot")
    step = next(it)
    with pytest.raises(RuntimeError, match="step 0 was not reported"):
        next(it)
    report_all(step)
    step = next(it)
    assert step.step == 1
    report_all(step)
    # Without the check, the server is the one that refuses, once a step runs more than a
    # round (2 steps) ahead of the last reported step (1): at once, not after a wait.
    lax = StepIterator(client, "forgot", start_step=2, require_report=False, wait_seconds=5)
    assert next(lax).step == 2 and next(lax).step == 3
    with pytest.raises(dots_client.DotsError) as e:
        next(lax)
    assert e.value.code == "FAILED_PRECONDITION" and "report" in e.value.message


def test_strict_report_raises_on_rejected_groups_but_applies_the_rest(client):
    new_run(client, "strict")
    step = next(StepIterator(client, "strict"))
    good = step.group(step.items[0].key, [1, 0, 0, 1])
    bad_count = step.group(step.items[1].key, [1, 0])  # group_size is 4
    unknown = step.group("not-handed-out", [1, 0, 0, 1])
    with pytest.raises(dots_client.DotsError) as e:
        step.report([good, bad_count, unknown])
    assert e.value.code == "INVALID_ARGUMENT"
    assert step.items[1].key in e.value.message and "not-handed-out" in e.value.message
    assert not step.reported
    assert step.report_result["accepted"] == 1
    # Fixing the mistake and reporting again works; the good group is now a duplicate.
    rest = [step.group(it.key, [1, 1, 0, 0]) for it in step.items[1:]]
    result = step.report([good] + rest)
    assert result == {"accepted": len(rest), "duplicates": 1, "rejected": []}
    assert step.reported
    # Lenient mode returns the rejections instead.
    lenient = StepIterator(client, "strict", start_step=1, strict=False)
    step = next(lenient)
    assert len(step.report([step.group("nope", [1, 0, 0, 1])])["rejected"]) == 1


def test_two_ranks_split_every_batch_and_wait_for_each_other(server):
    # A short client timeout makes the faster rank's NextBatch give up while the slow rank is
    # still rolling out, so the iterator's re-asking path is exercised for real.
    with dots_client.Client(server, timeout=20.0) as setup:
        new_run(setup, "ranks")
        full = {s: setup.next_batch("ranks", s) for s in (0, 1)}
    slices = {0: {}, 1: {}}
    waits = {}
    errors = []

    def worker(rank, delay):
        try:
            with dots_client.Client(server, timeout=0.5, max_attempts=1) as c:
                it = StepIterator(c, "ranks", rank=rank, world_size=2, num_steps=4,
                                  wait_seconds=20)
                for step in it:
                    slices[rank][step.step] = snapshot(step)
                    if delay and step.step == 1:
                        threading.Event().wait(delay)  # this rank is slow at the round's end
                    report_all(step)
                waits[rank] = it.waits
        except Exception as e:  # surfaced below
            errors.append((rank, e))

    threads = [threading.Thread(target=worker, args=(r, d)) for r, d in ((0, 0.0), (1, 1.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert waits[0] >= 1, "rank 0 re-asked for step 2 while rank 1 was still rolling out"
    assert sorted(slices[0]) == sorted(slices[1]) == [0, 1, 2, 3]
    for s in range(4):
        keys0 = [k for k, _ in slices[0][s][1]]
        keys1 = [k for k, _ in slices[1][s][1]]
        assert not set(keys0) & set(keys1), "rank slices are disjoint"
        if s in full:
            assert keys0 + keys1 == [i.key for i in full[s].items], "contiguous slices"
    with dots_client.Client(server) as c:
        assert c.stats("ranks")["leases_outstanding"] == 0


def test_paper_reference_mode_yields_the_reference_batch_first(client):
    new_run(client, "paper", dict(CONFIG, reference_mode="paper"))
    it = StepIterator(client, "paper", num_steps=3)
    kinds = []
    for step in it:
        kinds.append((step.step, step.reference_batch, len(step.items)))
        report_all(step)
    # Round 0: reference batch of K = 2, then steps 0 and 1; round 1: reference, then step 2.
    assert kinds[0] == (0, True, 2)
    assert kinds[1][:2] == (0, False) and kinds[2][:2] == (1, False)
    assert kinds[3] == (2, True, 2) and kinds[4][:2] == (2, False)
    assert len(kinds) == 5


def test_argument_errors(client):
    with pytest.raises(ValueError, match="rank"):
        StepIterator(client, "x", rank=2, world_size=2)
    with pytest.raises(ValueError, match="start_step"):
        StepIterator(client, "x", start_step=-1)
    with pytest.raises(dots_client.DotsError) as e:
        next(StepIterator(client, "no-such-run"))
    assert e.value.code == "NOT_FOUND"


def test_paper_mode_ranks_wait_for_the_whole_reference_batch(server):
    with dots_client.Client(server, timeout=20.0) as setup:
        new_run(setup, "paper-ranks", dict(CONFIG, reference_mode="paper"))
    kinds = {0: [], 1: []}
    waits = {}
    errors = []

    def worker(rank, delay):
        try:
            with dots_client.Client(server, timeout=20.0) as c:
                it = StepIterator(c, "paper-ranks", rank=rank, world_size=2, num_steps=2)
                for step in it:
                    kinds[rank].append((step.step, step.reference_batch))
                    if delay and step.reference_batch:
                        threading.Event().wait(delay)  # slow to report its reference slice
                    report_all(step)
                waits[rank] = it.waits
        except Exception as e:  # surfaced below
            errors.append((rank, e))

    threads = [threading.Thread(target=worker, args=(r, d)) for r, d in ((0, 0.0), (1, 0.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    # Each rank rolls out its slice of the reference batch once, however long the other takes.
    assert kinds[0] == kinds[1] == [(0, True), (0, False), (1, False)]
    assert waits[0] >= 1
