"""Kept for imports of the earlier name: the base class lives in :mod:`ecot.data.source`."""

from ecot.data.source import EpisodeDataset, EpisodeSource, Step

__all__ = ["EpisodeDataset", "EpisodeSource", "Step"]
