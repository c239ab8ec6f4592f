"""A resumable, rank-aware, infinite sampler.

Epoch ``e`` visits the steps in a permutation seeded by ``(seed, e)``; rank ``r`` of ``w`` takes
every ``w``-th entry (the permutation is wrapped so every rank gets the same count). A rank's
position in its stream is one integer, so resuming is exact: a restarted run asks for the stream
from the number of samples already consumed, and every sample gets the same index *and* the same
per-sample random seed (dropout, augmentation) as in the uninterrupted run.

The sampler yields keys ``(index, sample_seed, position)`` for :class:`ecot.train.data.StepDataset`.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np


class ResumableSampler:
    def __init__(self, num_items: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True, start: int = 0):
        if num_items <= 0:
            raise ValueError(f"nothing to sample: the dataset has {num_items} training steps")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self.start = int(start)
        self.per_rank = math.ceil(self.num_items / self.world_size)

    def order(self, epoch: int) -> np.ndarray:
        """This rank's indices for one epoch."""
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        else:
            perm = np.arange(self.num_items)
        total = self.per_rank * self.world_size
        if total > self.num_items:  # wrap so every rank has the same number of samples
            perm = np.concatenate([perm, perm[: total - self.num_items]])
        return perm[self.rank :: self.world_size]

    def key(self, position: int, epoch_order: np.ndarray | None = None) -> tuple[int, int, int]:
        epoch, offset = divmod(position, self.per_rank)
        order = self.order(epoch) if epoch_order is None else epoch_order
        index = int(order[offset])
        # One seed per (run seed, rank, position): identical on resume, different across ranks.
        sample_seed = int(np.random.default_rng([self.seed, self.rank, position, 7]).integers(0, 2**31 - 1))
        return index, sample_seed, position

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        position = self.start
        epoch = -1
        order = None
        while True:
            e = position // self.per_rank
            if e != epoch:
                epoch, order = e, self.order(e)
            yield self.key(position, order)
            position += 1
