"""dots as the data source of a verl job: the training dataset plus the feedback hook that
reports every step's rewards, for each verl version and trainer.

Supported: verl 0.5.0 <= version < 0.10.0 (0.10.0.dev, the main branch as read, included),
legacy trainer (RayPPOTrainer) and, from 0.9.0, the V1 trainer in `sync` mode. The mechanism
is chosen when this module is imported, from `verl.__version__`:

================  ==================  ===================================================
verl              trainer             how rewards reach dots
================  ==================  ===================================================
< 0.5.0           -                   refused: no hook runs after a step
0.5.0 - 0.7.1     legacy              DotsSampler, `data.sampler.class_path`: verl calls
                                      `AbstractCurriculumSampler.update(batch)` after every
                                      step, the last included (ray_trainer.py `fit`)
0.8.0 - 0.10.dev  legacy (0.9+:       DotsDataset.on_batch_end, called after every step
                  trainer.use_v1=     but the trainer's last one; so the trainer is given
                  False)              one step more than the dataset holds
                                      (`trainer.total_training_steps` = num_steps + 1):
                                      the loop ends when the data does, after the hook
0.9.0 - 0.10.dev  V1, trainer_mode    DotsReplayBuffer, `trainer.v1.sampler.custom_sampler`:
                  sync (default)      its `sample()` reads each trajectory's rm_scores and
                                      extra_info from TransferQueue and reports them
V1 colocate_async / separate_async    refused: they fetch prompts of later steps before a
                                      step is reported and re-fetch single prompts
================  ==================  ===================================================

The question key, the step and the run travel in each row's `extra_info` (dots_key, dots_step,
dots_run), the one column every version keeps from the dataset to the hook: from v0.7.0 the
legacy `_get_gen_batch` pops all other non-tensor columns, and the agent loop copies them back
only when no reward-loop workers are handed over; V1 stores `extra_info` with each trajectory.

Configuration (Hydra; keys that verl's config lacks need a leading `+`)::

    # every version and trainer
    data.custom_cls.path=pkg://dots_client.verl  data.custom_cls.name=DotsDataset
    data.shuffle=False  data.dataloader_num_workers=0  trainer.total_epochs=1
    +data.dots.target=HOST:PORT  +data.dots.run_id=RUN  +data.dots.num_steps=N
    # 0.5.0 - 0.7.1 (legacy trainer)
    data.sampler.class_path=pkg://dots_client.verl  data.sampler.class_name=DotsSampler
    # 0.8.x, and 0.9+ with trainer.use_v1=False
    trainer.total_training_steps=N+1    (the number, e.g. 501 for N=500)
    # 0.9+ V1 trainer (trainer.use_v1=True, trainer.v1.trainer_mode=sync: the defaults)
    trainer.v1.sampler.custom_sampler.path=pkg://dots_client.verl
    trainer.v1.sampler.custom_sampler.name=DotsReplayBuffer
    # optional: +data.dots.token=... (or $DOTS_TOKEN)  +data.dots.key_field=index
    #   +data.dots.reward_range=[0,1]  +data.dots.timeout=600  +data.dots.upload_pool=true
    #   +data.dots.base_cls.path=... +data.dots.base_cls.name=...  (the dataset that builds
    #   the rows; default verl.utils.dataset.rl_dataset.RLHFDataset)

Checked when verl builds the dataset (ValueError naming the setting): the verl version; shuffle
off; no dataloader workers; data.gen_batch_size unset or equal to data.train_batch_size (checked
again at the first item, because the V1 trainer rewrites it after building the dataset);
distinct train and validation files; the dots run exists with replay off, batch_size equal to
data.train_batch_size and group_size equal to actor_rollout_ref.rollout.n; and, through the
whole config above the data config (OmegaConf's parent link): the hook setting of the version,
trainer.total_epochs=1, V1 in sync mode without algorithm.filter_groups or
sync_refill_failed_groups (both make verl fetch single prompts), and V1 rewards computed during
rollout (no colocated reward model: reward.reward_model.enable_resource_pool=True or no reward
model). While training: a step whose rewards never arrived stops the next step with an error
naming the hook setting; a batch without rewards (token_level_scores / rm_scores) is an error.

How it works: with B = data.train_batch_size, index i of the epoch is slot i % B of dots step
i // B; the dataset asks dots for that step's batch (NextBatch, identical on every repeat) and
returns the row of the question in that slot from the underlying dataset (so prompt formatting
and tokenisation stay verl's). Rows are matched by str(extra_info[key_field]); upload the pool
with the same keys, or let upload_pool do it (pool_from_rows). Each hook groups the rows of a
step by key (order does not matter: balance_batch reorders), sums the token-level rewards of
each response and reports each group once; a group already reported by this process is not
sent again. The validation dataset (data.val_files) passes rows through.

Crash and restart: verl's checkpoint stores the dataloader position, so a restarted job asks for
the indices of the first step it had not checkpointed; dots returns exactly the batches it
served before, and groups reported before the crash come back as duplicates (counted, not
applied twice). Leases of questions that were served but never reported expire after the run's
lease_timeout_seconds.

Limits: no rollout replay (a dataset of prompts cannot inject finished trajectories: the run
needs replay.enabled=false) and no paper reference mode.
"""

import importlib
import importlib.util
import inspect
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import numpy as np

from dots_client import _verl_support as support
from dots_client.client import Batch, Client, DotsError

try:  # verl requires a torch Dataset subclass; without torch this module still imports.
    from torch.utils.data import Dataset as _DatasetBase
except ImportError:  # pragma: no cover - depends on the environment
    _DatasetBase = object

logger = logging.getLogger(__name__)


def _installed_verl_version() -> Optional[str]:
    try:
        verl = importlib.import_module("verl")
    except ImportError:
        return None
    return str(getattr(verl, "__version__", "0"))


VERL_VERSION: Optional[str] = _installed_verl_version()
_VERSION = support.parse_version(VERL_VERSION) if VERL_VERSION else None
# The legacy trainer's mechanism for the installed verl (None: none installed or unsupported).
LEGACY_MECHANISM = support.legacy_mechanism(_VERSION) if _VERSION else None
HAS_V1_TRAINER = bool(_VERSION) and support.has_v1_trainer(_VERSION)

__all__ = ["DotsDataset", "pool_from_rows", "VERL_VERSION", "LEGACY_MECHANISM", "HAS_V1_TRAINER"]


def _as_file_list(files: Any) -> List[str]:
    if files is None:
        return []
    if isinstance(files, (str, bytes, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def _load_object(path: str, name: str) -> Any:
    """Loads `name` from "pkg://a.b", "a.b", "file://x.py" or a .py file path."""
    if path.startswith("pkg://"):
        path = path[len("pkg://"):].replace("/", ".")
    elif path.startswith("file://"):
        path = path[len("file://"):]
    if path.endswith(".py") or os.sep in path:
        spec = importlib.util.spec_from_file_location(f"_dots_extern_{abs(hash(path))}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path!r}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(path)
    return getattr(module, name)


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


def _hook_setting() -> str:
    """The configuration that wires the feedback hook of the installed verl, for messages."""
    if LEGACY_MECHANISM == support.CURRICULUM_SAMPLER:
        return ("data.sampler.class_path=pkg://dots_client.verl "
                "data.sampler.class_name=DotsSampler")
    legacy = "trainer.total_training_steps=<data.dots.num_steps + 1>"
    if HAS_V1_TRAINER:
        return ("trainer.v1.sampler.custom_sampler.path=pkg://dots_client.verl "
                "trainer.v1.sampler.custom_sampler.name=DotsReplayBuffer (V1 trainer) or "
                f"{legacy} (trainer.use_v1=False)")
    return legacy


def _require_supported_verl() -> None:
    if VERL_VERSION is None:
        raise ImportError("verl is not importable: DotsDataset built from a verl config needs "
                          "verl (use DotsDataset.wrap for a custom loop)")
    if LEGACY_MECHANISM is None:
        raise ValueError(f"verl {VERL_VERSION} is not supported by dots_client.verl: it needs "
                         f"{support.supported_range_text()}")


class DotsDataset(_DatasetBase):
    """A verl training dataset whose order of questions is chosen by a dots run.

    Constructed by verl (`data.custom_cls`) as DotsDataset(data_files=..., tokenizer=...,
    processor=..., config=<the data config>[, max_samples=...]), or directly with `wrap`.
    For data_files == data.train_files it serves the run's batches; for any other files
    (validation) it is a pass-through over the underlying dataset.

    Cost: one NextBatch call per step (cached), O(1) per item; a report is O(rows) plus one
    ReportRollouts call. Blocks while the server plans a round. Errors: DotsError from the
    server; ValueError for configurations that cannot work (naming the setting).
    """

    def __init__(self, data_files=None, tokenizer=None, config=None, processor=None,
                 max_samples: int = -1, **kwargs):
        _require_supported_verl()
        dots_cfg = support.cfg_get(config, "dots", {})
        base_cls_cfg = support.cfg_get(dots_cfg, "base_cls", None)
        if base_cls_cfg is not None:
            base_cls = _load_object(support.cfg_get(base_cls_cfg, "path"),
                                    support.cfg_get(base_cls_cfg, "name"))
        else:
            from verl.utils.dataset.rl_dataset import RLHFDataset as base_cls
        base_kwargs = dict(data_files=data_files, tokenizer=tokenizer, config=config,
                           processor=processor, **kwargs)
        parameters = inspect.signature(base_cls).parameters
        if "max_samples" in parameters or any(p.kind == p.VAR_KEYWORD
                                               for p in parameters.values()):
            base_kwargs["max_samples"] = max_samples  # absent before verl 0.6.1
        base = base_cls(**base_kwargs)

        files = _as_file_list(data_files)
        train = _as_file_list(support.cfg_get(config, "train_files"))
        val = _as_file_list(support.cfg_get(config, "val_files"))
        if files != train:
            self._setup_passthrough(base)
            return
        if train == val:
            raise ValueError("data.train_files == data.val_files: the dots dataset cannot tell "
                             "the training dataset from the validation one; use two files")
        self._check_data_config(config)
        target = support.cfg_get(dots_cfg, "target", os.environ.get("DOTS_TARGET"))
        run_id = support.cfg_get(dots_cfg, "run_id", os.environ.get("DOTS_RUN_ID"))
        num_steps = support.cfg_get(dots_cfg, "num_steps", None)
        for name, value in (("target", target), ("run_id", run_id), ("num_steps", num_steps)):
            if value is None:
                raise ValueError(f"data.dots.{name} is not set (+data.dots.{name}=... on the "
                                 "command line)")
        root = support.root_config(config)
        group_size = self._check_trainer_config(config, root, int(num_steps))
        token = support.cfg_get(dots_cfg, "token", os.environ.get("DOTS_TOKEN"))
        client = Client(str(target), token=token,
                        timeout=float(support.cfg_get(dots_cfg, "timeout", 600.0)))
        key_field = str(support.cfg_get(dots_cfg, "key_field", "index"))
        if support.cfg_get(dots_cfg, "upload_pool", False):
            if client.get_run(str(run_id))["pool_size"] == 0:
                questions = pool_from_rows(_raw_rows(base), key_field,
                                           support.cfg_get(config, "prompt_key", "prompt"))
                client.upsert_questions(str(run_id), questions)
        reward_range = support.cfg_get(dots_cfg, "reward_range", (0.0, 1.0))
        self._setup(base, client, str(run_id), int(support.cfg_get(config, "train_batch_size")),
                    int(num_steps), key_field=key_field,
                    reward_range=(float(reward_range[0]), float(reward_range[1])),
                    group_size=group_size)
        self._data_config = config

    @classmethod
    def wrap(cls, base: Any, client: Client, run_id: str, batch_size: int, num_steps: int,
             key_field: str = "index", reward_range=(0.0, 1.0),
             policy_version: Optional[Callable[[int], int]] = None) -> "DotsDataset":
        """A DotsDataset over an existing dataset `base` (rows with extra_info[key_field]), for
        a custom loop: it serves items and reports through report_data_proto / report_rows."""
        self = cls.__new__(cls)
        self._setup(base, client, run_id, batch_size, num_steps, key_field, reward_range,
                    policy_version=policy_version)
        return self

    # ---- start-up checks ----

    @staticmethod
    def _check_data_config(config: Any) -> None:
        if support.cfg_get(config, "shuffle", True):
            raise ValueError("data.shuffle must be False with the dots dataset (the server "
                             "chooses the order; a shuffled sampler asks for steps out of order)")
        if support.cfg_get(config, "dataloader_num_workers", 8) != 0:
            raise ValueError("data.dataloader_num_workers must be 0 with the dots dataset "
                             "(worker prefetching asks for a step before the previous one is "
                             "reported)")
        gen_batch_size = support.cfg_get(config, "gen_batch_size", None)
        if gen_batch_size is not None and gen_batch_size != support.cfg_get(config,
                                                                            "train_batch_size"):
            raise ValueError(f"data.gen_batch_size={gen_batch_size} differs from "
                             "data.train_batch_size: the dataloader would not ask for whole dots "
                             "steps; leave it unset")
        if LEGACY_MECHANISM == support.CURRICULUM_SAMPLER:
            name = support.cfg_get(config, "sampler.class_name")
            path = str(support.cfg_get(config, "sampler.class_path", ""))
            if name != "DotsSampler" or not path.endswith(("dots_client.verl", "dots_client/verl",
                                                           "dots_client/verl.py")):
                raise ValueError(
                    f"verl {VERL_VERSION} reports rewards through the curriculum sampler: set "
                    f"{_hook_setting()} (now data.sampler.class_path={path or None}, "
                    f"class_name={name})")

    def _check_trainer_config(self, config: Any, root: Any, num_steps: int) -> Optional[int]:
        """Checks what the data config cannot show, through the whole trainer config. Returns
        actor_rollout_ref.rollout.n (None when the whole config is not reachable)."""
        if root is None:
            logger.warning("dots: the trainer config above data is not reachable (not an "
                           "OmegaConf node): trainer settings are not checked; they must be "
                           "%s and trainer.total_epochs=1", _hook_setting())
            return None
        epochs = support.cfg_get(root, "trainer.total_epochs", 1)
        if epochs != 1:
            raise ValueError(f"trainer.total_epochs={epochs}: must be 1 (data.dots.num_steps "
                             "steps are one epoch; a second would serve step 0 again)")
        use_v1 = HAS_V1_TRAINER and bool(support.cfg_get(root, "trainer.use_v1", False))
        if use_v1:
            mode = support.cfg_get(root, "trainer.v1.trainer_mode", "sync")
            if mode != "sync":
                raise ValueError(f"trainer.v1.trainer_mode={mode}: dots supports the V1 trainer "
                                 "in sync mode only (async modes fetch later steps' prompts "
                                 "before a step is reported, and single prompts as refills)")
            name = support.cfg_get(root, "trainer.v1.sampler.custom_sampler.name")
            if name != "DotsReplayBuffer":
                raise ValueError(
                    "the V1 trainer reports rewards to dots only through the custom sampler: "
                    "set trainer.v1.sampler.custom_sampler.path=pkg://dots_client.verl and "
                    f"trainer.v1.sampler.custom_sampler.name=DotsReplayBuffer (now {name})")
            if support.cfg_get(root, "algorithm.filter_groups.enable", False):
                raise ValueError("algorithm.filter_groups.enable=True: V1 then fetches single "
                                 "prompts (gen_batch_size=1) beyond the step's batch; dots "
                                 "selects the batch, so turn group filtering off")
            if support.cfg_get(root, "trainer.v1.sampler.sync_refill_failed_groups", False):
                raise ValueError("trainer.v1.sampler.sync_refill_failed_groups=True: refills "
                                 "fetch prompts beyond the step's batch; set it to False")
            if (support.cfg_get(root, "reward.reward_model.enable", False) and
                    not support.cfg_get(root, "reward.reward_model.enable_resource_pool", False)):
                raise ValueError("reward.reward_model.enable=True without "
                                 "reward.reward_model.enable_resource_pool: V1 then scores "
                                 "after sampling, so the sampler sees no rewards; give the "
                                 "reward model its own resource pool")
        elif LEGACY_MECHANISM == support.ON_BATCH_END:
            total = support.cfg_get(root, "trainer.total_training_steps", None)
            if total != num_steps + 1:
                raise ValueError(
                    f"trainer.total_training_steps={total}: with verl {VERL_VERSION}'s legacy "
                    "trainer set it to data.dots.num_steps + 1 = "
                    f"{num_steps + 1} (on_batch_end is not called after the trainer's last "
                    "step; one step more than the data makes the loop end with the data, "
                    "after the hook)")
            save_freq = support.cfg_get(root, "trainer.save_freq", -1)
            if save_freq > 0 and num_steps % save_freq:
                logger.warning("dots: data.dots.num_steps=%d is not a multiple of "
                               "trainer.save_freq=%d: the final weights are not checkpointed "
                               "(verl saves at the trainer's last step, which is never reached)",
                               num_steps, save_freq)
        n = support.cfg_get(root, "actor_rollout_ref.rollout.n", None)
        return int(n) if n is not None else None

    # ---- setup ----

    def _setup_passthrough(self, base: Any) -> None:
        self.base = base
        self.selecting = False

    def _setup(self, base, client, run_id, batch_size, num_steps, key_field="index",
               reward_range=(0.0, 1.0), policy_version=None, group_size=None) -> None:
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
        self._data_config = None
        self._batches: Dict[int, Batch] = {}
        self._reported: Dict[int, Set[str]] = {}  # step -> keys reported by this process
        self.reported_steps: List[int] = []  # steps in the order of their first report
        config = client.get_run(run_id)["config"]
        if config.get("replay", {}).get("enabled", True):
            raise ValueError(f"run {run_id!r}: replay.enabled must be false with the verl "
                             "adapter (replayed trajectories cannot be injected as prompts)")
        if config.get("reference_mode") == "paper":
            raise ValueError(f"run {run_id!r}: reference_mode 'paper' is not supported by the "
                             "verl adapter; use 'inline' or 'none'")
        if config.get("batch_size") != batch_size:
            raise ValueError(f"run {run_id!r} has batch_size {config.get('batch_size')}, but "
                             f"data.train_batch_size is {batch_size}: they must be equal")
        self.group_size = int(config.get("group_size", 0))
        if group_size is not None and group_size != self.group_size:
            raise ValueError(f"actor_rollout_ref.rollout.n={group_size} but run {run_id!r} has "
                             f"group_size {self.group_size}: they must be equal")
        self._row_of: Dict[str, int] = {}
        for i, info in enumerate(_extra_info_column(base)):
            if key_field not in (info or {}):
                raise KeyError(f"row {i} of the training data has no extra_info.{key_field} "
                               "(data.dots.key_field)")
            self._row_of[str(info[key_field])] = i
        support.register(run_id, self)

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
        if self._data_config is not None:
            self._check_data_config(self._data_config)  # V1 rewrites gen_batch_size late
        step, slot = divmod(int(index), self.batch_size)
        item = self._batch(step).items[slot]
        row_index = self._row_of.get(item.key)
        if row_index is None:
            raise KeyError(f"run {self.run_id!r} step {step}: question {item.key!r} is not in "
                           f"the training data (matched by extra_info.{self.key_field})")
        row = dict(self.base[row_index])
        info = dict(row.get("extra_info") or {})
        info.update({support.KEY_FIELD: item.key, support.STEP_FIELD: step,
                     support.RUN_FIELD: self.run_id})
        row["extra_info"] = info
        return row

    def _batch(self, step: int) -> Batch:
        batch = self._batches.get(step)
        if batch is not None:
            return batch
        previous = self._batches.get(step - 1)
        if previous is not None:
            reported = self._reported.get(step - 1, set())
            if not reported:
                raise RuntimeError(
                    f"dots run {self.run_id!r}: step {step - 1} was trained but none of its "
                    f"rewards were reported, so the feedback hook is not wired: {_hook_setting()}")
            missing = {i.key for i in previous.items} - reported
            if missing:
                logger.warning("dots step %d: %d question(s) had no rollouts reported; their "
                               "leases will expire", step - 1, len(missing))
        batch = self.client.next_batch(self.run_id, step,
                                       policy_version=int(self.policy_version(step)))
        if batch.reference_batch or batch.replay or len(batch.items) != self.batch_size:
            raise DotsError(
                "FAILED_PRECONDITION",
                f"run {self.run_id!r} step {step}: got {len(batch.items)} questions and "
                f"{len(batch.replay)} replay groups, the dataset needs {self.batch_size} "
                "questions and no replay")
        self._batches = {s: b for s, b in self._batches.items() if s >= step - 1}
        self._batches[step] = batch
        return batch

    # ---- reporting (used by every hook) ----

    def report_rows(self, keys: Sequence[str], steps: Sequence[int], rewards: np.ndarray,
                    lengths: Optional[np.ndarray] = None,
                    logprob_sums: Optional[np.ndarray] = None) -> List[Dict[str, Any]]:
        """Reports rollout rows (one per response, any order) grouped by (step, key); groups
        this process already reported are skipped. Returns the server's results, one per step
        with something new. Errors: ValueError for a reward outside data.dots.reward_range;
        DotsError when the server rejects a group."""
        results = []
        keys, steps = list(keys), [int(s) for s in steps]
        for step in sorted(set(steps)):
            done = self._reported.setdefault(step, set())
            rows = [i for i, s in enumerate(steps) if s == step and keys[i] not in done]
            if not rows:
                continue
            pick = lambda a: None if a is None else np.asarray(a)[rows]  # noqa: E731
            groups = support.build_groups([keys[i] for i in rows], pick(rewards),
                                          self.reward_range, int(self.policy_version(step)),
                                          pick(lengths), pick(logprob_sums))
            result = self.client.report(self.run_id, step, groups)
            if result["rejected"]:
                reasons = "; ".join(f"{r['key']!r}: {r['error']}" for r in result["rejected"])
                raise DotsError("INVALID_ARGUMENT", f"run {self.run_id!r} step {step}: "
                                f"{len(result['rejected'])} group(s) rejected: {reasons}")
            if not done:
                self.reported_steps.append(step)
            done.update(g.key for g in groups)
            results.append(result)
        return results

    def report_data_proto(self, batch: Any, where: str) -> List[Dict[str, Any]]:
        """Reports a legacy-trainer DataProto after its update: extra_info per row,
        token_level_scores summed per response, response_mask and old_log_probs when present.
        Errors: ValueError when rows lack the dots fields or the batch has no rewards."""
        if not self.selecting:
            return []
        if "extra_info" not in batch.non_tensor_batch:
            raise ValueError(f"{where}: the batch has no extra_info column; the training dataset "
                             "must be DotsDataset (data.custom_cls.name=DotsDataset)")
        keys, steps, _ = support.dots_fields(batch.non_tensor_batch["extra_info"], where)
        tensors = batch.batch
        names = set(tensors.keys())
        if "token_level_scores" not in names:
            raise ValueError(f"{where}: the batch has no token_level_scores (rewards missing: "
                             "check the reward function / reward_model settings)")
        rewards = support.row_sums(tensors["token_level_scores"])
        mask = support.to_numpy(tensors["response_mask"]) if "response_mask" in names else None
        lengths = mask.reshape(len(keys), -1).sum(axis=1) if mask is not None else None
        logprob_sums = None
        if mask is not None and "old_log_probs" in names:
            old = support.to_numpy(tensors["old_log_probs"])
            logprob_sums = (old * mask).reshape(len(keys), -1).sum(axis=1)
        return self.report_rows(keys, steps, rewards, lengths, logprob_sums)

    def on_batch_end(self, batch: Any) -> None:
        """verl's dataset hook (legacy trainer): reports the step's groups not yet reported."""
        self.report_data_proto(batch, "on_batch_end")


# ---- v0.5.0 .. v0.7.1: the curriculum sampler (verl/experimental/dataset/sampler.py) ----

if LEGACY_MECHANISM == support.CURRICULUM_SAMPLER:
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler

    class DotsSampler(AbstractCurriculumSampler):
        """`data.sampler.class_path`: yields the dataset's indices in order and reports each
        step's rewards in `update(batch)`, which verl calls after every step, the last one
        included. Errors: ValueError when the dataset is not a selecting DotsDataset."""

        def __init__(self, data_source, data_config):
            if not getattr(data_source, "selecting", False):
                raise ValueError("data.sampler.class_name=DotsSampler needs the training "
                                 "dataset to be DotsDataset (data.custom_cls.name=DotsDataset)")
            self.data_source = data_source
            self.data_config = data_config

        def __iter__(self):
            return iter(range(len(self.data_source)))

        def __len__(self) -> int:
            return len(self.data_source)

        def update(self, batch) -> None:
            self.data_source.report_data_proto(batch, "DotsSampler.update")

    __all__.append("DotsSampler")


# ---- v0.9.0 ..: the V1 trainer's replay buffer (verl/trainer/ppo/v1/replay_buffer.py) ----

_ReplayBufferBase = None
if HAS_V1_TRAINER:
    try:
        from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer as _ReplayBufferBase
        import transfer_queue as _tq
    except ImportError as e:  # a verl install without the V1 dependencies
        logger.warning("dots: the V1 trainer's ReplayBuffer is not importable (%s); "
                       "DotsReplayBuffer is not defined", e)
        _ReplayBufferBase = None

if _ReplayBufferBase is not None:

    class DotsReplayBuffer(_ReplayBufferBase):
        """`trainer.v1.sampler.custom_sampler`: verl's sync sampling, then the sampled groups'
        rewards (rm_scores, per token, written by the reward loop during rollout) and
        extra_info are read from TransferQueue and reported before the trainer trains on them.
        The validation partition passes through. Errors: ValueError at construction for a
        trainer mode other than sync; RuntimeError when sampled trajectories carry no
        rm_scores."""

        def __init__(self, *args, **kwargs):
            mode = kwargs.get("trainer_mode", args[0] if args else None)
            if mode != "sync":
                raise ValueError(f"trainer.v1.trainer_mode={mode}: DotsReplayBuffer supports "
                                 "the sync mode only")
            super().__init__(*args, **kwargs)

        def sample(self, global_steps: int, partition_id: str, batch_size: int):
            batch, metrics = super().sample(global_steps, partition_id, batch_size)
            if partition_id == "train":
                self._report(batch)
            return batch, metrics

        def _report(self, batch) -> None:
            where = "DotsReplayBuffer.sample"
            keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding")]
            if not keys:
                return
            try:
                data = _tq.kv_batch_get(keys=keys, partition_id=batch.partition_id,
                                        select_fields=["extra_info", "rm_scores",
                                                       "response_mask"])
            except KeyError as e:
                data, missing = None, e
            else:
                missing = next((f for f in ("rm_scores", "response_mask")
                                if f not in data.keys()), None)
            if missing is not None:
                raise RuntimeError(
                    f"{where}: the sampled trajectories have no {missing} field: rewards are "
                    "stored with a trajectory only when they are computed during rollout "
                    "(rule-based reward, or reward.reward_model.enable_resource_pool=True)")
            infos = [support.unwrap(x) for x in list(data["extra_info"])]
            row_keys, steps, runs = support.dots_fields(infos, where)
            dataset = support.dataset_of(runs[0], where)
            dataset.report_rows(row_keys, steps, support.row_sums(data["rm_scores"]),
                                support.row_sums(data["response_mask"]).astype(np.int64))

    __all__.append("DotsReplayBuffer")
