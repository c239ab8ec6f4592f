"""Read a dataset with LeRobot itself (side environment) and dump every frame to an .npz.

    $PY tests/lerobot_side/read_with_lerobot.py DATASET_DIR OUT.npz

Images are LeRobot's float32 in [0, 1] times 255, rounded to uint8 (exact for image mode).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shim  # noqa: E402,F401

import numpy as np  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402


def main(root: str, out: str) -> None:
    ds = LeRobotDataset("local/ecot", root=root)
    cams = ds.meta.camera_keys
    rows = [ds[i] for i in range(len(ds))]
    arrays = {
        "states": np.stack([r["observation.state"].numpy() for r in rows]),
        "actions": np.stack([r["action"].numpy() for r in rows]),
        "episode_index": np.array([int(r["episode_index"]) for r in rows]),
        "frame_index": np.array([int(r["frame_index"]) for r in rows]),
        "task": np.array([r["task"] for r in rows]),
        "num_episodes": np.array(ds.num_episodes),
        "stats_keys": np.array(sorted(ds.meta.stats)),
    }
    for cam in cams:
        arrays["images/" + cam] = np.stack(
            [np.round(r[cam].numpy().transpose(1, 2, 0) * 255).astype(np.uint8) for r in rows])
    np.savez_compressed(out, **arrays)
    print(f"read {len(rows)} frames of {ds.num_episodes} episodes, cameras {cams}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
