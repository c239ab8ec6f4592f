"""Datasets: the episode schema, one typed reader interface, LeRobot (v2.1, v3.0) and RLDS readers,
the LeRobot writers, the embodied-features file.

Nothing heavy is imported here; :func:`open_dataset` imports its reader when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecot.data.source import EpisodeSource

__all__ = ["open_dataset", "detect_format"]


def detect_format(path: str | Path) -> str:
    """``"lerobot-v3.0"``, ``"lerobot-v2.1"`` (any LeRobot version: ``"lerobot-<version>"``) or ``"rlds"``."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory; expected a LeRobot or RLDS dataset directory")
    if (root / "meta" / "info.json").exists():
        from ecot.data.lerobot import read_info

        return f"lerobot-{read_info(root).get('codebase_version')}"
    from ecot.data.rlds import find_rlds_dir

    if find_rlds_dir(root) is not None:
        return "rlds"
    raise ValueError(
        f"{root} is neither a LeRobot dataset (meta/info.json) nor an RLDS/TFDS directory "
        "(dataset_info.json with *.tfrecord* shards, possibly under a version folder such as 1.0.0/)"
    )


def open_dataset(path: str | Path, **kwargs: Any) -> "EpisodeSource":
    """Open a dataset directory, detecting its format: LeRobot v2.1 or v3.0 (image or video
    cameras, ``meta/info.json``), or RLDS/TFDS.

    Returns an :class:`ecot.data.source.EpisodeSource`: ``len(ds)`` episodes, ``ds[i]`` /
    ``ds.episode(i)`` -> :class:`ecot.data.episode.Episode`, iteration, ``ds.step(i, t)`` ->
    :class:`ecot.data.source.Step`, ``ds.episode_length(i)``, ``ds.fps``, ``ds.norm_stats``,
    ``ds.camera_names``, ``ds.image_key`` and ``ds.root``. Keyword arguments go to the reader.
    """
    fmt = detect_format(path)
    root = Path(path)
    if fmt.startswith("lerobot-"):
        from ecot.data.lerobot import LeRobotLayoutDataset

        return LeRobotLayoutDataset(root, **kwargs)
    from ecot.data.rlds import RLDSDataset, find_rlds_dir

    return RLDSDataset(find_rlds_dir(root), **kwargs)
