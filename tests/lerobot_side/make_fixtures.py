"""Write small datasets with LeRobot itself, and LeRobot's own decoding of every frame.

Run in a side environment (build_env.sh for lerobot 0.4.4 -> v3.0; a lerobot 0.3.2 env -> v2.1):

    PY=$(bash tests/lerobot_side/build_env.sh)
    $PY tests/lerobot_side/make_fixtures.py tests/fixtures/lerobot

Writes OUT/<name>/ (the dataset) and OUT/<name>.npz (what ``LeRobotDataset(...)[i]`` returned
for every frame: images as uint8 (LeRobot's float32 in [0, 1] times 255, rounded), state,
action, episode_index, frame_index, timestamp, task). The committed fixtures were made this
way; the ecot tests compare ecot's reader against them without needing LeRobot.
"""

from __future__ import annotations

import inspect
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shim  # noqa: E402,F401

import numpy as np  # noqa: E402
import lerobot  # noqa: E402
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset  # noqa: E402

TASKS = ["put the red block in the blue bowl", "push the green ball to the left"]
LENGTHS = [9, 6, 8]
SIZE = 64  # libsvtav1 needs at least 64 px


def frame_image(e: int, t: int) -> np.ndarray:
    """A smooth moving pattern with some texture (compresses like camera images do)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = 128 + 100 * np.sin((x + 3 * t + 11 * e) / 9.0)
    g = 128 + 100 * np.cos((y - 2 * t + 5 * e) / 7.0)
    b = (x + y + 8 * t + 40 * e) % 256
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def write(root: Path, video: bool, wrist: bool = False) -> None:
    features = {
        "observation.image": {"dtype": "video" if video else "image", "shape": (SIZE, SIZE, 3),
                              "names": ["height", "width", "channel"]},
        **({"observation.images.wrist": {"dtype": "image", "shape": (SIZE, SIZE, 3),
                                         "names": ["height", "width", "channel"]}} if wrist else {}),
        "observation.state": {"dtype": "float32", "shape": (7,), "names": None},
        "action": {"dtype": "float32", "shape": (7,), "names": None},
    }
    if root.exists():
        shutil.rmtree(root)
    ds = LeRobotDataset.create("local/fixture", fps=5, features=features, root=root, robot_type="widowx",
                               use_videos=video)
    rng = np.random.default_rng(0)
    for e, n in enumerate(LENGTHS):
        for t in range(n):
            frame = {"observation.image": frame_image(e, t),
                     "observation.state": rng.normal(size=7).astype(np.float32),
                     "action": rng.normal(size=7).astype(np.float32),
                     "task": TASKS[e % 2]}
            if wrist:
                frame["observation.images.wrist"] = frame_image(e + 5, t)[::-1].copy()
            if "task" in inspect.signature(ds.add_frame).parameters:  # lerobot 0.3.x: add_frame(frame, task)
                ds.add_frame({k: v for k, v in frame.items() if k != "task"}, task=frame["task"])
            else:
                ds.add_frame(frame)
        ds.save_episode()
    if hasattr(ds, "finalize"):
        ds.finalize()


def dump(root: Path, out: Path) -> None:
    ds = LeRobotDataset("local/fixture", root=root)
    rows = [ds[i] for i in range(len(ds))]
    np.savez_compressed(
        out,
        images=np.stack([np.round(r["observation.image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8) for r in rows]),
        **({"wrist": np.stack([np.round(r["observation.images.wrist"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
                               for r in rows])} if "observation.images.wrist" in rows[0] else {}),
        states=np.stack([r["observation.state"].numpy() for r in rows]),
        actions=np.stack([r["action"].numpy() for r in rows]),
        episode_index=np.array([int(r["episode_index"]) for r in rows]),
        frame_index=np.array([int(r["frame_index"]) for r in rows]),
        timestamp=np.array([float(r["timestamp"]) for r in rows], np.float32),
        task=np.array([r["task"] for r in rows]),
        lerobot_version=np.array(getattr(lerobot, "__version__", "?")),
    )


def main(out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = CODEBASE_VERSION.replace(".", "")  # v30 or v21
    modes = [False, True]
    for video in modes:
        name = f"{tag}_{'video' if video else 'image'}"
        write(out_dir / name, video)
        dump(out_dir / name, out_dir / f"{name}.npz")
        shutil.rmtree(out_dir / name / "images", ignore_errors=True)  # LeRobot's PNG scratch copy
        print("wrote", out_dir / name)
    if tag == "v30":  # two cameras: the main one as video, a wrist camera as images
        name = "v30_two_cameras"
        write(out_dir / name, True, wrist=True)
        dump(out_dir / name, out_dir / f"{name}.npz")
        shutil.rmtree(out_dir / name / "images", ignore_errors=True)
        print("wrote", out_dir / name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/lerobot")
