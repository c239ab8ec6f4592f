"""Re-write an ecot-collected dataset (v3.0, image mode) with LeRobot's own writer (side environment).

    $PY tests/lerobot_side/write_with_lerobot.py SRC_DIR DST_DIR [--video]

Every feature of SRC (camera, state, action, the gt.* ground-truth columns) becomes a LeRobot
feature; frames are added with ``add_frame`` (the task string inside the frame), episodes
closed with ``save_episode``, then ``finalize``. Nothing of ecot's own meta files is copied:
DST is purely what LeRobot writes.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shim  # noqa: E402,F401

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402
from PIL import Image  # noqa: E402

DEFAULT = {"timestamp", "frame_index", "episode_index", "index", "task_index"}


def main(src: str, dst: str, video: bool) -> None:
    src_dir, dst_dir = Path(src), Path(dst)
    info = json.loads((src_dir / "meta/info.json").read_text())
    features = {}
    for key, ft in info["features"].items():
        if key in DEFAULT:
            continue
        ft = {"dtype": ft["dtype"], "shape": tuple(ft["shape"]), "names": ft.get("names")}
        if ft["dtype"] in ("image", "video"):
            ft["dtype"] = "video" if video else "image"
        features[key] = ft
    tasks = pd.read_parquet(src_dir / "meta/tasks.parquet")
    task_of = {int(row.task_index): str(name) for name, row in tasks.iterrows()}
    if dst_dir.exists():
        shutil.rmtree(dst_dir)
    ds = LeRobotDataset.create("local/rewritten", fps=int(info["fps"]), features=features, root=dst_dir,
                               robot_type=info.get("robot_type"), use_videos=video)
    current = None
    for path in sorted((src_dir / "data").glob("*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if current is not None and row["episode_index"] != current:
                ds.save_episode()
            current = row["episode_index"]
            frame = {"task": task_of[row["task_index"]]}
            for key, ft in features.items():
                if ft["dtype"] in ("image", "video"):
                    frame[key] = np.asarray(Image.open(io.BytesIO(row[key]["bytes"])).convert("RGB"))
                else:
                    frame[key] = np.asarray(row[key], np.float32).reshape(ft["shape"])
            ds.add_frame(frame)
    ds.save_episode()
    ds.finalize()
    shutil.rmtree(dst_dir / "images", ignore_errors=True)
    print(f"wrote {dst_dir} with LeRobot ({'video' if video else 'image'} mode)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--video" in sys.argv[3:])
