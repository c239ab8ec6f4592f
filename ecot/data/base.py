"""What every episode dataset shares: length, iteration and index checking."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ecot.data.episode import Episode


class EpisodeDataset:
    """Base of the dataset readers: subclasses define ``__len__`` and ``__getitem__``."""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> Episode:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

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
