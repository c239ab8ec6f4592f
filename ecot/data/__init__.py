"""Datasets: the episode schema, LeRobot-layout and RLDS readers, the embodied-features file.

Nothing heavy is imported here; :func:`open_dataset` imports its reader when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["open_dataset"]


def open_dataset(path: str | Path, **kwargs: Any):
    """Open a dataset directory: our LeRobot layout (``meta/info.json``) or an RLDS/TFDS directory.

    Returns an object with ``len(ds)`` episodes, ``ds[i]`` -> :class:`ecot.data.episode.Episode`,
    iteration, ``ds.step(i, t)``, ``ds.episode_length(i)``, ``ds.fps``, ``ds.norm_stats`` and ``ds.root``.
    Keyword arguments go to the reader.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory; expected a LeRobot-layout or RLDS dataset directory")
    if (root / "meta" / "info.json").exists():
        from ecot.data.lerobot import LeRobotLayoutDataset

        return LeRobotLayoutDataset(root, **kwargs)
    from ecot.data.rlds import find_rlds_dir

    rlds_dir = find_rlds_dir(root)
    if rlds_dir is not None:
        from ecot.data.rlds import RLDSDataset

        return RLDSDataset(rlds_dir, **kwargs)
    raise ValueError(
        f"{root} is neither a LeRobot-layout dataset (meta/info.json) nor an RLDS/TFDS directory "
        "(dataset_info.json with *.tfrecord* shards, possibly under a version folder such as 1.0.0/)"
    )
