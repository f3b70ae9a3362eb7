"""A dots cluster on loopback: 3 dots-server replicas behind the HAProxy router (scripts/cluster.sh,
deploy/haproxy/make-config.sh), driven through the router by dots_client and by dotsctl.

Checks that runs spread over the replicas exactly where dotsctl's placement says the router sends
them, that every RPC works through the router (replay payloads over 4 MiB included), that a header
naming another run is refused, that a SIGKILLed replica fails only its own runs (UNAVAILABLE) and
loses nothing it acknowledged, and that adding a replica and rebalancing (killed at random points
and rerun) moves runs whole and leaves none on two replicas.

Needs HAProxy (installed by scripts/install-deps.sh); DOTS_SERVER_BIN's directory holds dotsctl.
"""

import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time

import grpc
import numpy as np
import pytest

import dots_client
from dots.v1 import dots_pb2, dots_pb2_grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(REPO, "scripts", "cluster.sh")
CONFIG = {
    "batch_size": 8,
    "group_size": 4,
    "reference_size": 2,
    "seed": 5,
    "estimator": {"mode": "history"},
}
RUNS = [f"job-{i:02d}" for i in range(30)]


def bin_dir():
    server = os.environ.get("DOTS_SERVER_BIN")
    if not server:
        pytest.fail("DOTS_SERVER_BIN is not set (path of the dots-server binary)")
    return os.path.dirname(os.path.abspath(server))


def cluster(*args, check=True):
    env = dict(os.environ, DOTS_BIN=bin_dir())
    done = subprocess.run(
        ["bash", CLUSTER, *args], env=env, capture_output=True, text=True, timeout=180
    )
    if check and done.returncode != 0:
        pytest.fail(f"cluster.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def dotsctl(*args, check=True):
    done = subprocess.run(
        [os.path.join(bin_dir(), "dotsctl"), *args], capture_output=True, text=True, timeout=120
    )
    if check and done.returncode != 0:
        pytest.fail(f"dotsctl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


class Cluster:
    def __init__(self, directory):
        self.dir = directory

    @property
    def router(self):
        with open(os.path.join(self.dir, "router")) as f:
            return f.read().strip()

    @property
    def replicas(self):
        with open(os.path.join(self.dir, "replicas")) as f:
            return [line.strip() for line in f if line.strip()]

    def listing(self, replicas=None):
        servers = ",".join(replicas or self.replicas)
        return json.loads(dotsctl("cluster", "list", "--servers", servers).stdout)

    def pid(self, i):
        with open(os.path.join(self.dir, f"replica-{i}", "pid")) as f:
            return int(f.read())


@pytest.fixture(scope="module")
def live_cluster():
    directory = tempfile.mkdtemp(prefix="dots-cluster-")
    cluster("up", "3", directory)
    try:
        yield Cluster(directory)
    finally:
        cluster("down", directory, check=False)
        subprocess.run(["rm", "-rf", directory])


@pytest.fixture(scope="module")
def router(live_cluster):
    with dots_client.Client(live_cluster.router, timeout=30.0) as c:
        yield c


def upload_pool(client, run_id, n=40, dim=8, seed=0):
    questions = [{"key": f"q{i}", "prompt": f"{run_id} question {i}"} for i in range(n)]
    embeddings = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    assert client.upsert_questions(run_id, questions, embeddings)["added"] == n


def train_step(client, run_id, step, payload=b"p"):
    batch = client.next_batch(run_id, step, policy_version=step)
    groups = [
        dots_client.Group(item.key, [1.0, 0.0, 0.0, 1.0] if i % 2 else [1.0] * 4, step, payload)
        for i, item in enumerate(batch.items)
    ]
    return batch, client.report(run_id, step, groups)


def owners(listing):
    return {r["run_id"]: r["owner"] for r in listing["runs"]}


def test_runs_created_through_the_router_spread_where_the_placement_says(live_cluster, router):
    for run_id in RUNS:
        router.create_run(run_id, CONFIG)
    listing = live_cluster.listing()
    assert listing["misplaced"] == 0, listing  # dotsctl's placement is HAProxy's
    per_replica = {s["server"]: s["runs"] for s in listing["servers"]}
    assert sorted(per_replica) == sorted(live_cluster.replicas)
    assert min(per_replica.values()) >= 5, per_replica
    assert sum(per_replica.values()) == len(RUNS)
    for run in listing["runs"]:
        assert [c["server"] for c in run["copies"]] == [run["owner"]]
    # ListRuns names no run: the router sends it to any one replica, which lists its own runs
    # (`dotsctl cluster list` is the view of the whole cluster).
    listed = sorted(r["run_id"] for r in router.list_runs())
    by_replica = {
        s: sorted(r["run_id"] for r in listing["runs"] if r["owner"] == s) for s in per_replica
    }
    assert listed in by_replica.values()


def test_every_rpc_works_through_the_router_with_a_large_replay_payload(router):
    run_id = RUNS[0]
    upload_pool(router, run_id)
    assert router.get_run(run_id)["pool_size"] == 40
    big = np.random.default_rng(1).integers(0, 256, 5 << 20, dtype=np.uint8).tobytes()
    big_key = None
    for step in range(2):
        batch = router.next_batch(run_id, step, policy_version=step)
        groups = []
        for item in batch.items:
            if big_key is None:
                big_key = item.key
                groups.append(dots_client.Group(item.key, [1, 0, 0, 1], step, big))
            else:
                groups.append(dots_client.Group(item.key, [1, 1, 1, 1], step, b"\x00"))
        assert router.report(run_id, step, groups)["accepted"] == len(groups)
    batch = router.next_batch(run_id, 2, policy_version=2)
    assert [g.key for g in batch.replay] == [big_key]
    assert batch.replay[0].payload == big
    assert router.stats(run_id)["reported_groups"] == 16
    assert len(router.estimates(run_id)) == 40


def test_archives_pools_seals_and_deletes_work_through_the_router(live_cluster):
    router = ["--server", live_cluster.router]
    work = tempfile.mkdtemp(prefix="dots-cluster-files-")
    try:
        pool = os.path.join(work, "pool.jsonl")
        with open(pool, "w") as f:
            for i in range(50):
                f.write(json.dumps({"key": f"k{i}", "prompt": f"question {i}"}) + "\n")
        source = "pooled"
        dotsctl(*router, "run", "create", source)
        imported = json.loads(dotsctl(*router, "pool", "import", source, "--questions", pool).stdout)
        assert imported["added"] == 50
        archive = os.path.join(work, "run.dotsrun")
        dotsctl(*router, "run", "export", source, "--out", archive)
        copy = "copy-of-" + source
        assert json.loads(dotsctl(*router, "run", "import", archive, "--as", copy).stdout)[
            "pool_size"
        ] == 50
        listing = live_cluster.listing()
        placed = {r["run_id"]: r for r in listing["runs"]}
        assert [c["server"] for c in placed[copy]["copies"]] == [placed[copy]["owner"]]
        for run_id in (copy, source):
            dotsctl(*router, "run", "delete", run_id)
            assert run_id not in owners(live_cluster.listing())
    finally:
        subprocess.run(["rm", "-rf", work])


def test_a_header_naming_another_run_is_refused(live_cluster):
    with grpc.insecure_channel(live_cluster.router) as channel:
        stub = dots_pb2_grpc.DotsStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.GetRun(
                dots_pb2.GetRunRequest(run_id=RUNS[1]), metadata=[("x-dots-run", RUNS[2])], timeout=10
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "x-dots-run" in e.value.details()


def test_an_unreachable_replica_stops_a_rebalance_before_anything_moves(live_cluster):
    servers = ",".join(live_cluster.replicas + ["127.0.0.1:1"])
    before = live_cluster.listing()
    done = dotsctl("--timeout", "2", "cluster", "rebalance", "--servers", servers, check=False)
    assert done.returncode == 1
    assert "127.0.0.1:1" in done.stderr and "nothing was moved" in done.stderr
    assert live_cluster.listing() == before
    done = dotsctl("cluster", "list", "--servers", "not an address", check=False)
    assert done.returncode != 0


def test_a_killed_replica_fails_only_its_runs_and_loses_nothing_acknowledged(live_cluster, router):
    listing = live_cluster.listing()
    victim = 1
    victim_address = live_cluster.replicas[victim]
    where = owners(listing)
    mine = [r for r in RUNS[1:] if where[r] == victim_address][:2]
    others = [r for r in RUNS[1:] if where[r] != victim_address][:2]
    for run_id in mine + others:
        upload_pool(router, run_id)

    acknowledged = {r: set() for r in mine}
    other_errors = []
    stop = threading.Event()

    def trainer(run_id):  # retries through the outage (UNAVAILABLE is retried by the client)
        with dots_client.Client(live_cluster.router, timeout=60.0, max_attempts=1000) as c:
            step = 0
            while not stop.is_set() and step < 200:
                try:
                    batch, result = train_step(c, run_id, step)
                except dots_client.DotsError as error:
                    if error.code != "UNAVAILABLE":
                        raise
                    continue
                acknowledged[run_id].update((step, item.key) for item in batch.items)
                step += 1

    def bystander(run_id):  # must never see an error
        with dots_client.Client(live_cluster.router, timeout=20.0, max_attempts=1) as c:
            step = 0
            while not stop.is_set():
                try:
                    train_step(c, run_id, step)
                    step += 1
                except Exception as error:  # noqa: BLE001
                    other_errors.append(f"{run_id} step {step}: {error}")
                    return

    threads = [threading.Thread(target=trainer, args=(r,)) for r in mine]
    threads += [threading.Thread(target=bystander, args=(r,)) for r in others]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(live_cluster.pid(victim), signal.SIGKILL)
    time.sleep(0.5)
    with dots_client.Client(live_cluster.router, timeout=5.0, max_attempts=1) as probe:
        with pytest.raises(dots_client.DotsError) as e:
            probe.stats(mine[0])
        assert e.value.code == "UNAVAILABLE", e.value
        assert probe.stats(others[0])["pool_size"] == 40
    time.sleep(1.0)
    cluster("restart", live_cluster.dir, str(victim))
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not other_errors, other_errors
    for run_id in mine:
        stats = router.stats(run_id)
        # Every acknowledged group is there exactly once (repeats of a lost answer are duplicates).
        assert stats["reported_groups"] == len(acknowledged[run_id]), (run_id, stats)
        assert len(acknowledged[run_id]) > 0


def snapshot(client, run_ids):
    """Stats and the next batch of every run: what must survive a move unchanged."""
    out = {}
    for run_id in run_ids:
        stats = client.stats(run_id)
        step = stats["step"] + 1
        batch = None
        if stats["pool_size"]:
            batch = client.next_batch(run_id, step, policy_version=step)
            stats = client.stats(run_id)
        out[run_id] = (stats, step, batch)
    return out


def test_adding_a_replica_and_rebalancing_moves_runs_whole_even_when_interrupted(
    live_cluster, router
):
    before = snapshot(router, RUNS)
    cluster("add", live_cluster.dir)
    replicas = live_cluster.replicas
    assert len(replicas) == 4
    servers = ",".join(replicas)
    assert live_cluster.listing(replicas)["misplaced"] > 0
    seed = int(os.environ.get("DOTS_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"rebalance interruptions: seed {seed} (DOTS_TEST_SEED={seed} replays them)")
    killed = 0
    for attempt in range(8):
        process = subprocess.Popen(
            [os.path.join(bin_dir(), "dotsctl"), "cluster", "rebalance", "--servers", servers],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.15))
        if process.poll() is None:
            process.kill()
            killed += 1
        process.wait()
        # Whatever the interruption left: no run lost, none live on two replicas.
        listing = live_cluster.listing(replicas)
        assert sorted(r["run_id"] for r in listing["runs"]) == sorted(RUNS)
        for run in listing["runs"]:
            assert sum(not c["sealed"] for c in run["copies"]) <= 1, run
        if killed >= 5:
            break
    assert killed >= 5, f"only {killed} of the rebalances were still running when killed"
    # The procedure for a cluster in use: move keeping the sealed sources, switch the router,
    # then delete the sealed sources.
    done = json.loads(
        dotsctl("cluster", "rebalance", "--keep-sealed-sources", "--servers", servers).stdout
    )
    assert done["conflicts"] == []
    for run in live_cluster.listing(replicas)["runs"]:
        live = [c["server"] for c in run["copies"] if not c["sealed"]]
        assert live == [run["owner"]], run
    cluster("reload", live_cluster.dir)
    done = json.loads(dotsctl("cluster", "rebalance", "--servers", servers).stdout)
    assert done["conflicts"] == [] and done["moved"] == []
    listing = live_cluster.listing(replicas)
    assert listing["misplaced"] == 0
    assert {s["server"]: s["runs"] for s in listing["servers"]}[replicas[3]] > 0
    for run in listing["runs"]:
        assert [c["server"] for c in run["copies"]] == [run["owner"]]
        assert not run["copies"][0]["sealed"]
    for run_id in RUNS:
        stats, step, batch = before[run_id]
        now = router.stats(run_id)
        for key in ("step", "round", "pool_size", "reported_groups", "duplicate_reports"):
            assert now[key] == stats[key], (run_id, key)
        if batch is not None:
            again = router.next_batch(run_id, step, policy_version=step)
            assert again == batch, run_id
    # And the moved runs go on training through the router.
    moved = [r for r in RUNS if before[r][2] is not None][:2]
    for run_id in moved:
        step = before[run_id][1]
        batch, result = train_step(router, run_id, step)
        assert result["accepted"] == len(batch.items)


def test_a_draining_replica_leaves_the_router_before_it_exits(live_cluster):
    import urllib.request

    with open(os.path.join(live_cluster.dir, "router.stats")) as f:
        stats = f.read().strip()

    def state(replica):
        rows = urllib.request.urlopen(f"http://{stats}/stats;csv", timeout=5).read().decode()
        for row in rows.splitlines():
            if row.startswith(f"any,dots-{replica},"):
                return row.split(",")[17]  # the CSV's status column
        return None

    victim = 2
    assert state(victim) == "UP"
    os.kill(live_cluster.pid(victim), signal.SIGTERM)  # drains, then exits
    # Calls that name no run keep working: the router takes the replica out of rotation within
    # its check interval (2 x 1 s), refused connections are redispatched, and the few calls that
    # reach it in between get UNAVAILABLE from the draining server, which clients retry.
    errors = []
    with dots_client.Client(live_cluster.router, timeout=5.0) as c:
        deadline = time.monotonic() + 15  # the check interval is 1 s, fall 2: slack for load
        while time.monotonic() < deadline:
            try:
                c.list_runs()
            except dots_client.DotsError as error:
                errors.append(str(error))
            if not state(victim).startswith("UP"):
                break
            time.sleep(0.05)
        for _ in range(20):
            try:
                c.list_runs()
            except dots_client.DotsError as error:
                errors.append(str(error))
    assert not state(victim).startswith("UP"), state(victim)
    assert not errors, errors


def test_cluster_sh_without_haproxy_says_how_to_install_it():
    env = dict(os.environ, DOTS_BIN=bin_dir(), HAPROXY="/nonexistent/haproxy")
    directory = tempfile.mkdtemp(prefix="dots-cluster-nohaproxy-")
    try:
        done = subprocess.run(
            ["bash", CLUSTER, "up", "1", directory], env=env, capture_output=True, text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert "apt-get install haproxy" in done.stderr
        assert not os.path.exists(os.path.join(directory, "replicas")), "nothing started"
    finally:
        subprocess.run(["rm", "-rf", directory])
