"""The V1 trainer (verl/trainer/ppo/v1/, v0.9.0 and main) reduced to the data path, with an
in-memory TransferQueue.

Read from trainer_base.py, replay_buffer.py, agent_loop_tq.py and agent_loop.py
(AgentLoopOutput.as_dict) at v0.9.0 and main:
* PPOTrainer.__init__ builds the replay buffer first: `trainer.v1.sampler.custom_sampler.{path,
  name}` loaded with load_extern_type and constructed with trainer_mode, trainer_config,
  max_off_policy_threshold, max_off_policy_strategy, sampler_kwargs, refill_fn (keywords);
  otherwise ReplayBuffer (sync) / ReplayBufferAsync.
* init() -> _init_dataloader: the datasets, then `data.gen_batch_size = 1` (open_dict) when the
  mode is not sync, or algorithm.filter_groups.enable, or sync_refill_failed_groups; the
  dataloader's batch size is gen_batch_size or train_batch_size; steps_per_epoch = len(train
  dataset) // train_batch_size; then _load_checkpoint (global step and dataloader state; sync
  mode keeps no TransferQueue state).
* fit: validation first (val_before_train), global_steps += 1, then while epoch <
  total_epochs and global_steps <= total_training_steps: step() = _add_batch_to_generate
  (train_batch_size prompts fetched in gen_batch_size chunks, a uid each, tags {is_prompt,
  status pending, global_steps} put into partition "train", handed to the agent loop), then
  parameter_sync_step times replay_buffer.sample(global_steps, "train", B / psync); colocated
  reward (rm_scores written after sampling) only when no reward-loop workers; checkpoint at
  save_freq or the last step; kv_clear of the batch's keys; global_steps += 1.
* The agent loop writes, per prompt, n sessions as keys "{uid}_{session}_0" whose fields are
  the prompt's columns (extra_info included) plus responses, response_mask and, when rewards
  are computed during rollout, rm_scores (reward on the last token); the prompt's tag becomes
  status "finished". Completion order is arbitrary (a seeded shuffle here).
* ReplayBuffer.sample (sync): from tq.kv_list, the finished prompts of the partition; once
  batch_size are there, the oldest by global_steps are chosen, their prompt keys cleared, and
  KVBatchMeta(partition_id, keys, tags) of their trajectories returned with a metrics dict.
  The real one polls while fewer are finished; generation here completes at submission, so
  fewer finished prompts is an error.
Where TransferQueue's behaviour was not read (its package is not part of verl), the fake
assumes: kv_batch_get returns {field: list per key} and raises KeyError for a field a key lacks.
"""

import uuid

import numpy as np

from fake_verl import core

# ---- transfer_queue ----

_STORE = {}  # partition -> {key: {"tag": dict, "fields": dict}}


def reset_transfer_queue():
    _STORE.clear()


class KVBatchMeta:
    def __init__(self, partition_id, keys, tags):
        self.partition_id, self.keys, self.tags = partition_id, list(keys), list(tags)
        self.extra_info = {}

    def __len__(self):
        return len(self.keys)


def kv_put(key, partition_id, tag=None, fields=None):
    entry = _STORE.setdefault(partition_id, {}).setdefault(key, {"tag": {}, "fields": {}})
    entry["tag"].update(tag or {})
    entry["fields"].update(fields or {})


def kv_batch_put(keys, partition_id, tags=None, fields=None):
    for i, key in enumerate(keys):
        kv_put(key, partition_id, tags[i] if tags else None, fields[i] if fields else None)


def kv_list(partition_id=None):
    parts = [partition_id] if partition_id else list(_STORE)
    return {p: {k: dict(e["tag"]) for k, e in _STORE.get(p, {}).items()} for p in parts}


def kv_batch_get(keys, partition_id, select_fields=None):
    entries = [_STORE[partition_id][k]["fields"] for k in keys]
    names = select_fields or sorted(set().union(*entries))
    out = {}
    for name in names:
        missing = [k for k, e in zip(keys, entries) if name not in e]
        if missing:
            raise KeyError(name)
        out[name] = [e[name] for e in entries]
    return out


def kv_clear(keys, partition_id):
    for key in keys:
        _STORE.get(partition_id, {}).pop(key, None)


TQ_API = dict(KVBatchMeta=KVBatchMeta, kv_put=kv_put, kv_batch_put=kv_batch_put,
              kv_list=kv_list, kv_batch_get=kv_batch_get, kv_clear=kv_clear)


# ---- replay_buffer.py ----


class ReplayBuffer:
    def __init__(self, trainer_mode, trainer_config, max_off_policy_threshold,
                 max_off_policy_strategy, sampler_kwargs, poll_interval=2.0, refill_fn=None,
                 filter_groups_metric=None, train_batch_size=None, gen_batch_size=None,
                 max_inflight_gen_batches=1, sync_refill_failed_groups=False):
        self.trainer_mode = trainer_mode
        self.sampler_kwargs = sampler_kwargs
        self.refill_fn = refill_fn
        self.sample_calls = []  # (global_steps, partition_id, batch_size)

    def sample(self, global_steps, partition_id, batch_size):
        self.sample_calls.append((global_steps, partition_id, batch_size))
        items = kv_list(partition_id)[partition_id]
        prompts = {k: t for k, t in items.items() if t.get("is_prompt")}
        finished = [k for k, t in prompts.items() if t["status"] in ("finished", "failure")]
        if len(finished) < batch_size:
            raise RuntimeError(f"fake ReplayBuffer: {len(finished)} finished prompts, "
                               f"{batch_size} needed (the real one would poll)")
        chosen = sorted(finished, key=lambda k: prompts[k]["global_steps"])[:batch_size]
        kv_clear(chosen, partition_id)
        chosen = set(chosen)
        keys, tags = [], []
        for key, tag in items.items():
            if not tag.get("is_prompt") and key.split("_")[0] in chosen:
                keys.append(key)
                tags.append(tag)
        return KVBatchMeta(partition_id, keys, tags), {}


# ---- trainer_base.py (sync mode) ----


class PPOTrainer:
    """rollout(extra_info, session, global_step) -> (reward, response_length, logprob_sum)."""

    def __init__(self, config, rollout, checkpoints=None, seed=0):
        self.config = config
        self.rollout = rollout
        self.checkpoints = checkpoints if checkpoints is not None else {}
        self.rng = np.random.default_rng(seed)
        self.trainer_mode = config.trainer.v1.trainer_mode
        self.replay_buffer = self._build_replay_buffer()
        self.trained = {}  # global step -> extra_info of the trajectories trained on

    def _build_replay_buffer(self):
        sampler = self.config.trainer.v1.sampler
        custom = sampler.get("custom_sampler") or {}
        if custom.get("path") and custom.get("name"):
            cls = core.load_extern(custom["path"], custom["name"])
        else:
            cls = ReplayBuffer
        return cls(trainer_mode=self.trainer_mode,
                   trainer_config=self.config.trainer.v1.get(self.trainer_mode, {}),
                   max_off_policy_threshold=sampler.get("max_off_policy_threshold", 8),
                   max_off_policy_strategy=sampler.get("max_off_policy_strategy", "drop"),
                   sampler_kwargs=sampler.get("sampler_kwargs", {}),
                   refill_fn=self._add_prompts_to_generate)

    def init(self):
        data = self.config.data
        self.train_dataset = core.create_rl_dataset(data.train_files, data, None, None, True,
                                                    data.get("train_max_samples", -1))
        self.val_dataset = core.create_rl_dataset(data.val_files, data, None, None, False,
                                                  data.get("val_max_samples", -1))
        filter_groups = self.config.get("algorithm", {}).get("filter_groups") or {}
        refill_failed = self.config.trainer.v1.sampler.get("sync_refill_failed_groups", False)
        if self.trainer_mode != "sync" or filter_groups.get("enable") or refill_failed:
            data.gen_batch_size = 1  # `with open_dict(self.config)`: the data node is shared
        gen_batch_size = data.get("gen_batch_size") or data.train_batch_size
        self.train_dataloader = core.StatefulDataLoader(
            self.train_dataset, batch_size=gen_batch_size,
            sampler=core.create_rl_sampler(data, self.train_dataset),
            collate_fn=core.collate_fn, num_workers=data.get("dataloader_num_workers", 8))
        self.train_dataloader_it = None
        self.steps_per_epoch = len(self.train_dataset) // data.train_batch_size
        self.total_training_steps = self.steps_per_epoch * self.config.trainer.total_epochs
        if self.config.trainer.get("total_training_steps") is not None:
            self.total_training_steps = self.config.trainer.total_training_steps
        self.global_steps = 0
        if "latest" in self.checkpoints:
            state = self.checkpoints["latest"]
            self.global_steps = state["global_steps"]
            self.train_dataloader.load_state_dict(state["dataloader"])

    def _fetch_one_gen_batch(self):
        try:
            if self.train_dataloader_it is None:
                self.train_dataloader_it = iter(self.train_dataloader)
            batch = next(self.train_dataloader_it)
        except StopIteration:
            self.train_dataloader_it = iter(self.train_dataloader)
            batch = next(self.train_dataloader_it)
        batch["uid"] = np.array([str(uuid.uuid4()) for _ in batch["raw_prompt"]], dtype=object)
        return batch

    def _next_train_batch(self, num_prompts=None):
        data = self.config.data
        num_prompts = num_prompts or data.train_batch_size
        gen_batch_size = data.get("gen_batch_size") or data.train_batch_size
        chunks = [self._fetch_one_gen_batch() for _ in range(num_prompts // gen_batch_size)]
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def _submit(self, batch, partition_id="train"):
        rows = len(batch["uid"])
        uids = list(batch["uid"])
        kv_batch_put(uids, partition_id, tags=[{"is_prompt": True, "status": "pending",
                                                "global_steps": self.global_steps}] * rows)
        self._agent_loop(batch, partition_id)
        return rows

    def _add_prompts_to_generate(self, num_prompts):
        return self._submit(self._next_train_batch(num_prompts))

    def _agent_loop(self, batch, partition_id):
        """Generation and streaming reward, prompts finishing in arbitrary order."""
        n = self.config.actor_rollout_ref.rollout.n
        width = self.config.data.get("max_response_length", 8)
        reward_model = self.config.get("reward", {}).get("reward_model") or {}
        streaming = not reward_model.get("enable") or reward_model.get("enable_resource_pool")
        for i in self.rng.permutation(len(batch["uid"])):
            prompt = {k: v[i] for k, v in batch.items()}
            uid = prompt["uid"]
            kv_put(uid, partition_id, {"status": "running"})
            for session in range(n):
                reward, length, _ = self.rollout(prompt["extra_info"], session, self.global_steps)
                length = max(1, min(int(length), width))
                fields = dict(prompt, session_id=session, global_steps=self.global_steps,
                              responses=np.zeros(length, dtype=np.int64),
                              response_mask=np.ones(length, dtype=np.int64))
                if streaming:
                    scores = np.zeros(length, dtype=np.float32)
                    scores[-1] = reward
                    fields["rm_scores"] = scores
                kv_put(f"{uid}_{session}_0", partition_id,
                       {"status": "success", "global_steps": self.global_steps}, fields)
            kv_put(uid, partition_id, {"status": "finished"})

    def _validate(self):
        val = core.collate_fn([self.val_dataset[i] for i in range(len(self.val_dataset))])
        val["uid"] = np.array([str(uuid.uuid4()) for _ in val["raw_prompt"]], dtype=object)
        self._submit(val, "val")
        batch, _ = self.replay_buffer.sample(global_steps=self.global_steps, partition_id="val",
                                             batch_size=len(val["uid"]))
        kv_clear(batch.keys, "val")
        return len(batch.keys) // self.config.actor_rollout_ref.rollout.n

    def fit(self):
        if self.config.trainer.get("val_before_train", True):
            self._validate()
        self.global_steps += 1
        psync = self.config.trainer.v1.get(self.trainer_mode, {}).get("parameter_sync_step", 1)
        B = self.config.data.train_batch_size
        while (self.global_steps - 1) // self.steps_per_epoch < self.config.trainer.total_epochs \
                and self.global_steps <= self.total_training_steps:
            is_last_step = self.global_steps >= self.total_training_steps
            self._add_prompts_to_generate(B)  # prepare_step() on main, same call
            keys = []
            for _ in range(psync):
                batch, _ = self.replay_buffer.sample(global_steps=self.global_steps,
                                                     partition_id="train",
                                                     batch_size=B // psync)
                keys.extend(batch.keys)
            rm = kv_batch_get(keys, "train", ["extra_info"])
            self.trained[self.global_steps] = rm["extra_info"]
            save_freq = self.config.trainer.get("save_freq", -1)
            if save_freq > 0 and (is_last_step or self.global_steps % save_freq == 0):
                self.checkpoints["latest"] = {"global_steps": self.global_steps,
                                              "dataloader": self.train_dataloader.state_dict()}
            kv_clear(keys, "train")
            self.global_steps += 1
            if is_last_step:
                return
