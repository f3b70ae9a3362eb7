"""The parts of verl a dataset meets before the trainer loop, per version.

Read from verl-project/verl at the tags named below (release tags v0.4.1, v0.5.0, v0.6.0,
v0.6.1, v0.7.0, v0.7.1, v0.8.0, v0.9.0 and main at 1dda039b9, version file "0.10.0.dev").
Written from that reading; no verl code is copied. numpy arrays stand in for torch tensors.
"""

import importlib
import importlib.util
import json
import os

import numpy as np

from fake_verl.versions import spec


# ---- OmegaConf DictConfig stand-in: attribute access, shared child nodes, parent links ----


class Config(dict):
    """A dict with attribute access whose child configs know their parent (`_get_parent`, as
    OmegaConf nodes do) and are shared, so a write through the root (verl's
    `with open_dict(config): config.data.gen_batch_size = 1`) is seen by holders of the child."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def _get_parent(self):
        return self.__dict__.get("_parent")

    @staticmethod
    def of(value, parent=None):
        if isinstance(value, dict):
            node = Config()
            node.__dict__["_parent"] = parent
            for k, v in value.items():
                dict.__setitem__(node, k, Config.of(v, node))
            return node
        return value


# ---- verl/utils/dataset/rl_dataset.py: RLHFDataset, collate_fn ----


class Frame:
    """HF datasets.Dataset-like: frame[i] is a fresh row dict, frame["col"] a column list."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, str):
            return [dict(r).get(key) for r in self.rows]
        return json.loads(json.dumps(self.rows[key]))


try:  # verl's RLHFDataset is a torch Dataset; so is the fake when torch is installed.
    from torch.utils.data import Dataset as _DatasetBase
except ImportError:
    _DatasetBase = object


class RLHFDataset(_DatasetBase):
    """Rows {data_source, prompt, reward_model, extra_info} of JSONL files (parquet in verl).

    __getitem__ follows the installed version's item format (rl_dataset.py __getitem__):
    before v0.7.0 the row plus tokenised input_ids / attention_mask / position_ids,
    raw_prompt_ids, index, tools_kwargs, interaction_kwargs; from v0.7.0 (chat templating moved
    to the agent loop) the row plus raw_prompt (the messages), dummy_tensor, extra_info
    defaulted to {}, index, tools_kwargs, interaction_kwargs. max_samples exists from v0.6.1.
    """

    def __init__(self, data_files, tokenizer, config, processor=None, max_samples=-1):
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        rows = []
        for path in files:
            with open(path) as f:
                rows.extend(json.loads(line) for line in f if line.strip())
        if max_samples is not None and max_samples > 0:
            rows = rows[:max_samples]
        self.dataframe = Frame(rows)
        self.config = config
        self.max_prompt_length = config.get("max_prompt_length", 32)

    def __len__(self):
        return len(self.dataframe)

    def __getitem__(self, item):
        row = self.dataframe[item]
        if spec().raw_prompt_items:
            row["raw_prompt"] = row["prompt"]
            row["dummy_tensor"] = np.array([0], dtype=np.uint8)
            if row.get("extra_info") is None:
                row["extra_info"] = {}
        else:
            text = "\n".join(m["content"] for m in row["prompt"])
            ids = [ord(c) % 256 for c in text][: self.max_prompt_length]
            pad = self.max_prompt_length - len(ids)
            row["input_ids"] = np.array([0] * pad + ids, dtype=np.int64)  # left padding
            row["attention_mask"] = np.array([0] * pad + [1] * len(ids), dtype=np.int64)
            row["position_ids"] = np.maximum(np.cumsum(row["attention_mask"]) - 1, 0)
            row["raw_prompt_ids"] = ids
        info = row.get("extra_info") or {}
        row["index"] = info.get("index", 0)
        row["tools_kwargs"] = info.get("tools_kwargs", {})
        row["interaction_kwargs"] = info.get("interaction_kwargs", {})
        return row


class RLHFDatasetBeforeMaxSamples(RLHFDataset):
    """RLHFDataset before v0.6.1: no max_samples parameter."""

    def __init__(self, data_files, tokenizer, config, processor=None):
        super().__init__(data_files, tokenizer, config, processor)


def collate_fn(data_list):
    """Tensors (numpy arrays here) stacked; everything else into numpy object arrays."""
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


# ---- verl/protocol.py: DataProto ----


class DataProto:
    def __init__(self, batch=None, non_tensor_batch=None, meta_info=None):
        self.batch = dict(batch or {})
        self.non_tensor_batch = dict(non_tensor_batch or {})
        self.meta_info = dict(meta_info or {})

    @classmethod
    def from_single_dict(cls, data):
        return cls({k: v for k, v in data.items() if v.dtype != object},
                   {k: v for k, v in data.items() if v.dtype == object})

    def __len__(self):
        for v in list(self.batch.values()) + list(self.non_tensor_batch.values()):
            return len(v)
        return 0

    def pop(self, batch_keys=(), non_tensor_batch_keys=()):
        return DataProto({k: self.batch.pop(k) for k in batch_keys},
                         {k: self.non_tensor_batch.pop(k) for k in non_tensor_batch_keys},
                         dict(self.meta_info))

    def repeat(self, repeat_times=2, interleave=True):
        def rep(v):
            if interleave:
                return np.repeat(v, repeat_times, axis=0)
            return np.concatenate([v] * repeat_times, axis=0)

        return DataProto({k: rep(v) for k, v in self.batch.items()},
                         {k: rep(v) for k, v in self.non_tensor_batch.items()}, self.meta_info)

    def union(self, other):
        """Like verl's union_numpy_dict: a key present on both sides must hold equal values."""
        for key, val in other.non_tensor_batch.items():
            if key in self.non_tensor_batch:
                assert all(a == b for a, b in zip(self.non_tensor_batch[key], val)), key
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
    """torchdata's StatefulDataLoader with num_workers=0: batches of `batch_size` items
    (drop_last), fetched when the loop asks for them; state_dict() is the position in the
    epoch and load_state_dict() resumes there (fast-forwarding the sampler)."""

    def __init__(self, dataset, batch_size, sampler, collate_fn, drop_last=True, num_workers=0):
        assert num_workers == 0, "the fake loader has no worker processes"
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler
        self.collate_fn, self.drop_last = collate_fn, drop_last
        self._consumed = 0
        self._resume_from = 0

    def __len__(self):
        return len(self.sampler) // self.batch_size

    def __iter__(self):
        order = list(iter(self.sampler))
        start, self._resume_from = self._resume_from, 0
        for b in range(start, len(self)):
            self._consumed = b + 1
            yield self.collate_fn([self.dataset[i] for i in
                                   order[b * self.batch_size:(b + 1) * self.batch_size]])
        self._consumed = 0

    def state_dict(self):
        return {"batches_consumed": self._consumed}

    def load_state_dict(self, state):
        self._resume_from = state["batches_consumed"]


# ---- verl/utils/import_utils.py: loading data.custom_cls and friends ----


def load_extern(path, name):
    """verl's loader of the installed version.

    v0.4.1 load_extern_type: a file path only, module "custom_module" (pkg:// is a missing
    file). v0.5.0..v0.6.1 load_extern_type: "pkg://a.b" (or a/b) -> importlib.import_module,
    else an optional "file://" prefix and a file executed as "custom_module". v0.7.0.. load_module
    (via load_extern_object): the same, the file module named custom_module_<hash of the path>.
    File modules are not added to sys.modules: every load executes the file again.
    """
    if spec().pkg_loading and path.startswith("pkg://"):
        module = importlib.import_module(path[len("pkg://"):].replace("/", "."))
    else:
        if spec().pkg_loading and path.startswith("file://"):
            path = path[len("file://"):]
        if not os.path.exists(path):
            raise FileNotFoundError(f"Custom type file '{path}' not found.")
        module_name = ("custom_module" if not spec().hashed_module_name
                       else f"custom_module_{hash(os.path.abspath(path))}")
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise AttributeError(f"Custom type '{name}' not found in '{path}'.")
    return getattr(module, name)


def _torch_dataset_class():
    try:
        from torch.utils.data import Dataset
    except ImportError:
        return None
    return Dataset


def create_rl_dataset(data_paths, data_config, tokenizer, processor, is_train=True,
                      max_samples=-1):
    """main_ppo.py (to v0.8.0) / trainer/ppo/utils.py (v0.9.0..): custom_cls or RLHFDataset,
    constructed with max_samples from v0.6.1 on. verl checks issubclass(cls, torch Dataset);
    without torch here the fake checks the map-style protocol instead."""
    custom = data_config.get("custom_cls") or {}
    if custom.get("path") is not None:  # v0.7.0..: rl_dataset.get_dataset_class
        dataset_cls = load_extern(custom["path"], custom["name"])
        base = _torch_dataset_class()
        if base is not None and not issubclass(dataset_cls, base):
            raise TypeError(f"The custom dataset class '{custom['name']}' must inherit from "
                            "torch.utils.data.Dataset")
        if not (hasattr(dataset_cls, "__getitem__") and hasattr(dataset_cls, "__len__")):
            raise TypeError(f"{custom['name']} is not a map-style dataset")
    else:
        from fake_verl.modules import rlhf_dataset_class

        dataset_cls = rlhf_dataset_class()
    kwargs = dict(data_files=data_paths, tokenizer=tokenizer, processor=processor,
                  config=data_config)
    if spec().max_samples:
        kwargs["max_samples"] = max_samples
    return dataset_cls(**kwargs)


def create_rl_sampler(data_config, dataset):
    """data.sampler.class_path (v0.5.0..v0.7.1: constructed as cls(data_source=, data_config=),
    must be an AbstractSampler, needs dataloader_num_workers == 0), else RandomSampler when
    data.shuffle, else SequentialSampler."""
    sampler_cfg = data_config.get("sampler") or {}
    if spec().curriculum_sampler and sampler_cfg.get("class_path") is not None:
        from fake_verl.modules import AbstractSampler

        cls = load_extern(sampler_cfg["class_path"], sampler_cfg["class_name"])
        sampler = cls(data_source=dataset, data_config=data_config)
        assert isinstance(sampler, AbstractSampler)
        assert data_config.get("dataloader_num_workers", 8) == 0
        return sampler
    if data_config.get("shuffle", True):
        return RandomSampler(dataset, seed=data_config.get("seed", 0) or 0)
    return SequentialSampler(dataset)
