"""dots as a verl training dataset: the `data.custom_cls` hook with `on_batch_end`.

**verl is not installed here.** This adapter is written against the hook contract as read in
verl's source (reference/peers.md §2.1 (ii)) and tested against a minimal fake of that contract
(tests/python/fake_verl.py: `create_rl_dataset`, `collate_fn`, `DataProto.repeat/reorder`, a
sequential `StatefulDataLoader` with checkpoint state, and the `RayPPOTrainer.fit` call order).
It has not been run inside a real verl job. It imports without verl and without torch.

Which verl versions it fits
---------------------------
* `data.custom_cls.{path,name}`: loaded by `create_rl_dataset` in `verl/trainer/main_ppo.py`,
  constructed as `cls(data_files=..., tokenizer=..., processor=..., config=data_config,
  max_samples=...)` and required to subclass `torch.utils.data.Dataset`. Present at HEAD.
* `on_batch_end(batch)`: called by the legacy `RayPPOTrainer.fit` (`verl/trainer/ppo/
  ray_trainer.py`; also `experimental/separation/ray_trainer.py`) after every step except the
  last, after metrics and checkpointing. Present from the v0.5 era through v0.8 and v0.9 in the
  legacy trainer. **Not called** by the V1 trainers (`trainer.use_v1=True`, verl/trainer/ppo/v1/),
  nor by the DAPO recipe trainer, nor by `fully_async_policy`: there, no feedback reaches dots
  (leases expire after the run's `lease_timeout_seconds` and those questions become eligible
  again, but the estimator learns nothing from them).
* The sampler API (`data.sampler.class_path`, `AbstractCurriculumSampler.update`, v0.5.0 to
  v0.7.1, removed in v0.8.0) is not used: the dataset hook works on every version above.

How it works
------------
verl iterates a DataLoader over this dataset with `data.train_batch_size` (B) prompts per step.
With `data.shuffle=False` and `data.dataloader_num_workers=0`, index i of the epoch is asked for
in order, after the previous step's `on_batch_end`. The dataset maps i to (step i // B, slot
i % B), asks dots for that step's batch (`NextBatch`, identical on every repeat) and returns the
underlying verl row (your own `RLHFDataset` over the same data file, so prompt formatting and
tokenisation stay verl's) of the question in that slot, tagged with `dots_key` and `dots_step`.
`on_batch_end` groups the batch's rows by `dots_key` (row order does not matter, so
`balance_batch` reordering is fine), sums `token_level_scores` per response into the rollout
reward, and reports each group of `actor_rollout_ref.rollout.n` rewards, with a small payload
(response lengths and behaviour log-prob sums, as .npz) for the record.

Resume: verl's checkpoint restores the DataLoader position, so a resumed job asks for the
indices of the first step it has not trained; dots returns that step's batch exactly as it was
served before, and already-reported groups count as duplicates. One epoch covers
`data.dots.num_steps` steps; set `trainer.total_epochs=1` (a second epoch would restart at step
0, whose batch the server returns again).

Limits: no rollout replay. Replayed groups are finished trajectories, which a dataset of prompts
cannot inject; the run must have `replay.enabled=false` (checked). Replay in verl needs the V1
trainer's ReplayBuffer plug-in (peers.md §2.1 (iii)), which this module does not provide. The
paper reference mode is not supported (its reference batches are not training batches); use the
default inline reference mode, whose reference questions are ordinary rows of the batch.

Configuration (Hydra; new keys need a leading `+`)::

    data.custom_cls.path=pkg://dots_client.verl   (or the path of this file)
    data.custom_cls.name=DotsDataset
    data.shuffle=False  data.dataloader_num_workers=0  trainer.total_epochs=1
    +data.dots.target=dots.example:50051  +data.dots.run_id=my-run  +data.dots.num_steps=500
    # optional: +data.dots.token=...  (or $DOTS_TOKEN)   +data.dots.key_field=index
    #           +data.dots.reward_range=[0,1]  +data.dots.timeout=600
    #           +data.dots.upload_pool=true   (fill an empty run's pool from the train file)
    #           +data.dots.base_cls.path=...  +data.dots.base_cls.name=...  (the dataset class
    #            that builds the rows; default verl.utils.dataset.rl_dataset.RLHFDataset)

Rows are matched to dots questions by `str(row["extra_info"][key_field])` (verl's preprocessing
scripts store `extra_info.index`); upload the pool with the same keys, or let `upload_pool` do
it. The validation dataset (built from `data.val_files` by the same class) passes rows through
unchanged.
"""

import importlib
import importlib.util
import inspect
import io
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from dots_client.client import Batch, Client, DotsError, Group

try:  # verl requires a torch Dataset subclass; torch itself is optional for importing this.
    from torch.utils.data import Dataset as _DatasetBase
except ImportError:  # pragma: no cover - depends on the environment
    _DatasetBase = object

logger = logging.getLogger(__name__)

__all__ = ["DotsDataset", "pool_from_rows"]


def _cfg_get(config: Any, key: str, default: Any = None) -> Any:
    """config[key] for dicts, OmegaConf DictConfigs and attribute objects; default if absent."""
    if config is None:
        return default
    getter = getattr(config, "get", None)
    if callable(getter):
        value = getter(key, default)
    else:
        value = getattr(config, key, default)
    return default if value is None else value


def _as_file_list(files: Any) -> List[str]:
    if files is None:
        return []
    if isinstance(files, (str, bytes, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def _load_object(path: str, name: str) -> Any:
    """Loads `name` from a module path ("pkg://a.b" or "a.b") or a .py file path."""
    if path.startswith("pkg://"):
        path = path[len("pkg://"):]
    if path.endswith(".py") or os.sep in path:
        spec = importlib.util.spec_from_file_location(f"_dots_extern_{abs(hash(path))}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path!r}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(path)
    return getattr(module, name)


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (float tensors as float64)."""
    if hasattr(value, "detach"):
        value = value.detach()
        if hasattr(value, "float") and value.is_floating_point():
            value = value.float()
        value = value.cpu().numpy()
    return np.asarray(value)


def _tensor(batch: Any, name: str) -> Optional[np.ndarray]:
    tensors = batch.batch
    try:
        present = name in tensors.keys()
    except AttributeError:
        present = name in tensors
    return _to_numpy(tensors[name]) if present else None


def _prompt_text(prompt: Any) -> str:
    """The text of a verl prompt column: chat messages joined, or the string itself."""
    if isinstance(prompt, str):
        return prompt
    try:
        return "\n".join(str(m.get("content", "")) for m in prompt)
    except (TypeError, AttributeError):
        return str(prompt)


def pool_from_rows(rows: Sequence[Dict[str, Any]], key_field: str = "index",
                   prompt_key: str = "prompt") -> List[Dict[str, Any]]:
    """dots questions (key, prompt, metadata) from verl dataset rows (raw dataframe rows).

    The key is str(row["extra_info"][key_field]); the metadata keeps `data_source` and
    `reward_model` (the ground truth) when present. Errors: KeyError naming the row.
    """
    questions = []
    for i, row in enumerate(rows):
        info = row.get("extra_info") or {}
        if key_field not in info:
            raise KeyError(f"row {i}: extra_info has no {key_field!r} (data.dots.key_field)")
        metadata = {k: row[k] for k in ("data_source", "reward_model") if row.get(k) is not None}
        questions.append({"key": str(info[key_field]),
                          "prompt": _prompt_text(row.get(prompt_key, "")),
                          "metadata": metadata})
    return questions


def _raw_rows(base: Any) -> List[Dict[str, Any]]:
    """The raw rows of a verl dataset: its HF `dataframe` when present, else base[i]."""
    frame = getattr(base, "dataframe", None)
    if frame is not None:
        return [frame[i] for i in range(len(frame))]
    return [base[i] for i in range(len(base))]


def _extra_info_column(base: Any) -> List[Dict[str, Any]]:
    frame = getattr(base, "dataframe", None)
    if frame is not None:
        try:
            return list(frame["extra_info"])  # HF datasets: one column, no tokenisation
        except (KeyError, TypeError):
            pass
    return [(r.get("extra_info") or {}) for r in _raw_rows(base)]


class DotsDataset(_DatasetBase):
    """A verl training dataset whose order of questions is chosen by a dots run.

    Constructed by verl (`data.custom_cls`) as DotsDataset(data_files=..., tokenizer=...,
    processor=..., config=<the data config>, max_samples=...), or directly with `wrap`.
    In selection mode (data_files == data.train_files) every item comes from the server; for
    any other files (validation) it is a pass-through over the underlying dataset.

    Cost: one NextBatch call per step (cached), O(1) per item; on_batch_end O(rows) plus one
    ReportRollouts call. Blocks while the server plans a round. Errors: DotsError from the
    server; ValueError for configurations that cannot work (named in the message).
    """

    def __init__(self, data_files=None, tokenizer=None, config=None, processor=None,
                 max_samples: int = -1, **kwargs):
        dots_cfg = _cfg_get(config, "dots", {})
        base_cls_cfg = _cfg_get(dots_cfg, "base_cls", None)
        if base_cls_cfg is not None:
            base_cls = _load_object(_cfg_get(base_cls_cfg, "path"), _cfg_get(base_cls_cfg, "name"))
        else:
            from verl.utils.dataset.rl_dataset import RLHFDataset as base_cls
        base_kwargs = dict(data_files=data_files, tokenizer=tokenizer, config=config,
                           processor=processor, **kwargs)
        parameters = inspect.signature(base_cls).parameters
        if "max_samples" in parameters or any(p.kind == p.VAR_KEYWORD
                                               for p in parameters.values()):
            base_kwargs["max_samples"] = max_samples  # absent from older verl versions
        base = base_cls(**base_kwargs)

        files = _as_file_list(data_files)
        train = _as_file_list(_cfg_get(config, "train_files"))
        val = _as_file_list(_cfg_get(config, "val_files"))
        if files != train:
            self._setup_passthrough(base)
            return
        if train == val:
            raise ValueError(
                "data.train_files == data.val_files: the dots dataset cannot tell the training "
                "dataset from the validation one; use two files"
            )
        if _cfg_get(config, "shuffle", True):
            raise ValueError("data.shuffle must be False with the dots dataset (the server "
                             "chooses the order; a shuffled sampler would ask for steps out of "
                             "order)")
        gen_batch_size = _cfg_get(config, "gen_batch_size", None)
        if gen_batch_size is not None and gen_batch_size != _cfg_get(config, "train_batch_size"):
            raise ValueError("data.gen_batch_size differs from data.train_batch_size: the "
                             "dataloader would not ask for whole dots steps")
        if _cfg_get(config, "dataloader_num_workers", 8) != 0:
            raise ValueError("data.dataloader_num_workers must be 0 with the dots dataset "
                             "(worker prefetching would ask for steps before the previous "
                             "one is reported)")
        target = _cfg_get(dots_cfg, "target", os.environ.get("DOTS_TARGET"))
        run_id = _cfg_get(dots_cfg, "run_id", os.environ.get("DOTS_RUN_ID"))
        num_steps = _cfg_get(dots_cfg, "num_steps", None)
        for name, value in (("target", target), ("run_id", run_id), ("num_steps", num_steps)):
            if value is None:
                raise ValueError(f"data.dots.{name} is not set (+data.dots.{name}=... on the "
                                 "command line)")
        token = _cfg_get(dots_cfg, "token", os.environ.get("DOTS_TOKEN"))
        client = Client(str(target), token=token,
                        timeout=float(_cfg_get(dots_cfg, "timeout", 600.0)))
        if _cfg_get(dots_cfg, "upload_pool", False):
            if client.get_run(str(run_id))["pool_size"] == 0:
                rows = _raw_rows(base)
                key_field = str(_cfg_get(dots_cfg, "key_field", "index"))
                questions = pool_from_rows(rows, key_field, _cfg_get(config, "prompt_key",
                                                                     "prompt"))
                client.upsert_questions(str(run_id), questions)
        reward_range = _cfg_get(dots_cfg, "reward_range", (0.0, 1.0))
        self._setup(base, client, str(run_id), int(_cfg_get(config, "train_batch_size")),
                    int(num_steps), key_field=str(_cfg_get(dots_cfg, "key_field", "index")),
                    reward_range=(float(reward_range[0]), float(reward_range[1])))

    @classmethod
    def wrap(cls, base: Any, client: Client, run_id: str, batch_size: int, num_steps: int,
             key_field: str = "index", reward_range=(0.0, 1.0),
             policy_version: Optional[Callable[[int], int]] = None) -> "DotsDataset":
        """A DotsDataset over an existing dataset `base` (rows with extra_info[key_field])."""
        self = cls.__new__(cls)
        self._setup(base, client, run_id, batch_size, num_steps, key_field, reward_range,
                    policy_version)
        return self

    # ---- setup ----

    def _setup_passthrough(self, base: Any) -> None:
        self.base = base
        self.selecting = False

    def _setup(self, base, client, run_id, batch_size, num_steps, key_field="index",
               reward_range=(0.0, 1.0), policy_version=None) -> None:
        if batch_size < 1 or num_steps < 1:
            raise ValueError(f"batch_size {batch_size} and num_steps {num_steps} must be >= 1")
        lo, hi = reward_range
        if not hi > lo:
            raise ValueError(f"data.dots.reward_range: [{lo}, {hi}] is empty")
        self.base = base
        self.selecting = True
        self.client = client
        self.run_id = run_id
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.key_field = key_field
        self.reward_range = (lo, hi)
        self.policy_version = policy_version or (lambda step: step)
        self._batches: Dict[int, Batch] = {}
        self.reported_steps: List[int] = []
        config = client.get_run(run_id)["config"]
        if config.get("replay", {}).get("enabled", True):
            raise ValueError(f"run {run_id!r}: replay.enabled must be false with the verl "
                             "dataset hook (replayed trajectories cannot be injected as prompts)")
        if config.get("reference_mode") == "paper":
            raise ValueError(f"run {run_id!r}: reference_mode 'paper' is not supported by the "
                             "verl dataset hook; use 'inline' or 'none'")
        if config.get("batch_size") != batch_size:
            raise ValueError(f"run {run_id!r} has batch_size {config.get('batch_size')}, but "
                             f"data.train_batch_size is {batch_size}: they must be equal")
        self.group_size = int(config.get("group_size", 0))
        self._row_of: Dict[str, int] = {}
        for i, info in enumerate(_extra_info_column(base)):
            if key_field not in (info or {}):
                raise KeyError(f"row {i} of the training data has no extra_info.{key_field} "
                               "(data.dots.key_field)")
            self._row_of[str(info[key_field])] = i

    # ---- the torch Dataset protocol ----

    def __len__(self) -> int:
        if not self.selecting:
            return len(self.base)
        return self.num_steps * self.batch_size

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not self.selecting:
            return self.base[index]
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        step, slot = divmod(int(index), self.batch_size)
        batch = self._batch(step)
        item = batch.items[slot]
        row_index = self._row_of.get(item.key)
        if row_index is None:
            raise KeyError(f"run {self.run_id!r} step {step}: question {item.key!r} is not in "
                           f"the training data (matched by extra_info.{self.key_field})")
        row = dict(self.base[row_index])
        row["dots_key"] = item.key
        row["dots_step"] = step
        return row

    def _batch(self, step: int) -> Batch:
        batch = self._batches.get(step)
        if batch is None:
            batch = self.client.next_batch(self.run_id, step,
                                           policy_version=int(self.policy_version(step)))
            if batch.reference_batch or batch.replay or len(batch.items) != self.batch_size:
                raise DotsError(
                    "FAILED_PRECONDITION",
                    f"run {self.run_id!r} step {step}: got {len(batch.items)} questions and "
                    f"{len(batch.replay)} replay groups, the dataset needs {self.batch_size} "
                    "questions and no replay",
                )
            self._batches = {s: b for s, b in self._batches.items() if s >= step - 1}
            self._batches[step] = batch
        return batch

    # ---- verl's feedback hook ----

    def on_batch_end(self, batch: Any) -> Optional[Dict[str, Any]]:
        """Reports the step's rollout groups from verl's DataProto (after the update).

        Reads non_tensor_batch["dots_key"/"dots_step"], batch["token_level_scores"] (summed
        per response), and, when present, "response_mask" and "old_log_probs" for the payload.
        Returns the server's report result (None in pass-through mode). Errors: ValueError for
        a batch without dots rows, rows of several steps, or a reward outside reward_range;
        DotsError when the server rejects a group.
        """
        if not self.selecting:
            return None
        non_tensor = batch.non_tensor_batch
        if "dots_key" not in non_tensor:
            raise ValueError("on_batch_end: the batch has no 'dots_key' rows (was it built from "
                             "this dataset?)")
        keys = [str(k) for k in non_tensor["dots_key"]]
        steps = {int(s) for s in non_tensor["dots_step"]}
        if len(steps) != 1:
            raise ValueError(f"on_batch_end: rows of steps {sorted(steps)} in one batch")
        step = steps.pop()
        scores = _tensor(batch, "token_level_scores")
        if scores is None:
            raise ValueError("on_batch_end: the batch has no 'token_level_scores'")
        rewards = scores.reshape(len(keys), -1).sum(axis=1).astype(np.float64)
        mask = _tensor(batch, "response_mask")
        old = _tensor(batch, "old_log_probs")
        lengths = mask.reshape(len(keys), -1).sum(axis=1) if mask is not None else None
        logprob_sums = ((old * mask).reshape(len(keys), -1).sum(axis=1)
                        if old is not None and mask is not None else None)
        lo, hi = self.reward_range
        mapped = (rewards - lo) / (hi - lo)
        rows_of: Dict[str, List[int]] = {}
        for i, key in enumerate(keys):
            if not -1e-6 <= mapped[i] <= 1 + 1e-6:
                raise ValueError(f"on_batch_end: question {key!r} has reward {rewards[i]} outside "
                                 f"data.dots.reward_range [{lo}, {hi}]")
            rows_of.setdefault(key, []).append(i)
        version = int(self.policy_version(step))
        groups = []
        for key, rows in rows_of.items():
            payload = io.BytesIO()
            arrays = {}
            if lengths is not None:
                arrays["response_length"] = lengths[rows].astype(np.int32)
            if logprob_sums is not None:
                arrays["logprob_sum"] = logprob_sums[rows].astype(np.float32)
            if arrays:
                np.savez(payload, **arrays)
            groups.append(Group(key=key, rewards=np.clip(mapped[rows], 0.0, 1.0).tolist(),
                                policy_version=version, payload=payload.getvalue()))
        result = self.client.report(self.run_id, step, groups)
        if result["rejected"]:
            reasons = "; ".join(f"{r['key']!r}: {r['error']}" for r in result["rejected"])
            raise DotsError("INVALID_ARGUMENT", f"run {self.run_id!r} step {step}: "
                            f"{len(result['rejected'])} group(s) rejected: {reasons}")
        served = self._batches.get(step)
        if served is not None:
            missing = {i.key for i in served.items} - set(rows_of)
            if missing:
                logger.warning("dots step %d: %d question(s) of the batch had no rollouts in "
                               "on_batch_end; their leases will expire", step, len(missing))
        self.reported_steps.append(step)
        return result
