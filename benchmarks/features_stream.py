"""Streaming the embodied-features file vs the original ``json.load``.

Builds a synthetic features file shaped like ``embodied_features_bridge.json`` (full size:
~53k episodes, ~2.5M steps, ~1.4 GB), then, each in a fresh subprocess, measures:

* ``stream``: ``iter_reasoning_strings`` over the whole file (ours; what the issue targets);
* ``stream_index``: ours, also keeping every string in a ``ReasoningIndex`` (what a trainer holds);
* ``json_load`` (baseline): ``json.load`` of the whole file, then every step's string built into
  a dict, as the original loader does.

Usage::

    python benchmarks/features_stream.py                 # full size (needs ~12 GB free for the baseline)
    python benchmarks/features_stream.py --scale 0.01    # CI-sized
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402

FULL_EPISODES = 53_000
MEAN_STEPS = 47  # 53k episodes x ~47 steps ~ 2.5M steps

OBJECTS = ["the carrot", "the plate", "the spoon", "the pot", "the towel", "the green block", "the bowl", "the knife"]
MOVES = ["move forward", "move down", "move left, close gripper", "move up", "stop", "move right up, open gripper"]


def build_file(path: Path, episodes: int, seed: int = 0) -> dict:
    """Write a Bridge-like features file with our streaming writer; returns its shape."""
    import numpy as np
    from tqdm import tqdm

    from ecot.data.features import FeaturesWriter

    rng = np.random.default_rng(seed)
    steps_total = 0
    with FeaturesWriter(path) as writer:
        for e in tqdm(range(episodes), desc="writing synthetic features", unit="ep", mininterval=2):
            steps = int(rng.integers(20, 2 * MEAN_STEPS - 20))
            steps_total += steps
            names = list(rng.choice(OBJECTS, size=int(rng.integers(2, 5)), replace=False))
            task = f"put {names[0]} on {names[1]}"
            plan = f"Move to {names[0]}, grasp {names[0]}, lift it, move it over {names[1]}, place it, release it"
            reasoning = {
                str(i): {
                    "task": task,
                    "plan": plan,
                    "subtask": f"grasp {names[0]}" if i < steps // 2 else f"place it on {names[1]}",
                    "subtask_reason": f"{names[0]} must be held before it can be moved to {names[1]}",
                    "move": MOVES[i % len(MOVES)],
                    "move_reason": f"The gripper is above {names[0]} and must descend to reach it",
                }
                for i in range(steps)
            }
            points = rng.integers(0, 256, size=(steps, 2)).tolist()
            boxes = [
                [[round(float(rng.uniform(0.3, 1)), 3), n, rng.integers(0, 256, size=4).tolist()] for n in names]
                for _ in range(steps)
            ]
            entry = {
                "reasoning": reasoning,
                "features": {
                    "gripper_position": points,
                    "bboxes": boxes,
                    "move_primitive": [MOVES[i % len(MOVES)] for i in range(steps)],
                    "state_3d": rng.normal(size=(steps, 3)).round(4).tolist(),
                },
                "metadata": {"episode_id": e, "n_steps": steps},
            }
            writer.add(f"/data/bridge_data_v2/raw/traj_group{e // 100}/out.npy", str(e % 100), entry)
    return {"episodes": episodes, "steps": steps_total, "bytes": path.stat().st_size}


# ---------------------------------------------------------------------- measured in a subprocess

_CHILD = r"""
import json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if mode == "stream":
    from ecot.data.features import iter_reasoning_strings
    n = sum(1 for _ in iter_reasoning_strings(path))
elif mode == "stream_index":
    from ecot.data.features import ReasoningIndex
    n = len(ReasoningIndex.from_file(path))
else:  # the original: load everything, then build every step's string
    from ecot.data.features import reasoning_key, step_reasoning_text
    with open(path) as f:
        raw = json.load(f)
    index = {
        reasoning_key(fp, ep, step): step_reasoning_text(entry, step)
        for fp, episodes in raw.items() for ep, entry in episodes.items() if "reasoning" in entry
        for step in entry["reasoning"]
    }
    n = len(index)
elapsed = time.perf_counter() - t0
print(json.dumps({"steps": n, "seconds": elapsed, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(mode: str, path: Path) -> dict:
    repo = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path)], capture_output=True, text=True, cwd=repo
    )
    if out.returncode != 0:
        return {"error": (out.stderr or "")[-2000:], "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the Bridge size (1.0 = 53k episodes)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the synthetic file (default: a temp dir)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run json.load (needs ~7x the file size in RAM)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--name", default="features_stream")
    args = parser.parse_args(argv)

    episodes = max(1, int(FULL_EPISODES * args.scale))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "embodied_features_synthetic.json"
        t0 = time.perf_counter()
        shape = build_file(path, episodes)
        shape["write_seconds"] = round(time.perf_counter() - t0, 2)
        results = {mode: measure(mode, path) for mode in ("stream", "stream_index")}
        if not args.skip_baseline:
            results["json_load"] = measure("json_load", path)

    mib = shape["bytes"] / 2**20
    summary = {"file": {**shape, "mib": round(mib, 1)}, "scale": args.scale, "runs": results}
    stream = results["stream"]
    if "seconds" in stream:
        summary["value"] = {
            "stream_peak_rss_mib": round(stream["peak_rss_mib"], 1),
            "stream_mib_per_s": round(mib / stream["seconds"], 1),
            "stream_steps_per_s": round(stream["steps"] / stream["seconds"]),
        }
        summary["target"] = {"stream_peak_rss_mib_max": 2048, "met": stream["peak_rss_mib"] <= 2048}
    base = results.get("json_load", {})
    if "seconds" in base and "seconds" in stream:
        summary["baseline"] = {
            "json_load_peak_rss_mib": round(base["peak_rss_mib"], 1),
            "json_load_mib_per_s": round(mib / base["seconds"], 1),
        }
        summary["ratio"] = {
            "peak_rss_stream_over_json_load": round(stream["peak_rss_mib"] / base["peak_rss_mib"], 4),
            "speed_stream_over_json_load": round(base["seconds"] / stream["seconds"], 3),
        }
        if stream["steps"] != base["steps"]:
            summary["mismatch"] = f"stream read {stream['steps']} steps, json.load {base['steps']}"
    write_result(args.name, summary, args.out)
    return summary


if __name__ == "__main__":
    main()
