"""Actions: the 256-bin action tokenizer and per-dataset normalization statistics.

Facts reproduced from the released OpenVLA/ECoT checkpoints (docs/formats.md §5):

* normalization "BOUNDS_Q99": ``clip(2 * (a - q01) / (q99 - q01) - 1, -1, 1)`` where the mask is
  true; values where the mask is false (the binarized gripper) pass through unchanged;
* discretization: ``bins = linspace(-1, 1, 256)``, ``d = digitize(clip(a, -1, 1), bins)`` in 1..256,
  token id ``vocab_size - d`` (the *unpadded* vocabulary, 32000 for Llama-2);
* decoding: ``idx = clip(vocab_size - id - 1, 0, 254)`` into the 255 bin centers, so the top
  id shares the last center.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

ACTION_DIM = 7
# The original adds this to the denominator so that constant dimensions do not divide by zero.
_NORM_EPS = 1e-8


class ActionTokenizer:
    """Continuous actions in ``[min_action, max_action]`` <-> the last ``n_bins`` vocabulary ids."""

    def __init__(self, vocab_size: int, n_bins: int = 256, min_action: float = -1.0, max_action: float = 1.0):
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {n_bins}")
        if vocab_size <= n_bins:
            raise ValueError(f"vocab_size ({vocab_size}) must exceed n_bins ({n_bins}): action ids are the last n_bins ids")
        if not max_action > min_action:
            raise ValueError(f"max_action ({max_action}) must be greater than min_action ({min_action})")
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.min_action = float(min_action)
        self.max_action = float(max_action)
        self.bins = np.linspace(min_action, max_action, n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def first_id(self) -> int:
        """Smallest action token id (``vocab_size - n_bins``)."""
        return self.vocab_size - self.n_bins

    @property
    def last_id(self) -> int:
        """Largest action token id (``vocab_size - 1``)."""
        return self.vocab_size - 1

    def is_action_id(self, ids: Any) -> np.ndarray | bool:
        arr = np.asarray(ids)
        result = (arr >= self.first_id) & (arr <= self.last_id)
        return bool(result) if result.ndim == 0 else result

    def encode(self, actions: Any) -> np.ndarray:
        """Normalized actions (any shape) -> int64 token ids of the same shape."""
        arr = np.asarray(actions, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"actions must be finite, got {arr}")
        discretized = np.digitize(np.clip(arr, self.min_action, self.max_action), self.bins)
        return (self.vocab_size - discretized).astype(np.int64)

    def decode(self, ids: Any) -> np.ndarray:
        """Token ids (any shape) -> normalized actions (float64) at the bin centers."""
        arr = np.asarray(ids, dtype=np.int64)
        bad = ~((arr >= self.first_id) & (arr <= self.last_id))
        if np.any(bad):
            raise ValueError(
                f"not action token ids: {arr[bad].tolist()}; expected ids in "
                f"[{self.first_id}, {self.last_id}] (vocab_size {self.vocab_size}, {self.n_bins} bins)"
            )
        discretized = self.vocab_size - arr
        idx = np.clip(discretized - 1, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[idx]


# --------------------------------------------------------------------------- normalization stats


def _as_vector(values: Any, name: str, dim: int | None = None, dtype=np.float64) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} has {arr.shape[0]} values, expected {dim}")
    return arr


@dataclass
class ArrayStats:
    """Statistics of one array kind (actions or proprio) over a dataset, one value per dimension."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray | None = None  # which dimensions are normalized; None = all

    def __post_init__(self) -> None:
        self.mean = _as_vector(self.mean, "mean")
        dim = self.mean.shape[0]
        for name in ("std", "min", "max", "q01", "q99"):
            setattr(self, name, _as_vector(getattr(self, name), name, dim))
        if self.mask is not None:
            self.mask = _as_vector(self.mask, "mask", dim, dtype=bool)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def effective_mask(self) -> np.ndarray:
        return np.ones(self.dim, dtype=bool) if self.mask is None else self.mask

    @classmethod
    def from_array(cls, values: Any, mask: Any = None) -> "ArrayStats":
        """Statistics of an ``[N, D]`` array (N samples of D dimensions)."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"expected a non-empty [N, D] array, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("statistics input contains NaN or infinite values")
        return cls(
            mean=arr.mean(0),
            std=arr.std(0),
            min=arr.min(0),
            max=arr.max(0),
            q01=np.quantile(arr, 0.01, axis=0),
            q99=np.quantile(arr, 0.99, axis=0),
            mask=mask,
        )

    def to_dict(self) -> dict[str, list]:
        # Keys sorted, as in the released config.json (transformers saves with sort_keys).
        out: dict[str, list] = {}
        if self.mask is not None:
            out["mask"] = [bool(m) for m in self.mask]
        for name in ("max", "mean", "min", "q01", "q99", "std"):
            out[name] = [float(v) for v in getattr(self, name)]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stats") -> "ArrayStats":
        missing = [k for k in ("mean", "std", "min", "max", "q01", "q99") if k not in data]
        if missing:
            raise ValueError(f"{where} lacks {missing}; expected keys mean, std, min, max, q01, q99 (and optional mask)")
        return cls(**{k: data[k] for k in ("mean", "std", "min", "max", "q01", "q99")}, mask=data.get("mask"))

    def _check(self, arr: np.ndarray) -> None:
        if arr.ndim == 0 or arr.shape[-1] != self.dim:
            raise ValueError(f"expected arrays whose last dimension is {self.dim}, got shape {arr.shape}")

    def normalize(self, values: Any) -> np.ndarray:
        """BOUNDS_Q99 normalization to [-1, 1] on masked dimensions; others unchanged."""
        arr = np.asarray(values, dtype=np.float64)
        self._check(arr)
        scaled = np.clip(2.0 * (arr - self.q01) / (self.q99 - self.q01 + _NORM_EPS) - 1.0, -1.0, 1.0)
        return np.where(self.effective_mask, scaled, arr)

    def unnormalize(self, values: Any) -> np.ndarray:
        """Inverse of :meth:`normalize` (exact inside [q01, q99])."""
        arr = np.asarray(values, dtype=np.float64)
        self._check(arr)
        restored = 0.5 * (arr + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.effective_mask, restored, arr)


@dataclass
class DatasetStats:
    """The ``norm_stats[dataset_key]`` entry of a released config."""

    action: ArrayStats
    proprio: ArrayStats | None = None
    num_transitions: int = 0
    num_trajectories: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action.to_dict()}
        out["num_trajectories"] = int(self.num_trajectories)
        out["num_transitions"] = int(self.num_transitions)
        if self.proprio is not None:
            out["proprio"] = self.proprio.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key: str = "") -> "DatasetStats":
        if "action" not in data:
            raise ValueError(f"norm_stats[{key!r}] has no 'action' entry; keys present: {sorted(data)}")
        proprio = data.get("proprio")
        return cls(
            action=ArrayStats.from_dict(data["action"], f"norm_stats[{key!r}]['action']"),
            proprio=ArrayStats.from_dict(proprio, f"norm_stats[{key!r}]['proprio']") if proprio else None,
            num_transitions=int(data.get("num_transitions", 0)),
            num_trajectories=int(data.get("num_trajectories", 0)),
        )


def compute_dataset_stats(
    episodes_actions: Iterable[Any],
    episodes_proprio: Iterable[Any] | None = None,
    action_mask: Any = None,
) -> DatasetStats:
    """Statistics over episodes, each an ``[T, D]`` array of actions (and of proprio states).

    ``action_mask`` defaults to all-true; for EEF-delta datasets with an absolute gripper use
    :func:`eef_delta_mask` (``[True]*6 + [False]``), as the released Bridge stats do.
    """
    actions = [np.asarray(a, dtype=np.float64) for a in episodes_actions]
    if not actions:
        raise ValueError("cannot compute statistics of zero episodes")
    all_actions = np.concatenate(actions, axis=0)
    proprio = None
    if episodes_proprio is not None:
        states = [np.asarray(s, dtype=np.float64) for s in episodes_proprio]
        proprio = ArrayStats.from_array(np.concatenate(states, axis=0))
    return DatasetStats(
        action=ArrayStats.from_array(all_actions, mask=action_mask),
        proprio=proprio,
        num_transitions=int(all_actions.shape[0]),
        num_trajectories=len(actions),
    )


def eef_delta_mask(dim: int = ACTION_DIM) -> list[bool]:
    """Mask of EEF-delta datasets: every dimension normalized except the last (absolute gripper)."""
    return [True] * (dim - 1) + [False]


@dataclass
class NormStats:
    """All datasets' statistics, keyed like a released config's ``norm_stats``."""

    datasets: dict[str, DatasetStats] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return list(self.datasets)

    def __contains__(self, key: object) -> bool:
        return key in self.datasets

    def __getitem__(self, key: str) -> DatasetStats:
        return self.get(key)

    def resolve_key(self, key: str | None) -> str:
        """The dataset key to use: ``key`` itself, or the only key when ``key`` is None."""
        if key is None:
            if len(self.datasets) == 1:
                return next(iter(self.datasets))
            raise KeyError(
                f"this model has statistics for several datasets; pass unnorm_key, one of: {sorted(self.datasets)}"
                if self.datasets
                else "no normalization statistics are available"
            )
        if key not in self.datasets:
            raise KeyError(f"unknown dataset key {key!r}; valid keys: {sorted(self.datasets)}")
        return key

    def get(self, key: str | None = None) -> DatasetStats:
        return self.datasets[self.resolve_key(key)]

    def to_dict(self) -> dict[str, Any]:
        return {key: stats.to_dict() for key, stats in self.datasets.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NormStats":
        if not isinstance(data, Mapping):
            raise ValueError(f"norm_stats must be a mapping of dataset key -> stats, got {type(data).__name__}")
        return cls({key: DatasetStats.from_dict(value, key) for key, value in data.items()})

    def save(self, path: str | Path) -> None:
        """Write ``{dataset_key: {...}}`` as JSON (atomically: never a half-written file)."""
        from ecot.io import write_atomic

        write_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "NormStats":
        """Read a stats JSON, or a ``config.json`` that holds ``norm_stats``."""
        data = json.loads(Path(path).read_text())
        if "norm_stats" in data and isinstance(data["norm_stats"], Mapping):
            data = data["norm_stats"]
        return cls.from_dict(data)

