"""Streaming the embodied-features file vs the original ``json.load``.

Builds a synthetic features file shaped like ``embodied_features_bridge.json`` (full size:
~53k episodes, ~2.5M steps, ~1.4 GB), then, each in a fresh subprocess, measures four readers
in two pairs of equal work:

Keep an index (what a trainer holds; the headline comparison):

* ``stream_index`` (ours): ``ReasoningIndex.from_file`` -- stream the file, build every step's
  string, keep all of them in a dict by the original key;
* ``json_load`` (baseline): ``json.load`` of the whole file, then the same dict built from it,
  as the original loader does.

Build every string and discard it (a single pass, e.g. validation or export):

* ``stream`` (ours): ``iter_reasoning_strings`` over the whole file;
* ``json_load_discard`` (baseline): ``json.load``, then every step's string built and dropped.

Each run records wall and CPU (user + sys) seconds: on a shared machine the wall time of a nice'd
run depends on what else runs (one full-size ``json.load`` took 118 s in one run, 581 s in another),
so the speed ratios are given on both and CPU time is the one to compare.

Every reader counts steps and characters; the two index builders also hash their finished dict
(outside the timed part), so the results file shows that each pair did the same work.

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
import hashlib, json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
from ecot.data.features import ReasoningIndex, iter_reasoning_strings, reasoning_key, step_reasoning_text
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

t0, c0 = time.perf_counter(), cpu()
index = None
n = chars = 0
if mode == "stream":  # ours, build every string and drop it
    for _fp, _ep, _step, text in iter_reasoning_strings(path):
        n += 1
        chars += len(text)
elif mode == "stream_index":  # ours, keep every string by key
    index = ReasoningIndex.from_file(path).texts
elif mode == "json_load_discard":  # the original reader, build every string and drop it
    with open(path) as f:
        raw = json.load(f)
    for fp, episodes in raw.items():
        for ep, entry in episodes.items():
            if "reasoning" in entry:
                for step in entry["reasoning"]:
                    n += 1
                    chars += len(step_reasoning_text(entry, step))
elif mode == "json_load":  # the original loader: load everything, then keep every step's string by key
    with open(path) as f:
        raw = json.load(f)
    index = {
        reasoning_key(fp, ep, step): step_reasoning_text(entry, step)
        for fp, episodes in raw.items() for ep, entry in episodes.items() if "reasoning" in entry
        for step in entry["reasoning"]
    }
else:
    raise SystemExit(f"unknown mode {mode!r}")
elapsed, cpu_seconds = time.perf_counter() - t0, cpu() - c0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"seconds": elapsed, "cpu_seconds": cpu_seconds, "peak_rss_mib": peak}
if index is not None:  # not timed: what was kept, so the two index builders can be compared
    n, chars = len(index), sum(len(t) for t in index.values())
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(index):
        digest.update(key.encode() + b"\0" + index[key].encode() + b"\0")
    out["index_digest"] = digest.hexdigest()
out.update(steps=n, chars=chars)
print(json.dumps(out))
"""

MODES = ("stream", "stream_index", "json_load_discard", "json_load")
PAIRS = {  # ours -> the baseline doing the same work
    "stream_index": "json_load",  # headline: both keep an index of every string
    "stream": "json_load_discard",  # both build every string and drop it
}


def measure(mode: str, path: Path) -> dict:
    repo = str(Path(__file__).resolve().parent.parent)
    load = _loadavg()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path)], capture_output=True, text=True, cwd=repo
    )
    if out.returncode != 0:
        return {"error": (out.stderr or "")[-2000:], "returncode": out.returncode, "load_average_before": load}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load_average_before": load}


def _loadavg() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the Bridge size (1.0 = 53k episodes)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the synthetic file (default: a temp dir)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the json.load baselines (need ~7x the file size in RAM)")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--name", default="features_stream")
    args = parser.parse_args(argv)

    episodes = max(1, int(FULL_EPISODES * args.scale))
    modes = [m for m in MODES if not (args.skip_baseline and m.startswith("json_load"))]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "embodied_features_synthetic.json"
        t0 = time.perf_counter()
        shape = build_file(path, episodes)
        shape["write_seconds"] = round(time.perf_counter() - t0, 2)
        results = {mode: measure(mode, path) for mode in modes}

    mib = shape["bytes"] / 2**20
    summary = {"file": {**shape, "mib": round(mib, 1)}, "scale": args.scale,
               "pairs": PAIRS, "runs": results}  # fmt: skip
    ok = {mode: run for mode, run in results.items() if "seconds" in run}
    summary["value"] = {
        mode: {"seconds": round(run["seconds"], 2), "cpu_seconds": round(run["cpu_seconds"], 2),
               "peak_rss_mib": round(run["peak_rss_mib"], 1),
               "steps_per_s": round(run["steps"] / run["seconds"]), "mib_per_s": round(mib / run["seconds"], 1)}
        for mode, run in ok.items() if not mode.startswith("json_load")
    }  # fmt: skip
    if "stream" in ok:
        summary["target"] = {"stream_peak_rss_mib_max": 2048, "met": ok["stream"]["peak_rss_mib"] <= 2048}
    summary["baseline"] = {
        mode: {"seconds": round(run["seconds"], 2), "cpu_seconds": round(run["cpu_seconds"], 2),
               "peak_rss_mib": round(run["peak_rss_mib"], 1),
               "steps_per_s": round(run["steps"] / run["seconds"]), "mib_per_s": round(mib / run["seconds"], 1)}
        for mode, run in ok.items() if mode.startswith("json_load")
    }  # fmt: skip
    ratio, mismatch = {}, []
    for ours, base in PAIRS.items():
        if ours in ok and base in ok:
            a, b = ok[ours], ok[base]
            ratio[f"speed_cpu_{ours}_over_{base}"] = round(b["cpu_seconds"] / a["cpu_seconds"], 3)
            ratio[f"speed_wall_{ours}_over_{base}"] = round(b["seconds"] / a["seconds"], 3)
            ratio[f"peak_rss_{ours}_over_{base}"] = round(a["peak_rss_mib"] / b["peak_rss_mib"], 4)
            for key in ("steps", "chars", "index_digest"):
                if a.get(key) != b.get(key):
                    mismatch.append(f"{ours} and {base} differ in {key}: {a.get(key)} vs {b.get(key)}")
    if ratio:
        summary["ratio"] = ratio
        summary["ratio_meaning"] = ("speed_cpu / speed_wall: baseline CPU (user+sys) / wall seconds over ours (higher is "
                                    "better; CPU time is the one to compare on a shared machine); peak_rss: ours / "
                                    "baseline (lower is better)")
    if mismatch:
        summary["mismatch"] = mismatch
    write_result(args.name, summary, args.out)
    return summary


if __name__ == "__main__":
    main()
