"""dots_client.verl in each supported verl version and trainer (tests/python/fake_verl) against
a live dots-server: every step's rewards arrive exactly once, a restarted trainer resumes the
same batches, and configurations that cannot report are refused at start-up."""

import importlib
import io
import json
import os
import sys
import types

import numpy as np
import pytest

import dots_client
from dots_client import _verl_support as support
import fake_verl
from fake_verl import legacy, v1

ADAPTER = "pkg://dots_client.verl"
ADAPTER_FILE = os.path.join(os.path.dirname(dots_client.__file__), "verl.py")
B, G, N = 4, 4, 40

RUN_CONFIG = {"batch_size": B, "group_size": G, "reference_size": 2, "seed": 9,
              "estimator": {"mode": "history"}, "replay": {"enabled": False}}

# (verl version, trainer): legacy = RayPPOTrainer (trainer.use_v1=False from 0.9.0), with the
# rollout in sync or async (agent loop) mode where the version has both; v1 = V1 sync trainer.
CASES = [("0.5.0", "legacy"), ("0.5.0", "legacy-async"), ("0.6.0", "legacy"),
         ("0.6.1", "legacy-async"), ("0.7.0", "legacy"), ("0.7.1", "legacy"),
         ("0.8.0", "legacy"), ("0.9.0", "legacy"), ("0.9.0", "v1"),
         ("0.10.0.dev", "legacy"), ("0.10.0.dev", "v1")]


def new_process(version):
    """What a fresh trainer process sees: verl `version`, no adapter module, no datasets."""
    fake_verl.install(version)
    support._DATASETS.clear()


@pytest.fixture(autouse=True)
def cleanup():
    yield
    fake_verl.uninstall()
    support._DATASETS.clear()


def write_rows(path, indices):
    with open(path, "w") as f:
        for i in indices:
            f.write(json.dumps({
                "data_source": "toy",
                "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
                "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
                "extra_info": {"index": i, "split": "train"},
            }) + "\n")


@pytest.fixture
def files(tmp_path):
    train, val = str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl")
    write_rows(train, range(N))
    write_rows(val, range(1000, 1004))
    return train, val


def new_run(client, run_id, files, config=RUN_CONFIG):
    client.create_run(run_id, config)
    with open(files[0]) as f:
        rows = [json.loads(line) for line in f]
    from dots_client.verl import pool_from_rows
    client.upsert_questions(run_id, pool_from_rows(rows))


def job_config(server, files, run_id, steps, version, trainer, edit=None):
    """The whole verl config a user of `version` and `trainer` writes (module docstring)."""
    spec_ = fake_verl.versions._SPECS[version]
    use_v1 = trainer == "v1"
    root = {
        "data": {"train_files": files[0], "val_files": files[1], "train_batch_size": B,
                 "shuffle": False, "dataloader_num_workers": 0, "max_prompt_length": 32,
                 "custom_cls": {"path": ADAPTER, "name": "DotsDataset"},
                 "sampler": {"class_path": None, "class_name": None},
                 "dots": {"target": server, "run_id": run_id, "num_steps": steps}},
        "trainer": {"total_epochs": 1, "save_freq": -1, "total_training_steps": None,
                    "use_v1": use_v1,
                    "v1": {"trainer_mode": "sync", "sync": {},
                           "sampler": {"custom_sampler": {"path": None, "name": None},
                                       "sync_refill_failed_groups": False,
                                       "sampler_kwargs": {}}}},
        "actor_rollout_ref": {"rollout": {"n": G}},
        "reward": {"reward_model": {"enable": False, "enable_resource_pool": False}},
        "algorithm": {"filter_groups": {"enable": False}},
    }
    if use_v1:
        root["trainer"]["v1"]["sampler"]["custom_sampler"] = {"path": ADAPTER,
                                                              "name": "DotsReplayBuffer"}
    elif spec_.curriculum_sampler:
        root["data"]["sampler"] = {"class_path": ADAPTER, "class_name": "DotsSampler"}
    else:
        root["trainer"]["total_training_steps"] = steps + 1
    if edit:
        edit(root)
    return fake_verl.Config.of(root)


def rewards_of(index):
    """The toy policy: index % 3 == 0 solved, == 1 failed, else half."""
    return {0: [1.0] * G, 1: [0.0] * G, 2: [1.0, 0.0, 1.0, 0.0]}[int(index) % 3]


def rollout(extra_info, sample, step):
    return rewards_of(extra_info["index"])[sample], 1 + sample, -(1.0 + sample)


def make_trainer(version, trainer, config, rollout_fn=rollout, checkpoints=None):
    if trainer == "v1":
        t = v1.PPOTrainer(config, rollout_fn, checkpoints)
        t.init()
        return t, t.train_dataset
    t = legacy.RayPPOTrainer(config, rollout_fn, checkpoints, async_mode=trainer.endswith("async"))
    return t, t.train_dataset


def trained_keys(t, trainer, global_step):
    """The question keys the trainer trained on at `global_step`, as sets (V1 gives rows in
    completion order) or in order (legacy)."""
    if trainer == "v1":
        return sorted({info["dots_key"] for info in t.trained[global_step]})
    return [info["dots_key"] for info in t.prompts_per_step[global_step]]


def served_keys(client, run_id, step, trainer):
    keys = [i.key for i in client.next_batch(run_id, step).items]
    return sorted(keys) if trainer == "v1" else keys


@pytest.mark.parametrize("version, trainer", CASES)
def test_every_step_reported_exactly_once_and_restart_resumes(client, server, files, version,
                                                              trainer):
    new_process(version)
    run = f"v{version}-{trainer}".replace(".", "_")
    steps = 4
    new_run(client, run, files)
    t, train = make_trainer(version, trainer, job_config(server, files, run, steps, version,
                                                         trainer))
    t.fit()
    assert train.reported_steps == list(range(steps))
    for global_step in range(1, steps + 1):
        assert trained_keys(t, trainer, global_step) == served_keys(client, run, global_step - 1,
                                                                    trainer)
    stats = client.stats(run)
    keys = [k for s in range(steps) for k in served_keys(client, run, s, trainer)]
    assert stats["reported_groups"] == steps * B == len(keys)
    assert stats["duplicate_reports"] == 0
    assert stats["leases_outstanding"] == 0
    # Rows reach the hooks reordered; these hold only if each reward stayed with its question.
    assert stats["solve_all_groups"] == sum(int(k) % 3 == 0 for k in keys)
    assert stats["solve_none_groups"] == sum(int(k) % 3 == 1 for k in keys)
    assert stats["effective_groups"] == sum(int(k) % 3 == 2 for k in keys)

    # Crash at global step 4 (dots step 3) after a checkpoint at step 2; a new process resumes.
    run = run + "-r"
    steps = 5
    new_run(client, run, files)
    config = job_config(server, files, run, steps, version, trainer,
                        edit=lambda c: c["trainer"].update(save_freq=2))
    checkpoints = {}

    def crashing(extra_info, sample, step):
        if step == 4:
            raise RuntimeError("node lost")
        return rollout(extra_info, sample, step)

    first, train1 = make_trainer(version, trainer, config, crashing, checkpoints)
    with pytest.raises(RuntimeError, match="node lost"):
        first.fit()
    assert checkpoints["latest"]["global_steps"] == 2
    assert train1.reported_steps == [0, 1, 2]

    new_process(version)
    config = job_config(server, files, run, steps, version, trainer,
                        edit=lambda c: c["trainer"].update(save_freq=2))
    second, train2 = make_trainer(version, trainer, config, rollout, checkpoints)
    second.fit()
    assert train2.reported_steps == [2, 3, 4]
    # Global step 3 (dots step 2) is trained again on exactly the batch served before the crash.
    assert trained_keys(second, trainer, 3) == trained_keys(first, trainer, 3)
    stats = client.stats(run)
    assert stats["reported_groups"] == steps * B
    assert stats["duplicate_reports"] == B, "dots step 2 was reported before the crash"
    assert stats["leases_outstanding"] == 0


def test_file_path_loading_and_payload(client, server, files):
    """data.custom_cls / data.sampler given as file paths (a fresh module per load) still
    report through one dataset; the payload keeps each rollout's length and log-prob sum."""
    new_process("0.6.1")
    new_run(client, "file-path", files)

    def by_file(c):
        c["data"]["custom_cls"]["path"] = ADAPTER_FILE
        c["data"]["sampler"] = {"class_path": ADAPTER_FILE, "class_name": "DotsSampler"}

    config = job_config(server, files, "file-path", 2, "0.6.1", "legacy", edit=by_file)
    t, train = make_trainer("0.6.1", "legacy", config)
    assert type(train).__module__ == "custom_module"
    sent = []
    real_report = train.client.report
    train.client.report = lambda run_id, step, groups: sent.extend(groups) or real_report(
        run_id, step, groups)
    t.fit()
    assert len(sent) == 2 * B
    for g in sent:
        with np.load(io.BytesIO(g.payload)) as z:
            rollouts = sorted(zip(z["response_length"].tolist(), g.rewards,
                                  z["logprob_sum"].tolist()))
        want = [(1 + s, r, -(1.0 + s)) for s, r in enumerate(rewards_of(g.key))]
        assert [(n, r) for n, r, _ in rollouts] == [(n, r) for n, r, _ in want]
        np.testing.assert_allclose([lp for *_, lp in rollouts], [lp for *_, lp in want],
                                   rtol=1e-6)


def test_reward_range_maps_scores_onto_0_1(client, server, files):
    new_process("0.8.0")
    new_run(client, "range", files)
    config = job_config(server, files, "range", 2, "0.8.0", "legacy",
                        edit=lambda c: c["data"]["dots"].update(reward_range=[-1, 1]))

    def signed(extra_info, sample, step):
        r, length, lp = rollout(extra_info, sample, step)
        return 2 * r - 1, length, lp

    t, _ = make_trainer("0.8.0", "legacy", config, signed)
    t.fit()
    keys = [i.key for s in range(2) for i in client.next_batch("range", s).items]
    assert client.stats("range")["solve_all_groups"] == sum(int(k) % 3 == 0 for k in keys)

    new_process("0.8.0")
    new_run(client, "range2", files)
    config = job_config(server, files, "range2", 2, "0.8.0", "legacy")
    t, _ = make_trainer("0.8.0", "legacy", config, lambda e, s, g: (3.0, 1, -1.0))
    with pytest.raises(ValueError, match=r"outside data\.dots\.reward_range"):
        t.fit()


def set_path(path, value):
    def edit(c):
        node = c
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


# (version, trainer, edit of the config, run config, message naming the setting)
BAD = [
    ("0.8.0", "legacy", set_path("data.shuffle", True), None, r"data\.shuffle"),
    ("0.8.0", "legacy", set_path("data.dataloader_num_workers", 4), None,
     "dataloader_num_workers"),
    ("0.8.0", "legacy", set_path("data.gen_batch_size", 8), None, r"data\.gen_batch_size"),
    ("0.8.0", "legacy", set_path("data.train_batch_size", 8), None, "train_batch_size is 8"),
    ("0.8.0", "legacy", set_path("data.dots.run_id", None), None, r"data\.dots\.run_id"),
    ("0.8.0", "legacy", set_path("trainer.total_training_steps", None), None,
     r"trainer\.total_training_steps=None"),
    ("0.9.0", "legacy", set_path("trainer.total_training_steps", 2), None,
     r"trainer\.total_training_steps=2"),
    ("0.8.0", "legacy", set_path("trainer.total_epochs", 2), None, r"trainer\.total_epochs"),
    ("0.8.0", "legacy", set_path("actor_rollout_ref.rollout.n", 8), None,
     r"actor_rollout_ref\.rollout\.n"),
    ("0.8.0", "legacy", None, dict(RUN_CONFIG, replay={"enabled": True}), r"replay\.enabled"),
    ("0.8.0", "legacy", None, dict(RUN_CONFIG, reference_mode="paper"), "paper"),
    ("0.6.1", "legacy", set_path("data.sampler", {"class_path": None, "class_name": None}),
     None, r"data\.sampler\.class_path"),
    ("0.7.1", "legacy", set_path("data.sampler.class_name", "Other"), None,
     r"data\.sampler\.class_name=DotsSampler"),
    ("0.9.0", "v1", set_path("trainer.v1.sampler.custom_sampler",
                             {"path": None, "name": None}), None,
     r"trainer\.v1\.sampler\.custom_sampler\.name"),
    ("0.10.0.dev", "v1", set_path("algorithm.filter_groups.enable", True), None,
     r"algorithm\.filter_groups\.enable"),
    ("0.9.0", "v1", set_path("trainer.v1.sampler.sync_refill_failed_groups", True), None,
     "sync_refill_failed_groups"),
    ("0.9.0", "v1", set_path("reward.reward_model.enable", True), None,
     r"reward\.reward_model\.enable_resource_pool"),
    ("0.9.0", "v1", set_path("trainer.v1.trainer_mode", "colocate_async"), None,
     r"trainer\.v1\.trainer_mode=colocate_async"),
    ("0.10.0.dev", "v1", set_path("trainer.v1.trainer_mode", "separate_async"), None,
     r"trainer\.v1\.trainer_mode=separate_async"),
]


@pytest.mark.parametrize("version, trainer, edit, run_config, message", BAD)
def test_configurations_that_cannot_report_are_refused_at_start_up(
        client, server, files, version, trainer, edit, run_config, message):
    new_process(version)
    run = f"bad-{abs(hash((version, trainer, message, str(run_config))))}"
    new_run(client, run, files, run_config or RUN_CONFIG)
    config = job_config(server, files, run, 2, version, trainer, edit)
    before = client.stats(run)["leases_outstanding"]
    with pytest.raises(ValueError, match=message):
        make_trainer(version, trainer, config)
    assert client.stats(run)["leases_outstanding"] == before, "nothing was served"


def test_verl_outside_the_supported_range_is_refused(client, server, files):
    new_process("0.4.1")  # no pkg:// loading in 0.4.1: the adapter is given as a file
    new_run(client, "old", files)
    config = job_config(server, files, "old", 2, "0.4.1", "legacy",
                        edit=set_path("data.custom_cls.path", ADAPTER_FILE))
    with pytest.raises(ValueError, match=r"verl 0\.4\.1 is not supported.*0\.5\.0 <= verl"):
        make_trainer("0.4.1", "legacy", config)
    legacy_of = lambda v: support.legacy_mechanism(support.parse_version(v))  # noqa: E731
    assert legacy_of("0.4.1") is None and legacy_of("0.10.0") is None
    assert legacy_of("0.5.0") == legacy_of("0.7.1") == support.CURRICULUM_SAMPLER
    assert legacy_of("0.8.0") == legacy_of("0.10.0.dev") == support.ON_BATCH_END
    assert support.has_v1_trainer(support.parse_version("0.9.0"))
    assert not support.has_v1_trainer(support.parse_version("0.8.0"))


def test_v1_rewrite_of_gen_batch_size_is_caught_before_anything_is_served(client, server,
                                                                          files):
    """V1 sets data.gen_batch_size = 1 after building the datasets (async modes, DAPO refills):
    the first item re-checks the data config."""
    new_process("0.9.0")
    new_run(client, "late", files)
    config = job_config(server, files, "late", 2, "0.9.0", "v1")
    t, train = make_trainer("0.9.0", "v1", config)
    config.data.gen_batch_size = 1
    with pytest.raises(ValueError, match=r"data\.gen_batch_size=1"):
        train[0]
    assert client.stats("late")["leases_outstanding"] == 0


def test_an_unwired_hook_stops_the_next_step(client, server, files):
    """A verl config whose data node has no parent (so trainer settings cannot be checked) and
    no hook: the second step refuses to start, naming the hook setting."""
    new_process("0.8.0")
    new_run(client, "unwired", files)
    config = job_config(server, files, "unwired", 3, "0.8.0", "legacy")
    data = fake_verl.Config.of(dict(config.data))  # detached: no parent
    train = fake_verl.create_rl_dataset(data.train_files, data, None, None)
    assert train[0]["extra_info"]["dots_step"] == 0
    with pytest.raises(RuntimeError, match=r"trainer\.total_training_steps"):
        train[B]


def test_missing_rewards_are_an_error(client, server, files):
    new_process("0.8.0")
    new_run(client, "norew", files)
    config = job_config(server, files, "norew", 2, "0.8.0", "legacy")
    t, train = make_trainer("0.8.0", "legacy", config)
    rows = [train[i] for i in range(B)]
    batch = fake_verl.DataProto.from_single_dict(legacy.core.collate_fn(rows))
    with pytest.raises(ValueError, match="token_level_scores"):
        train.on_batch_end(batch)

    new_process("0.9.0")
    new_run(client, "norew1", files)
    t, train = make_trainer("0.9.0", "v1", job_config(server, files, "norew1", 2, "0.9.0", "v1"))
    info = train[0]["extra_info"]
    v1.kv_put("u_0_0", "train", {"status": "success"}, {"extra_info": info,
                                                        "response_mask": np.ones(3)})
    with pytest.raises(RuntimeError, match=r"rm_scores.*enable_resource_pool"):
        t.replay_buffer._report(v1.KVBatchMeta("train", ["u_0_0"], [{}]))


def test_validation_dataset_passes_rows_through(client, server, files):
    new_process("0.10.0.dev")
    new_run(client, "val", files)
    t, _ = make_trainer("0.10.0.dev", "v1", job_config(server, files, "val", 2, "0.10.0.dev",
                                                       "v1"))
    assert not t.val_dataset.selecting and len(t.val_dataset) == 4
    row = t.val_dataset[3]
    assert row["extra_info"] == {"index": 1003, "split": "train"}
    assert t._validate() == 4  # V1 validation samples the "val" partition: nothing reported
    assert client.stats("val")["reported_groups"] == 0


def test_torch_dataset_base_when_torch_is_importable():
    """verl requires issubclass(custom_cls, torch.utils.data.Dataset); torch is optional here."""
    import dots_client.verl as adapter

    try:
        from torch.utils.data import Dataset
    except ImportError:
        Dataset = None
    if Dataset is None:
        assert adapter.DotsDataset.__mro__[1] is object
    else:
        assert issubclass(adapter.DotsDataset, Dataset)
    stand_in = types.ModuleType("torch.utils.data")

    class StandIn:
        pass

    stand_in.Dataset = StandIn
    names = ("torch", "torch.utils", "torch.utils.data")
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update({"torch": types.ModuleType("torch"),
                        "torch.utils": types.ModuleType("torch.utils"),
                        "torch.utils.data": stand_in})
    try:
        assert issubclass(importlib.reload(adapter).DotsDataset, StandIn)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        sys.modules.pop("dots_client.verl", None)


def test_wrap_serves_steps_without_verl(client, files):
    """Without verl the module imports; `wrap` serves a custom loop."""
    fake_verl.uninstall()
    import dots_client.verl as adapter

    assert adapter.VERL_VERSION is None and adapter.LEGACY_MECHANISM is None
    new_run(client, "wrap", files)
    with open(files[0]) as f:
        rows = [json.loads(line) for line in f]
    ds = adapter.DotsDataset.wrap(rows, client, "wrap", batch_size=B, num_steps=3)
    batch = client.next_batch("wrap", 0)
    assert [ds[i]["extra_info"]["dots_key"] for i in range(B)] == [i.key for i in batch.items]
    keys = [i.key for i in batch.items for _ in range(G)]
    rewards = np.array([r for i in batch.items for r in rewards_of(i.key)])
    ds.report_rows(keys, [0] * len(keys), rewards)
    ds.report_rows(keys, [0] * len(keys), rewards)  # already reported: nothing sent
    assert ds[B]["extra_info"]["dots_step"] == 1
    assert client.stats("wrap")["duplicate_reports"] == 0
    with pytest.raises(ImportError, match="verl is not importable"):
        adapter.DotsDataset(data_files=files[0], config={})
