"""A minimal fake of verl's dataset hook contract, for testing dots_client.verl without verl.

verl (and torch) cannot be installed here. This reproduces, from verl's source as read for
reference/peers.md §2.1, exactly the parts a `data.custom_cls` dataset meets:

* `create_rl_dataset` (verl/trainer/main_ppo.py): loads `data.custom_cls.{path,name}` and
  constructs it as cls(data_files=..., tokenizer=..., processor=..., config=data_config,
  max_samples=...); verl also checks issubclass(cls, torch.utils.data.Dataset), which needs
  torch: the fake checks for __len__/__getitem__ instead.
* `create_rl_sampler`: SequentialSampler unless data.shuffle (then a seeded random sampler).
* `collate_fn` (verl/utils/dataset/rl_dataset.py): tensors stacked, everything else into
  numpy object arrays. Tensors are numpy arrays here.
* `RLHFDataset`: rows of the data files (JSONL here; parquet in verl) behind a `dataframe` with
  HF-datasets-style row and column access; __getitem__ returns the row plus input_ids,
  attention_mask, position_ids, raw_prompt_ids, index (= extra_info.index), tools_kwargs.
* `DataProto` (verl/protocol.py): `batch` (tensors, first dim = rows), `non_tensor_batch`
  (object arrays), from_single_dict, repeat(repeat_times, interleave=True), union, reorder.
* `StatefulDataLoader` (torchdata): batch_size prompts per batch, drop_last, and a state_dict
  that a checkpoint saves and load_state_dict restores (the position in the epoch).
* `RayPPOTrainer.fit` (verl/trainer/ppo/ray_trainer.py, legacy trainer): global_steps starts at
  1 (or the checkpoint's), total_training_steps = len(dataloader) * total_epochs; per batch:
  uid per prompt, repeat by rollout.n (interleaved), generate, reward into token_level_scores
  (at the last response token), old_log_probs, balance_batch (a row permutation), checkpoint
  every save_freq steps, global_steps += 1, `if is_last_step: return`, then
  `if hasattr(self.train_dataset, "on_batch_end"): self.train_dataset.on_batch_end(batch=batch)`.

`install()` registers the `verl.utils.dataset.rl_dataset` module in sys.modules so that code
doing `from verl.utils.dataset.rl_dataset import RLHFDataset` gets the fake; `uninstall()` removes
it again.
"""

import importlib.util
import json
import sys
import types
import uuid

import numpy as np


# ---- data config: a dict with attribute access, like OmegaConf's DictConfig ----


class Config(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @staticmethod
    def of(value):
        if isinstance(value, dict):
            return Config({k: Config.of(v) for k, v in value.items()})
        return value


# ---- verl/utils/dataset/rl_dataset.py ----


class Frame:
    """HF datasets.Dataset-like: frame[i] is a row dict, frame["col"] a column list."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, str):
            return [dict(r).get(key) for r in self.rows]
        return json.loads(json.dumps(self.rows[key]))  # a fresh copy, as HF returns


class RLHFDataset:
    """verl's default dataset over JSONL rows {data_source, prompt, reward_model, extra_info}."""

    def __init__(self, data_files, tokenizer, config, processor=None, max_samples=-1):
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        rows = []
        for path in files:
            with open(path) as f:
                rows.extend(json.loads(line) for line in f if line.strip())
        if max_samples is not None and max_samples > 0:
            rows = rows[:max_samples]
        self.dataframe = Frame(rows)
        self.tokenizer = tokenizer
        self.config = config
        self.max_prompt_length = config.get("max_prompt_length", 64)
        self.getitem_calls = 0

    def __len__(self):
        return len(self.dataframe)

    def __getitem__(self, item):
        self.getitem_calls += 1
        row = self.dataframe[item]
        text = "\n".join(m["content"] for m in row["prompt"])
        ids = [ord(c) % 256 for c in text][: self.max_prompt_length]
        pad = self.max_prompt_length - len(ids)
        row["input_ids"] = np.array([0] * pad + ids, dtype=np.int64)  # left padding
        row["attention_mask"] = np.array([0] * pad + [1] * len(ids), dtype=np.int64)
        row["position_ids"] = np.maximum(np.cumsum(row["attention_mask"]) - 1, 0)
        row["raw_prompt_ids"] = ids
        row["index"] = row.get("extra_info", {}).get("index", 0)
        row["tools_kwargs"] = row.get("extra_info", {}).get("tools_kwargs", {})
        return row


def collate_fn(data_list):
    tensors, non_tensors = {}, {}
    for data in data_list:
        for key, val in data.items():
            target = tensors if isinstance(val, np.ndarray) else non_tensors
            target.setdefault(key, []).append(val)
    out = {k: np.stack(v, axis=0) for k, v in tensors.items()}
    for k, v in non_tensors.items():
        arr = np.empty(len(v), dtype=object)
        arr[:] = v
        out[k] = arr
    return out


# ---- verl/protocol.py ----


class DataProto:
    def __init__(self, batch, non_tensor_batch, meta_info=None):
        self.batch = batch
        self.non_tensor_batch = non_tensor_batch
        self.meta_info = meta_info or {}

    @classmethod
    def from_single_dict(cls, data):
        tensors = {k: v for k, v in data.items() if v.dtype != object}
        others = {k: v for k, v in data.items() if v.dtype == object}
        return cls(tensors, others)

    def __len__(self):
        for v in list(self.batch.values()) + list(self.non_tensor_batch.values()):
            return len(v)
        return 0

    def repeat(self, repeat_times=2, interleave=True):
        def rep(v):
            if interleave:
                return np.repeat(v, repeat_times, axis=0)
            return np.concatenate([v] * repeat_times, axis=0)

        return DataProto({k: rep(v) for k, v in self.batch.items()},
                         {k: rep(v) for k, v in self.non_tensor_batch.items()}, self.meta_info)

    def union(self, other):
        self.batch.update(other.batch)
        self.non_tensor_batch.update(other.non_tensor_batch)
        return self

    def reorder(self, indices):
        self.batch = {k: v[indices] for k, v in self.batch.items()}
        self.non_tensor_batch = {k: v[indices] for k, v in self.non_tensor_batch.items()}


# ---- torch / torchdata stand-ins ----


class SequentialSampler:
    def __init__(self, data_source):
        self.n = len(data_source)

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


class RandomSampler(SequentialSampler):
    def __init__(self, data_source, seed=0):
        super().__init__(data_source)
        self.seed = seed

    def __iter__(self):
        return iter(np.random.default_rng(self.seed).permutation(self.n).tolist())


class StatefulDataLoader:
    """Batches of `batch_size` items (drop_last), resumable from state_dict()."""

    def __init__(self, dataset, batch_size, sampler, collate_fn, drop_last=True, num_workers=0):
        assert num_workers == 0, "the fake loader has no worker processes"
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler
        self.collate_fn, self.drop_last = collate_fn, drop_last
        self._consumed = 0  # batches yielded in the current epoch
        self._resume_from = 0

    def __len__(self):
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        order = list(iter(self.sampler))
        start, self._resume_from = self._resume_from, 0
        for b in range(start, len(self)):
            self._consumed = b + 1
            # Items are fetched lazily, when the training loop asks for the batch.
            yield self.collate_fn([self.dataset[i] for i in
                                   order[b * self.batch_size:(b + 1) * self.batch_size]])
        self._consumed = 0

    def state_dict(self):
        return {"batches_consumed": self._consumed}

    def load_state_dict(self, state):
        self._resume_from = state["batches_consumed"]


# ---- verl/trainer/main_ppo.py ----


def load_extern_object(path, name):
    spec = importlib.util.spec_from_file_location(f"_fake_verl_extern_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def create_rl_dataset(data_paths, data_config, tokenizer, processor, is_train=True, max_samples=-1):
    if "custom_cls" in data_config and data_config.custom_cls.get("path", None) is not None:
        dataset_cls = load_extern_object(data_config.custom_cls.path, data_config.custom_cls.name)
        # verl: issubclass(dataset_cls, torch.utils.data.Dataset); no torch here.
        if not (hasattr(dataset_cls, "__getitem__") and hasattr(dataset_cls, "__len__")):
            raise TypeError(f"{data_config.custom_cls.name} is not a map-style dataset")
    else:
        dataset_cls = RLHFDataset
    return dataset_cls(data_files=data_paths, tokenizer=tokenizer, processor=processor,
                       config=data_config, max_samples=max_samples)


def create_rl_sampler(data_config, dataset):
    if data_config.get("shuffle", True):
        return RandomSampler(dataset, seed=data_config.get("seed", 0) or 0)
    return SequentialSampler(dataset)


# ---- verl/trainer/ppo/ray_trainer.py (the legacy fit loop, reduced to the data path) ----


class RayPPOTrainer:
    """The data path of RayPPOTrainer.fit.

    rollout(prompt_row, sample_index, global_step) -> (reward, response_length, logprob_sum):
    stands in for the actor's generation, the reward function and the old-log-prob pass.
    """

    def __init__(self, config, train_dataset, rollout, checkpoints=None):
        self.config = config
        self.train_dataset = train_dataset
        self.rollout = rollout
        self.checkpoints = checkpoints if checkpoints is not None else {}
        sampler = create_rl_sampler(config.data, train_dataset)
        self.train_dataloader = StatefulDataLoader(
            train_dataset, batch_size=config.data.train_batch_size, sampler=sampler,
            collate_fn=collate_fn, drop_last=True,
            num_workers=config.data.get("dataloader_num_workers", 8),
        )
        self.total_training_steps = len(self.train_dataloader) * config.trainer.total_epochs
        if config.trainer.get("total_training_steps") is not None:
            self.total_training_steps = config.trainer.total_training_steps
        self.global_steps = 0
        self.prompts_per_step = {}
        self.balance_seed = 0

    def _load_checkpoint(self):
        if "latest" in self.checkpoints:
            state = self.checkpoints["latest"]
            self.global_steps = state["global_steps"]
            self.train_dataloader.load_state_dict(state["dataloader"])

    def _save_checkpoint(self):
        self.checkpoints["latest"] = {"global_steps": self.global_steps,
                                      "dataloader": self.train_dataloader.state_dict()}

    def fit(self):
        self.global_steps = 0
        self._load_checkpoint()
        self.global_steps += 1
        n = self.config.actor_rollout_ref.rollout.n
        response_length = self.config.data.get("max_response_length", 8)
        for _ in range(self.config.trainer.total_epochs):
            for batch_dict in self.train_dataloader:
                is_last_step = self.global_steps >= self.total_training_steps
                batch = DataProto.from_single_dict(batch_dict)
                uids = np.empty(len(batch), dtype=object)
                uids[:] = [str(uuid.uuid4()) for _ in range(len(batch))]
                batch.non_tensor_batch["uid"] = uids
                self.prompts_per_step[self.global_steps] = list(
                    batch.non_tensor_batch.get("dots_key", batch.non_tensor_batch["index"]))
                batch = batch.repeat(repeat_times=n, interleave=True)
                rows = len(batch)
                scores = np.zeros((rows, response_length), dtype=np.float32)
                mask = np.zeros((rows, response_length), dtype=np.int64)
                old = np.zeros((rows, response_length), dtype=np.float32)
                for r in range(rows):
                    prompt = {k: v[r] for k, v in batch.non_tensor_batch.items()}
                    reward, length, logprob_sum = self.rollout(prompt, r % n, self.global_steps)
                    length = max(1, min(int(length), response_length))
                    mask[r, :length] = 1
                    old[r, :length] = logprob_sum / length
                    scores[r, length - 1] = reward  # the reward sits on the last token
                batch = batch.union(DataProto({"token_level_scores": scores,
                                               "response_mask": mask,
                                               "old_log_probs": old}, {}))
                # balance_batch: reorder rows across data-parallel ranks.
                self.balance_seed += 1
                batch.reorder(np.random.default_rng(self.balance_seed).permutation(rows))
                save_freq = self.config.trainer.get("save_freq", -1)
                if save_freq > 0 and (is_last_step or self.global_steps % save_freq == 0):
                    self._save_checkpoint()
                self.global_steps += 1
                if is_last_step:
                    return
                if hasattr(self.train_dataset, "on_batch_end"):
                    self.train_dataset.on_batch_end(batch=batch)


# ---- module registration ----

_MODULES = ("verl", "verl.utils", "verl.utils.dataset", "verl.utils.dataset.rl_dataset")


def install():
    """Makes `import verl.utils.dataset.rl_dataset` return this fake's RLHFDataset."""
    modules = {name: types.ModuleType(name) for name in _MODULES}
    modules["verl.utils.dataset.rl_dataset"].RLHFDataset = RLHFDataset
    modules["verl.utils.dataset.rl_dataset"].collate_fn = collate_fn
    for parent, child in zip(_MODULES, _MODULES[1:]):
        setattr(modules[parent], child.rsplit(".", 1)[1], modules[child])
    for name, module in modules.items():
        sys.modules[name] = module


def uninstall():
    for name in _MODULES:
        sys.modules.pop(name, None)
