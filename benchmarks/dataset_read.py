"""Reading a LeRobot v3.0 video dataset: ecot's reader vs LeRobot's own, in the same run.

Collects ``--episodes`` (default 100) sim demonstrations at ``--image-size`` (default 224) px
with ``ecot sim collect --video`` (AV1 mp4, LeRobot's settings), then, each in a fresh
subprocess, reads every frame and records frames/s and peak RSS:

* ``ecot_steps``: ``ds.step(i, t)`` for every frame in order (what training's data loader calls);
* ``ecot_episodes``: ``ds.episode(i)`` for every episode (what annotation calls);
* ``ecot_shuffled``: ``ds.step`` on ``--shuffled`` random frames (training order);
* ``lerobot`` (baseline): ``LeRobotDataset(...)[k]`` for every frame in order, lerobot 0.4.4 in the
  side environment (tests/lerobot_side/build_env.sh; PyAV decoding through the test shim);
* ``lerobot_shuffled``: the same on the same random frames.

Each run also sums every decoded pixel (uint8), so the readers are checked to decode the same frames.

    python benchmarks/dataset_read.py                                  # 100 episodes, 224 px
    python benchmarks/dataset_read.py --episodes 4 --image-size 64 --skip-lerobot   # CI-sized
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402

_OURS = r"""
import json, resource, sys, time
import numpy as np
def peak_mib():  # VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
mode, root, order = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
from ecot.data import open_dataset
t0 = time.perf_counter()
ds = open_dataset(root)
frames, checksum = 0, 0
if mode == "episodes":
    for i in range(len(ds)):
        images = ds.episode(i).images
        frames += len(images); checksum += int(images.sum(dtype=np.int64))
else:
    pairs = order if mode == "shuffled" else [(i, t) for i in range(len(ds)) for t in range(ds.episode_length(i))]
    for i, t in pairs:
        image = ds.step(i, t).image
        frames += 1; checksum += int(image.sum(dtype=np.int64))
seconds = time.perf_counter() - t0
print(json.dumps({"frames": frames, "seconds": seconds, "frames_per_s": frames / seconds, "checksum": checksum,
                  "peak_rss_mib": peak_mib()}))
"""

_LEROBOT = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
import shim
import numpy as np
def peak_mib():  # VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from lerobot.datasets.lerobot_dataset import LeRobotDataset
mode, root, order = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
ds = LeRobotDataset("local/bench", root=root)
starts = [int(e["dataset_from_index"]) for e in ds.meta.episodes]
keys = [starts[i] + t for i, t in order] if mode == "shuffled" else range(len(ds))
frames, checksum = 0, 0
for k in keys:
    image = ds[k]["observation.image"]
    frames += 1; checksum += int(np.round(image.numpy() * 255).astype(np.int64).sum())
seconds = time.perf_counter() - t0
print(json.dumps({"frames": frames, "seconds": seconds, "frames_per_s": frames / seconds, "checksum": checksum,
                  "peak_rss_mib": peak_mib()}))
"""


def run_child(python: str, code: str, args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr or "")[-3000:], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def lerobot_python(given: str | None) -> str:
    if given:
        return given
    proc = subprocess.run(["bash", str(ROOT / "tests/lerobot_side/build_env.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"cannot build the LeRobot side environment:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2, help="sim processes while collecting the dataset")
    parser.add_argument("--shuffled", type=int, default=1000, help="random frames read in the shuffled runs")
    parser.add_argument("--dataset", type=Path, default=None, help="reuse (or create) the dataset here")
    parser.add_argument("--lerobot-python", default=None, help="python of the side env (default: build_env.sh)")
    parser.add_argument("--skip-lerobot", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    args = parser.parse_args(argv)

    import numpy as np

    from ecot.data import open_dataset
    from ecot.sim.collect import CollectConfig, collect

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dataset or Path(tmp) / "video_ds"
        t0 = time.perf_counter()
        collect(root, CollectConfig(task="all", episodes=args.episodes, image_size=args.image_size, workers=args.workers,
                                    video=True), progress=False)
        collect_s = time.perf_counter() - t0
        ds = open_dataset(root)
        total = sum(ds.episode_length(i) for i in range(len(ds)))
        rng = np.random.default_rng(0)
        flat = [(i, t) for i in range(len(ds)) for t in range(ds.episode_length(i))]
        picks = rng.choice(len(flat), size=min(args.shuffled, len(flat)), replace=False)
        order = json.dumps([flat[k] for k in picks])
        mp4_mib = sum(p.stat().st_size for p in root.glob("videos/**/*.mp4")) / 2**20
        shape = {"episodes": len(ds), "frames": total, "image_size": args.image_size, "mp4_mib": round(mp4_mib, 2),
                 "codec": ds.features["observation.image"]["info"]["video.codec"], "collect_seconds": round(collect_s, 1)}
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        runs = {name: run_child(sys.executable, _OURS, [mode, str(root), order], env)
                for name, mode in (("ecot_steps", "steps"), ("ecot_episodes", "episodes"), ("ecot_shuffled", "shuffled"))}
        if not args.skip_lerobot:
            py = lerobot_python(args.lerobot_python)
            side_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
            side_env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(Path(tmp) / "hf_home"))
            shim_dir = str(ROOT / "tests/lerobot_side")
            runs["lerobot"] = run_child(py, _LEROBOT, ["steps", str(root), order, shim_dir], side_env)
            runs["lerobot_shuffled"] = run_child(py, _LEROBOT, ["shuffled", str(root), order, shim_dir], side_env)

    summary: dict = {"dataset": shape, "runs": runs}
    ours = runs["ecot_steps"]
    if "frames_per_s" in ours:
        summary["value"] = {"ecot_steps_frames_per_s": round(ours["frames_per_s"], 1),
                            "ecot_episodes_frames_per_s": round(runs["ecot_episodes"].get("frames_per_s", 0), 1),
                            "ecot_shuffled_frames_per_s": round(runs["ecot_shuffled"].get("frames_per_s", 0), 1),
                            "ecot_steps_peak_rss_mib": round(ours["peak_rss_mib"], 1)}
    base = runs.get("lerobot", {})
    if "frames_per_s" in base and "frames_per_s" in ours:
        summary["baseline"] = {"lerobot_frames_per_s": round(base["frames_per_s"], 1),
                               "lerobot_shuffled_frames_per_s": round(runs["lerobot_shuffled"].get("frames_per_s", 0), 1),
                               "lerobot_peak_rss_mib": round(base["peak_rss_mib"], 1)}
        summary["ratio"] = {
            "speed_ecot_steps_over_lerobot": round(ours["frames_per_s"] / base["frames_per_s"], 2),
            "speed_ecot_shuffled_over_lerobot_shuffled": round(
                runs["ecot_shuffled"]["frames_per_s"] / runs["lerobot_shuffled"]["frames_per_s"], 2),
            "peak_rss_ecot_over_lerobot": round(ours["peak_rss_mib"] / base["peak_rss_mib"], 3),
        }
        summary["same_frames"] = (ours["checksum"] == base["checksum"] == runs["ecot_episodes"]["checksum"]
                                  and runs["ecot_shuffled"]["checksum"] == runs["lerobot_shuffled"]["checksum"])
    summary["load_average"] = os.getloadavg()
    write_result("dataset_read", summary, args.out)
    return summary


if __name__ == "__main__":
    main()
