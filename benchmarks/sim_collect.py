"""Collection throughput of ``ecot sim collect`` (expert + 224x224 rendering + PNG parquet).

Figure: episodes per minute with 2 worker processes (the 2-core target machine), and the
projected time for 300 episodes. Baseline, same run: 1 worker.

Usage: python benchmarks/sim_collect.py [--episodes 24] [--image-size 224]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import peak_rss_mib, write_result  # noqa: E402


def run(workers: int, episodes: int, image_size: int) -> tuple[float, dict, int]:
    from ecot.sim.collect import CollectConfig, collect

    out = Path(tempfile.mkdtemp(prefix="ecot_collect_bench_"))
    try:
        start = time.perf_counter()
        summary = collect(out / "ds", CollectConfig(task="all", episodes=episodes, image_size=image_size, workers=workers),
                          progress=False)
        elapsed = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (out / "ds").rglob("*") if p.is_file())
        return elapsed, summary, size
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    t2, s2, size = run(2, args.episodes, args.image_size)
    t1, s1, _ = run(1, args.episodes, args.image_size)
    per_min2, per_min1 = 60 * args.episodes / t2, 60 * args.episodes / t1
    write_result("sim_collect", {
        "metric": f"episodes per minute, ecot sim collect --task all --workers 2 ({args.image_size}px)",
        "value": round(per_min2, 2),
        "baseline": round(per_min1, 2),
        "baseline_metric": "episodes per minute with --workers 1",
        "ratio": round(per_min2 / per_min1, 3),
        "episodes": args.episodes,
        "seconds_workers_2": round(t2, 1),
        "seconds_workers_1": round(t1, 1),
        "projected_minutes_for_300_episodes_workers_2": round(300 / per_min2, 1),
        "successes": {"workers_2": s2["new_successes"], "workers_1": s1["new_successes"]},
        "dataset_mib_per_episode": round(size / 2**20 / args.episodes, 2),
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],  # the 2 cores are shared
        "peak_rss_mib": round(peak_rss_mib(), 1),
    })


if __name__ == "__main__":
    main()
