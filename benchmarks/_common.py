"""Shared plumbing of the benchmarks: every benchmark writes one JSON result.

A result holds the measured figure(s), the baseline measured in the same run, and their
ratio, plus the machine it ran on, so README numbers can always be traced to a file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "processor": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # 1/5/15 min, when the result is written
    }


def write_result(name: str, result: dict, out_dir: Path | None = None) -> Path:
    """Write ``{name}.json`` with ``result`` plus machine and time stamp; returns the path."""
    out_dir = Path(out_dir or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), **result}
    # How it was run, so a README figure can be reproduced: the command line and the cores it may use.
    script = os.path.relpath(os.path.abspath(sys.argv[0]), RESULTS_DIR.parent.parent)  # benchmarks/x.py from any cwd
    payload.setdefault("command", " ".join(["python", script, *sys.argv[1:]]))
    payload["machine"]["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    print(json.dumps(payload, indent=2))
    return path


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def closed_loop(policy, label: str, task: str, split: str, episodes: int, seed: int, max_steps: int,
                num_objects: int, image_size: int, start: str = "home", camera: str = "main") -> dict:
    """Run an ``ecot eval`` policy in the built-in sim on ``ecot eval``'s seeded episodes (in this
    process) and summarize: success with a 95 % Wilson interval, the mean faithfulness measures
    of policies that write reasoning, and each episode's outcome."""
    import numpy as np

    from ecot.eval.results import wilson_interval
    from ecot.eval.sim import episode_seed, run_episode
    from ecot.sim.env import SimConfig, TabletopEnv

    records = []
    t0 = time.perf_counter()
    with TabletopEnv(SimConfig(image_size=image_size, max_steps=max_steps, num_objects=num_objects, start=start,
                               camera=camera)) as env:
        for i in range(episodes):
            record, _ = run_episode(env, policy, i, episode_seed(seed, i), task, split, max_steps)
            records.append(record)
            print(f"{label} episode {i}: {'success' if record['success'] else 'no success'} after {record['steps']} steps",
                  file=sys.stderr, flush=True)
    policy.close()
    successes = sum(r["success"] for r in records)

    def mean(key: str) -> float | None:
        values = [(r["faithfulness"] or {}).get(key) for r in records]
        values = [v for v in values if v is not None]
        return round(float(np.mean(values)), 4) if values else None

    return {
        "success": f"{successes}/{episodes}", "success_rate": successes / episodes,
        "success_ci95": [round(v, 3) for v in wilson_interval(successes, episodes)],
        "box_iou": mean("box_iou"), "box_iou_ok": mean("box_iou_ok"), "move_agree": mean("move_agree"), "subtask_correct": mean("subtask_correct"),
        "gripper_err_px": mean("gripper_err_px"), "seconds": round(time.perf_counter() - t0, 1),
        "episodes": [{"seed": r["seed"], "success": r["success"], "steps": r["steps"]} for r in records],
    }


def comma_choices(parser, flag: str, text: str, allowed) -> list[str]:
    """The comma-separated items of a flag's value, each one of ``allowed`` (else a usage error)."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        parser.error(f"{flag}: unknown {unknown or 'none given'}; expected some of {', '.join(allowed)}")
    return items
