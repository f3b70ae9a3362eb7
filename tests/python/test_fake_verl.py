"""Tests of the verl fakes themselves (tests/python/fake_verl): each claim they make about a
verl version, as read from verl's source, checked on the fake. No dots server involved."""

import importlib
import json
import os
import sys

import numpy as np
import pytest

import fake_verl
from fake_verl import core, legacy, v1

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "verl_probe_dataset.py")
B, G = 2, 2


@pytest.fixture(autouse=True)
def cleanup():
    yield
    fake_verl.uninstall()


@pytest.fixture
def files(tmp_path):
    paths = []
    for name, indices in (("train", range(6)), ("val", range(100, 102))):
        path = str(tmp_path / f"{name}.jsonl")
        with open(path, "w") as f:
            for i in indices:
                f.write(json.dumps({"data_source": "toy",
                                    "prompt": [{"role": "user", "content": f"q{i}"}],
                                    "reward_model": {"ground_truth": str(i)},
                                    "extra_info": {"index": i}}) + "\n")
        paths.append(path)
    return paths


def probe_config(files, steps=3, **trainer):
    return fake_verl.Config.of({
        "data": {"train_files": files[0], "val_files": files[1], "train_batch_size": B,
                 "shuffle": False, "dataloader_num_workers": 0,
                 "custom_cls": {"path": PROBE, "name": "ProbeDataset"}},
        "trainer": dict({"total_epochs": 1, "save_freq": -1}, **trainer),
        "actor_rollout_ref": {"rollout": {"n": G}},
    })


def rollout(extra_info, sample, step):
    return 1.0, 1, 0.0


# Which verl versions bring a column the dataset added (top level) to the hooks, as read:
# v0.5.0 pops a fixed list of keys only; v0.6.x pops all but the reward keys, and only the
# sync rollout returns them; v0.7.0's agent loop never copies them back; from v0.7.1 it does
# only without reward-loop workers (a colocated reward model).
TOP_LEVEL_SURVIVES = [
    ("0.5.0", dict(async_mode=False), True), ("0.5.0", dict(async_mode=True), True),
    ("0.6.0", dict(async_mode=False), True), ("0.6.0", dict(async_mode=True), False),
    ("0.6.1", dict(async_mode=True), False), ("0.7.0", {}, False),
    ("0.7.1", {}, False), ("0.7.1", dict(reward_workers=False), True),
    ("0.8.0", {}, False), ("0.9.0", {}, False), ("0.10.0.dev", {}, False),
    ("0.10.0.dev", dict(reward_workers=False), True),
]


@pytest.mark.parametrize("version, kwargs, survives", TOP_LEVEL_SURVIVES)
def test_which_columns_reach_the_hook(files, version, kwargs, survives):
    fake_verl.install(version)
    trainer = legacy.RayPPOTrainer(probe_config(files), rollout, **kwargs)
    trainer.fit()
    seen = trainer.train_dataset.seen.non_tensor_batch
    assert ("probe" in seen) == survives
    assert all(info["probe"].startswith("p") for info in seen["extra_info"]), \
        "extra_info reaches the hook in every version"
    assert len(seen["extra_info"]) == B * G


@pytest.mark.parametrize("version", ["0.5.0", "0.7.1", "0.8.0", "0.10.0.dev"])
def test_hook_call_order(files, version):
    """update (v0.5.0..v0.7.1, curriculum sampler) after every step; on_batch_end after every
    step but the trainer's last, unless total_training_steps exceeds the data."""
    fake_verl.install(version)
    has_sampler = fake_verl.spec().curriculum_sampler
    if has_sampler:
        sampler_module = sys.modules["verl.experimental.dataset.sampler"]

        class Recorder(sampler_module.AbstractCurriculumSampler):
            def __init__(self, data_source, data_config):
                self.n = len(data_source)

            def __iter__(self):
                return iter(range(self.n))

            def __len__(self):
                return self.n

            def update(self, batch):
                pass

        sampler_module.Recorder = Recorder
    config = probe_config(files)
    if has_sampler:
        config.data.sampler = fake_verl.Config.of(
            {"class_path": "pkg://verl.experimental.dataset.sampler", "class_name": "Recorder"})
    trainer = legacy.RayPPOTrainer(config, rollout)
    trainer.fit()
    steps = [1, 2, 3]
    want = [("update", s) for s in steps] if has_sampler else []
    want += [("on_batch_end", s) for s in steps[:-1]]
    assert sorted(trainer.hook_calls, key=lambda c: (c[1], c[0] != "update")) == sorted(
        want, key=lambda c: (c[1], c[0] != "update"))

    fake_verl.install(version)
    trainer = legacy.RayPPOTrainer(probe_config(files, total_training_steps=4), rollout)
    trainer.fit()
    assert [c for c in trainer.hook_calls if c[0] == "on_batch_end"] == [
        ("on_batch_end", s) for s in steps]


@pytest.mark.parametrize("version", fake_verl.VERSIONS)
def test_item_format_and_construction(files, version):
    fake_verl.install(version)
    data = probe_config(files).data
    item = fake_verl.create_rl_dataset(data.train_files, data, None, None)[0]
    tokenised = {"input_ids", "attention_mask", "position_ids", "raw_prompt_ids"}
    if version in ("0.4.1", "0.5.0", "0.6.0", "0.6.1"):
        assert tokenised <= set(item) and "raw_prompt" not in item
    else:
        assert not tokenised & set(item) and item["raw_prompt"][0]["content"] == "q0"
        assert "dummy_tensor" in item
    assert item["index"] == 0 and item["extra_info"]["index"] == 0
    rl_dataset = sys.modules["verl.utils.dataset.rl_dataset"].RLHFDataset
    with_max = version not in ("0.4.1", "0.5.0", "0.6.0")
    if with_max:
        assert len(rl_dataset(files[0], None, data, max_samples=2)) == 2
    else:
        with pytest.raises(TypeError):
            rl_dataset(files[0], None, data, max_samples=2)


@pytest.mark.parametrize("version", fake_verl.VERSIONS)
def test_loading_by_pkg_and_by_file(version):
    fake_verl.install(version)
    if version == "0.4.1":
        with pytest.raises(FileNotFoundError):
            fake_verl.load_extern("pkg://fake_verl.core", "Config")
    else:
        assert fake_verl.load_extern("pkg://fake_verl.core", "Config") is core.Config
        assert fake_verl.load_extern("pkg://fake_verl/core", "Config") is core.Config
    first = fake_verl.load_extern(PROBE, "ProbeDataset")
    second = fake_verl.load_extern(PROBE, "ProbeDataset")
    assert first is not second, "a file is executed again on every load"
    hashed = version not in ("0.4.1", "0.5.0", "0.6.0", "0.6.1")
    assert (first.__module__ != "custom_module") == hashed
    assert first.__module__ not in sys.modules


def test_shuffle_and_sampler_choice(files):
    fake_verl.install("0.8.0")
    data = probe_config(files).data
    ds = fake_verl.create_rl_dataset(data.train_files, data, None, None)
    assert list(core.create_rl_sampler(data, ds)) == list(range(6))
    data.shuffle = True
    assert sorted(core.create_rl_sampler(data, ds)) == list(range(6))
    assert list(core.create_rl_sampler(data, ds)) != list(range(6))


def test_dataloader_resumes_where_the_checkpoint_was(files):
    fake_verl.install("0.8.0")
    data = probe_config(files).data
    ds = fake_verl.create_rl_dataset(data.train_files, data, None, None)
    loader = core.StatefulDataLoader(ds, 2, core.SequentialSampler(ds), core.collate_fn)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    again = core.StatefulDataLoader(ds, 2, core.SequentialSampler(ds), core.collate_fn)
    again.load_state_dict(state)
    assert [list(b["index"]) for b in again] == [[2, 3], [4, 5]]


def test_union_refuses_different_values_under_one_key():
    a = core.DataProto({}, {"k": np.array([1, 2], dtype=object)})
    b = core.DataProto({}, {"k": np.array([1, 3], dtype=object)})
    with pytest.raises(AssertionError):
        a.union(b)


def v1_config(files, **v1_over):
    sampler = {"custom_sampler": {"path": None, "name": None}, "sampler_kwargs": {}}
    return fake_verl.Config.of({
        "data": {"train_files": files[0], "val_files": files[1], "train_batch_size": B,
                 "shuffle": False, "dataloader_num_workers": 0,
                 "custom_cls": {"path": PROBE, "name": "ProbeDataset"}},
        "trainer": {"total_epochs": 1, "save_freq": -1, "use_v1": True,
                    "v1": dict({"trainer_mode": "sync", "sampler": sampler}, **v1_over)},
        "actor_rollout_ref": {"rollout": {"n": G}},
        "algorithm": {"filter_groups": {"enable": False}},
    })


@pytest.mark.parametrize("version", ["0.9.0", "0.10.0.dev"])
def test_v1_sample_order_and_trajectory_fields(files, version):
    fake_verl.install(version)
    trainer = v1.PPOTrainer(v1_config(files), lambda e, s, g: (float(s), 2, 0.0), seed=3)
    trainer.init()
    trainer.fit()
    calls = trainer.replay_buffer.sample_calls
    assert calls == [(0, "val", 2), (1, "train", B), (2, "train", B), (3, "train", B)]
    for step, infos in trainer.trained.items():
        assert len(infos) == B * G
        assert sorted({i["index"] for i in infos}) == [2 * (step - 1), 2 * step - 1]
    assert v1.kv_list("train")["train"] == {}, "each step clears what it trained on"


def test_v1_trajectories_hold_prompt_columns_and_rm_scores(files):
    fake_verl.install("0.9.0")
    trainer = v1.PPOTrainer(v1_config(files), lambda e, s, g: (0.5, 3, 0.0))
    trainer.init()
    trainer.global_steps = 1
    trainer._add_prompts_to_generate(B)
    batch, _ = trainer.replay_buffer.sample(1, "train", B)
    assert all(k.count("_") == 2 for k in batch.keys)  # {uid}_{session}_{index}
    data = v1.kv_batch_get(batch.keys, "train", ["extra_info", "rm_scores", "response_mask"])
    assert all(info["probe"].startswith("p") for info in data["extra_info"])
    assert all(s.tolist() == [0.0, 0.0, 0.5] for s in data["rm_scores"])


@pytest.mark.parametrize("change", [{"trainer_mode": "colocate_async"},
                                    {"sampler": {"sync_refill_failed_groups": True,
                                                 "custom_sampler": {}}}])
def test_v1_rewrites_gen_batch_size_after_building_the_dataset(files, change):
    fake_verl.install("0.9.0")
    config = v1_config(files, **change)
    trainer = v1.PPOTrainer(config, rollout)
    trainer.init()
    assert trainer.train_dataset.config.gen_batch_size == 1
    assert trainer.train_dataloader.batch_size == 1


def test_v1_reward_model_without_pool_stores_no_rewards(files):
    fake_verl.install("0.9.0")
    config = v1_config(files)
    config.reward = fake_verl.Config.of({"reward_model": {"enable": True,
                                                          "enable_resource_pool": False}}, config)
    trainer = v1.PPOTrainer(config, rollout)
    trainer.init()
    trainer._add_prompts_to_generate(B)
    batch, _ = trainer.replay_buffer.sample(0, "train", B)
    with pytest.raises(KeyError):
        v1.kv_batch_get(batch.keys, "train", ["rm_scores"])


def test_config_children_know_their_parent_and_share_writes():
    root = fake_verl.Config.of({"data": {"x": 1}, "trainer": {"n": 2}})
    data = root.data
    assert data._get_parent() is root and root._get_parent() is None
    root.data.x = 5
    assert data.x == 5
    assert importlib.import_module("fake_verl").Config is fake_verl.Config
