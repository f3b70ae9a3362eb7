"""Helpers of the verl adapter (dots_client.verl) that need no verl: version parsing, the
feedback mechanism of each verl version, config access, grouping rollout rows into dots groups,
and the per-process registry that lets the V1 sampler find the dataset of its run.

This module is always imported under its own name, so the registry is shared even when verl
loads dots_client/verl.py from a file path (a fresh module object per load).
"""

import io
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dots_client.client import Group

# Keys the dataset adds to every row's `extra_info`: verl keeps `extra_info` on every path from
# the dataset to the feedback hook (legacy `_get_gen_batch` never pops it; V1 stores it with
# each trajectory), while other added columns are dropped from v0.7.0 on.
KEY_FIELD, STEP_FIELD, RUN_FIELD = "dots_key", "dots_step", "dots_run"

# The feedback mechanism per verl version (release tags read: v0.4.1, v0.5.0, v0.6.0, v0.6.1,
# v0.7.0, v0.7.1, v0.8.0, v0.9.0 and the main branch at 0.10.0.dev).
CURRICULUM_SAMPLER = "curriculum_sampler"  # v0.5.0 .. v0.7.1, legacy trainer
ON_BATCH_END = "on_batch_end"  # v0.8.0 .., legacy trainer
V1_REPLAY_BUFFER = "v1_replay_buffer"  # v0.9.0 .., V1 trainer (trainer.use_v1, the default)

OLDEST_SUPPORTED = (0, 5, 0)
FIRST_UNSUPPORTED = (0, 10, 0)  # 0.10.0.dev (main as read) is below this; the release is not


def parse_version(text: str) -> Tuple[int, int, int, int]:
    """(major, minor, patch, final) of a version string; final is 0 for .dev/rc/a/b builds, so
    that "0.10.0.dev" < "0.10.0". Errors: ValueError for a string without a leading X.Y."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(.*)$", str(text))
    if not match:
        raise ValueError(f"unrecognised verl version {text!r}")
    rest = match.group(4).lower()
    pre = bool(re.match(r"^[.\-+]?(dev|rc|a|b|alpha|beta|pre)", rest))
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0), 0 if pre else 1)


def supported_range_text() -> str:
    return "0.5.0 <= verl < 0.10.0 (0.10.0.dev builds included)"


def legacy_mechanism(version: Tuple[int, int, int, int]) -> Optional[str]:
    """The legacy trainer's feedback mechanism for `version`; None outside the supported range."""
    if version < OLDEST_SUPPORTED + (0,) or version >= FIRST_UNSUPPORTED + (1,):
        return None
    return CURRICULUM_SAMPLER if version < (0, 8, 0, 0) else ON_BATCH_END


def has_v1_trainer(version: Tuple[int, int, int, int]) -> bool:
    return (0, 9, 0, 0) <= version < FIRST_UNSUPPORTED + (1,)


def cfg_get(config: Any, key: str, default: Any = None) -> Any:
    """config[key] for dicts, OmegaConf DictConfigs and attribute objects; default if absent or
    None. A dotted key walks nested configs."""
    node = config
    for part in key.split("."):
        if node is None:
            return default
        getter = getattr(node, "get", None)
        node = getter(part, None) if callable(getter) else getattr(node, part, None)
    return default if node is None else node


def root_config(config: Any) -> Any:
    """The whole trainer config above verl's data config, or None when it cannot be reached.

    verl passes `self.config.data` (an OmegaConf child node) to the dataset; OmegaConf nodes
    know their parent (`_get_parent`). A plain dict has no parent."""
    getter = getattr(config, "_get_parent", None)
    if not callable(getter):
        return None
    node, parent = config, getter()
    while parent is not None:
        node = parent
        up = getattr(node, "_get_parent", None)
        parent = up() if callable(up) else None
    return None if node is config else node


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (float tensors as float64)."""
    if hasattr(value, "detach"):
        value = value.detach()
        if hasattr(value, "is_floating_point") and value.is_floating_point():
            value = value.double()
        value = value.cpu().numpy()
    return np.asarray(value)


def row_sums(value: Any) -> np.ndarray:
    """Per-row sums of a [rows, tokens] tensor, array, nested (jagged) tensor or list of rows."""
    if hasattr(value, "is_nested") and value.is_nested:
        return np.array([float(to_numpy(row).sum()) for row in value.unbind()])
    if isinstance(value, (list, tuple)):
        return np.array([float(to_numpy(row).sum()) for row in value])
    array = to_numpy(value)
    return array.reshape(array.shape[0], -1).sum(axis=1).astype(np.float64)


def unwrap(value: Any) -> Any:
    """A non-tensor value as stored by verl/TransferQueue (NonTensorData has `.data`)."""
    return getattr(value, "data", value)


def dots_fields(infos: Sequence[Any], where: str) -> Tuple[List[str], List[int], List[str]]:
    """(keys, steps, runs) read from each row's extra_info. Errors: ValueError naming the row
    and the setting when a row was not produced by DotsDataset."""
    keys, steps, runs = [], [], []
    for i, info in enumerate(infos):
        info = unwrap(info)
        if not isinstance(info, dict) or KEY_FIELD not in info or STEP_FIELD not in info:
            raise ValueError(
                f"{where}: row {i} has no extra_info.{KEY_FIELD}/{STEP_FIELD}; the training "
                "dataset must be dots_client.verl.DotsDataset (data.custom_cls.name=DotsDataset)")
        keys.append(str(info[KEY_FIELD]))
        steps.append(int(info[STEP_FIELD]))
        runs.append(str(info.get(RUN_FIELD, "")))
    return keys, steps, runs


def build_groups(keys: Sequence[str], rewards: np.ndarray, reward_range: Tuple[float, float],
                 version: int, lengths: Optional[np.ndarray] = None,
                 logprob_sums: Optional[np.ndarray] = None) -> List[Group]:
    """One dots Group per distinct key (rows in any order), rewards mapped from reward_range
    onto [0, 1], with an .npz payload of response lengths and behaviour log-prob sums when
    known. Errors: ValueError for a reward outside reward_range (naming the key and the
    setting data.dots.reward_range)."""
    lo, hi = reward_range
    mapped = (np.asarray(rewards, dtype=np.float64) - lo) / (hi - lo)
    rows_of: Dict[str, List[int]] = {}
    for i, key in enumerate(keys):
        if not -1e-6 <= mapped[i] <= 1 + 1e-6:
            raise ValueError(f"question {key!r} has reward {rewards[i]} outside "
                             f"data.dots.reward_range [{lo}, {hi}]")
        rows_of.setdefault(key, []).append(i)
    groups = []
    for key, rows in rows_of.items():
        arrays = {}
        if lengths is not None:
            arrays["response_length"] = np.asarray(lengths)[rows].astype(np.int32)
        if logprob_sums is not None:
            arrays["logprob_sum"] = np.asarray(logprob_sums)[rows].astype(np.float32)
        payload = io.BytesIO()
        if arrays:
            np.savez(payload, **arrays)
        groups.append(Group(key=key, rewards=np.clip(mapped[rows], 0.0, 1.0).tolist(),
                            policy_version=version, payload=payload.getvalue()))
    return groups


# ---- the per-process registry: run id -> the training DotsDataset of that run ----

_DATASETS: Dict[str, Any] = {}


def register(run_id: str, dataset: Any) -> None:
    _DATASETS[run_id] = dataset


def dataset_of(run_id: str, where: str) -> Any:
    """The training dataset registered for `run_id` in this process. Errors: ValueError."""
    dataset = _DATASETS.get(run_id)
    if dataset is None:
        raise ValueError(f"{where}: no DotsDataset for run {run_id!r} in this process (known: "
                         f"{sorted(_DATASETS)}); set data.custom_cls.name=DotsDataset")
    return dataset
