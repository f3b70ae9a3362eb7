"""Tests of dots_client.verl (the verl data.custom_cls adapter) against fake_verl and a live
dots-server. verl and torch are not installed here; fake_verl reproduces the hook contract."""

import importlib
import io
import json
import os
import sys
import types

import numpy as np
import pytest

import dots_client
import dots_client.verl
import fake_verl

ADAPTER_PATH = os.path.abspath(dots_client.verl.__file__)
B, G, N = 8, 4, 40

RUN_CONFIG = {
    "batch_size": B,
    "group_size": G,
    "reference_size": 2,
    "seed": 9,
    "estimator": {"mode": "history"},
    "replay": {"enabled": False},
}


@pytest.fixture(autouse=True)
def fake_verl_modules():
    fake_verl.install()
    yield
    fake_verl.uninstall()


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
    write_rows(val, range(1000, 1010))
    return train, val


def new_run(client, run_id, files, config=RUN_CONFIG, upload=True):
    client.create_run(run_id, config)
    if upload:
        with open(files[0]) as f:
            rows = [json.loads(line) for line in f]
        client.upsert_questions(run_id, dots_client.verl.pool_from_rows(rows))


def data_config(server, files, run_id, steps, **overrides):
    train, val = files
    config = {
        "train_files": train, "val_files": val, "train_batch_size": B, "shuffle": False,
        "dataloader_num_workers": 0, "max_prompt_length": 32,
        "custom_cls": {"path": ADAPTER_PATH, "name": "DotsDataset"},
        "dots": {"target": server, "run_id": run_id, "num_steps": steps},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return fake_verl.Config.of(config)


def trainer_config(data, total_epochs=1, save_freq=-1):
    return fake_verl.Config.of({
        "data": data,
        "trainer": {"total_epochs": total_epochs, "save_freq": save_freq},
        "actor_rollout_ref": {"rollout": {"n": G}},
    })


def rewards_of(key):
    """The toy policy's rewards for a question: k % 3 == 0 solved, == 1 failed, else mixed."""
    k = int(key)
    return {0: [1.0] * G, 1: [0.0] * G, 2: [1.0, 0.0, 1.0, 0.0]}[k % 3]


def rollout(prompt, sample, step):
    return rewards_of(prompt["dots_key"])[sample], 1 + sample, -(1.0 + sample)


def build_datasets(data):
    train = fake_verl.create_rl_dataset(data.train_files, data, None, None, is_train=True)
    val = fake_verl.create_rl_dataset(data.val_files, data, None, None, is_train=False)
    return train, val


def test_trains_in_server_order_and_reports_every_step_but_the_last(client, server, files):
    new_run(client, "verl-a", files)
    data = data_config(server, files, "verl-a", steps=5)
    train, val = build_datasets(data)
    assert len(train) == 5 * B
    trainer = fake_verl.RayPPOTrainer(trainer_config(data), train, rollout)
    assert trainer.total_training_steps == 5
    trainer.fit()

    # Each step trained exactly the server's batch of that step, in the server's order.
    for global_step, keys in trainer.prompts_per_step.items():
        batch = client.next_batch("verl-a", global_step - 1)
        assert keys == [i.key for i in batch.items]
    # verl returns before on_batch_end on its last step: steps 0..3 are reported.
    assert train.reported_steps == [0, 1, 2, 3]
    stats = client.stats("verl-a")
    reported = [k for s in range(1, 5) for k in trainer.prompts_per_step[s]]
    assert stats["reported_groups"] == len(reported) == 4 * B
    # Rows were reordered (balance_batch) before on_batch_end, so these counts hold only if
    # the adapter regrouped every rollout with its own question.
    assert stats["solve_all_groups"] == sum(int(k) % 3 == 0 for k in reported)
    assert stats["solve_none_groups"] == sum(int(k) % 3 == 1 for k in reported)
    assert stats["effective_groups"] == sum(int(k) % 3 == 2 for k in reported)
    assert stats["leases_outstanding"] == B  # the last step's questions, never reported

    # The validation dataset is a pass-through over the base dataset.
    assert not val.selecting and len(val) == 10
    row = val[3]
    assert row["extra_info"]["index"] == 1003 and "dots_key" not in row


def test_payload_carries_lengths_and_behaviour_logprob_sums(client, server, files):
    new_run(client, "verl-p", files)
    data = data_config(server, files, "verl-p", steps=3)
    train, _ = build_datasets(data)
    sent = []
    real_report = train.client.report

    def spy(run_id, step, groups):
        sent.extend(groups)
        return real_report(run_id, step, groups)

    train.client.report = spy
    fake_verl.RayPPOTrainer(trainer_config(data), train, rollout).fit()
    assert len(sent) == 2 * B
    for g in sent:
        assert g.policy_version in (0, 1)
        with np.load(io.BytesIO(g.payload)) as z:
            lengths, logprobs = z["response_length"].tolist(), z["logprob_sum"].tolist()
        # Rows arrive shuffled; each rollout keeps its own reward, length and log-prob sum.
        rollouts = sorted(zip(lengths, g.rewards, logprobs))
        want = [(1 + s, r, -(1.0 + s)) for s, r in enumerate(rewards_of(g.key))]
        assert [(n, r) for n, r, _ in rollouts] == [(n, r) for n, r, _ in want]
        np.testing.assert_allclose([lp for *_, lp in rollouts], [lp for *_, lp in want],
                                   rtol=1e-6)


def test_resume_from_a_verl_checkpoint(client, server, files):
    new_run(client, "verl-r", files)
    data = data_config(server, files, "verl-r", steps=6)
    train, _ = build_datasets(data)
    checkpoints = {}

    def crashing(prompt, sample, step):
        if step == 4:
            raise RuntimeError("node lost")
        return rollout(prompt, sample, step)

    first = fake_verl.RayPPOTrainer(trainer_config(data, save_freq=2), train, crashing,
                                    checkpoints)
    with pytest.raises(RuntimeError, match="node lost"):
        first.fit()
    assert checkpoints["latest"]["global_steps"] == 2
    assert train.reported_steps == [0, 1, 2]  # step 2 (global step 3) finished, then the crash

    # A new job: new dataset object, state from the checkpoint (after global step 2).
    train2, _ = build_datasets(data)
    second = fake_verl.RayPPOTrainer(trainer_config(data, save_freq=2), train2, rollout,
                                     checkpoints)
    second.fit()
    assert sorted(second.prompts_per_step) == [3, 4, 5, 6]
    # Global step 3 (dots step 2) is retrained on exactly the batch served before the crash.
    assert second.prompts_per_step[3] == first.prompts_per_step[3]
    assert train2.reported_steps == [2, 3, 4]
    stats = client.stats("verl-r")
    assert stats["duplicate_reports"] == B, "step 2's groups were already reported"
    assert stats["reported_groups"] == 5 * B


def test_reward_range_maps_scores_onto_0_1(client, server, files):
    new_run(client, "verl-m", files)
    data = data_config(server, files, "verl-m", steps=2, dots={"reward_range": [-1, 1]})
    train, _ = build_datasets(data)

    def signed(prompt, sample, step):
        r, length, lp = rollout(prompt, sample, step)
        return 2 * r - 1, length, lp

    fake_verl.RayPPOTrainer(trainer_config(data), train, signed).fit()
    stats = client.stats("verl-m")
    keys = [i.key for i in client.next_batch("verl-m", 0).items]
    assert stats["solve_all_groups"] == sum(int(k) % 3 == 0 for k in keys)

    def out_of_range(prompt, sample, step):
        return 3.0, 1, -1.0

    new_run(client, "verl-m2", files)
    data = data_config(server, files, "verl-m2", steps=2)
    train, _ = build_datasets(data)
    with pytest.raises(ValueError, match="outside data.dots.reward_range"):
        fake_verl.RayPPOTrainer(trainer_config(data), train, out_of_range).fit()


def test_upload_pool_fills_an_empty_run(client, server, files):
    new_run(client, "verl-u", files, upload=False)
    data = data_config(server, files, "verl-u", steps=2, dots={"upload_pool": True})
    train, _ = build_datasets(data)
    assert client.get_run("verl-u")["pool_size"] == N
    assert train[0]["dots_key"] in {str(i) for i in range(N)}
    some = client.estimates("verl-u", keys=["7"])
    assert some[0]["key"] == "7"


@pytest.mark.parametrize("override, config, message", [
    ({"shuffle": True}, None, "data.shuffle"),
    ({"dataloader_num_workers": 4}, None, "dataloader_num_workers"),
    ({"train_batch_size": 4}, None, "batch_size"),
    ({"gen_batch_size": 16}, None, "gen_batch_size"),
    ({"dots": {"run_id": None}}, None, "data.dots.run_id"),
    ({}, dict(RUN_CONFIG, replay={"enabled": True}), "replay.enabled"),
    ({}, dict(RUN_CONFIG, reference_mode="paper"), "paper"),
])
def test_configurations_that_cannot_work_are_refused(client, server, files, override,
                                                     config, message):
    run_id = f"verl-bad-{abs(hash((str(override), str(config))))}"
    new_run(client, run_id, files, config or RUN_CONFIG)
    data = data_config(server, files, run_id, steps=2, **override)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        build_datasets(data)


def test_same_train_and_val_files_are_refused(client, server, files):
    new_run(client, "verl-same", files)
    data = data_config(server, files, "verl-same", steps=2, val_files=files[0])
    with pytest.raises(ValueError, match="val_files"):
        build_datasets(data)


def test_wrap_over_any_dataset(client, files):
    new_run(client, "verl-w", files)
    base = fake_verl.RLHFDataset(files[0], None, fake_verl.Config.of({}))
    ds = dots_client.verl.DotsDataset.wrap(base, client, "verl-w", batch_size=B, num_steps=3)
    batch = client.next_batch("verl-w", 1)
    rows = [ds[B + i] for i in range(B)]
    assert [r["dots_key"] for r in rows] == [i.key for i in batch.items]
    assert all(r["dots_step"] == 1 for r in rows)
    assert rows[0]["extra_info"]["index"] == int(batch.items[0].key)
    with pytest.raises(IndexError):
        ds[3 * B]


def test_imports_without_verl_or_torch_and_subclasses_torch_dataset_when_present():
    assert "torch" not in sys.modules
    assert dots_client.verl.DotsDataset.__mro__[1] is object
    torch = types.ModuleType("torch")
    torch.utils = types.ModuleType("torch.utils")
    torch.utils.data = types.ModuleType("torch.utils.data")

    class Dataset:
        pass

    torch.utils.data.Dataset = Dataset
    saved = {k: sys.modules.get(k) for k in ("torch", "torch.utils", "torch.utils.data")}
    sys.modules.update({"torch": torch, "torch.utils": torch.utils,
                        "torch.utils.data": torch.utils.data})
    try:
        module = importlib.reload(dots_client.verl)
        assert issubclass(module.DotsDataset, Dataset)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        importlib.reload(dots_client.verl)
    assert dots_client.verl.DotsDataset.__mro__[1] is object


def test_base_cls_option_needs_no_verl(client, server, files):
    new_run(client, "verl-b", files)
    fake_verl.uninstall()  # no `verl` package at all now
    data = data_config(server, files, "verl-b", steps=2,
                       dots={"base_cls": {"path": os.path.abspath(fake_verl.__file__),
                                          "name": "RLHFDataset"}})
    train = dots_client.verl.DotsDataset(data_files=data.train_files, tokenizer=None,
                                         config=data, processor=None)
    assert train.selecting and len(train) == 2 * B
    assert train[0]["dots_key"] == client.next_batch("verl-b", 0).items[0].key
    default = data_config(server, files, "verl-b", steps=2)
    with pytest.raises(ImportError):
        dots_client.verl.DotsDataset(data_files=default.train_files, config=default)
