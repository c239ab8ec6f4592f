"""The one typed interface every episode dataset implements (:class:`EpisodeSource`).

Readers of LeRobot directories (v2.1 and v3.0, image or video cameras) and of RLDS/TFDS
directories all give the same things: ``len(ds)`` episodes, ``ds.episode(i)`` (or ``ds[i]``)
an :class:`~ecot.data.episode.Episode`, ``ds.step(i, t)`` one :class:`Step` (decoding one
frame only), ``ds.episode_length(i)`` (from metadata, no decoding), ``ds.fps``,
``ds.norm_stats``, ``ds.camera_names`` and ``ds.image_key`` (the camera ``Step.image`` and
``Episode.images`` come from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

import numpy as np

from ecot.data.episode import Episode

if TYPE_CHECKING:
    from ecot.actions import NormStats


@dataclass(frozen=True)
class Step:
    """One frame of an episode: what training and policies need, typed.

    ``image`` is the primary camera (``image_key``); ``frame_index`` counts the episode's
    (possibly transformed) frames; ``raw_step_offset`` is the raw step of frame 0 (1 after the
    Bridge transform dropped a step), so the reasoning join uses ``frame_index + raw_step_offset``.
    """

    image: np.ndarray  # [H, W, 3] uint8
    state: np.ndarray  # [D] float32 (D may be 0)
    action: np.ndarray  # [A] float32
    instruction: str
    episode_index: int
    frame_index: int
    file_path: str = ""
    episode_id: str = ""
    timestamp: float = 0.0
    raw_step_offset: int = 0
    extra_images: dict[str, np.ndarray] = field(default_factory=dict)  # other cameras, when asked for


@runtime_checkable
class EpisodeSource(Protocol):
    """What annotation, training, rendering and conversion rely on (see the module docstring)."""

    root: Path
    fps: int | None
    image_key: str

    def __len__(self) -> int: ...

    def episode(self, i: int) -> Episode: ...

    def __getitem__(self, i: int) -> Episode: ...

    def __iter__(self) -> Iterator[Episode]: ...

    def step(self, i: int, t: int) -> Step: ...

    def episode_length(self, i: int) -> int: ...

    @property
    def camera_names(self) -> list[str]: ...

    @property
    def norm_stats(self) -> "NormStats": ...

    @property
    def has_ground_truth(self) -> bool: ...


class EpisodeDataset:
    """Base of the readers: subclasses define ``__len__``, ``episode``, ``step`` and ``episode_length``."""

    root: Path
    fps: int | None = None
    image_key: str = ""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def episode(self, i: int) -> Episode:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, i: int, t: int) -> Step:  # pragma: no cover - abstract
        raise NotImplementedError

    def episode_length(self, i: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def camera_names(self) -> list[str]:
        return [self.image_key]

    @property
    def has_ground_truth(self) -> bool:
        return False

    def __getitem__(self, i: int) -> Episode:
        return self.episode(i)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.episode(i)

    def _check_index(self, i: int) -> int:
        """``i`` as a non-negative int (negative counts from the end); a clear error when out of range."""
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"episode index must be an integer, got {type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"episode index {i} out of range for a dataset of {n} episodes")
        return int(i)

    def _check_step(self, i: int, t: int) -> tuple[int, int]:
        i = self._check_index(i)
        length = self.episode_length(i)
        if not isinstance(t, (int, np.integer)):
            raise TypeError(f"step index must be an integer, got {type(t).__name__}")
        if t < 0:
            t += length
        if not 0 <= t < length:
            raise IndexError(f"step {t} out of range for episode {i} of length {length}")
        return i, int(t)
