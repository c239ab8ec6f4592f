"""Scripted-expert success per task family and split (physics only, no rendering).

Figure: success rate of the scripted expert on every family over N episodes each (seeds
0..N-1, first attempt, no retries), for the seen and held-out splits; the claim is >= 95 %
on every family. Baseline, same run: a policy that does nothing (zero deltas) on the same
tasks, which shows that the success checks are not satisfied by the initial layouts.
``ratio`` is the worst family's expert success divided by the 0.95 target.

Usage: python benchmarks/sim_expert_success.py [--episodes 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import peak_rss_mib, write_result  # noqa: E402

TARGET = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    from ecot.sim.env import SimConfig, TabletopEnv
    from ecot.sim.expert import ScriptedExpert
    from ecot.sim.tasks import FAMILIES, SPLITS

    results, baseline, lengths = {}, {}, {}
    start = time.perf_counter()
    with TabletopEnv(SimConfig(render=False)) as env:
        for split in SPLITS:
            for family in FAMILIES:
                wins, idle_wins, lens = 0, 0, []
                for seed in range(args.episodes):
                    env.reset(seed=seed, task=family, split=split)
                    expert = ScriptedExpert(env, np.random.default_rng([seed, 7]))
                    while not expert.done and env.steps < env.config.max_steps - 1:
                        action = expert.act()
                        if expert.done:
                            break
                        env.step(action)
                    wins += env.success()
                    lens.append(env.steps)
                    env.reset(seed=seed, task=family, split=split)
                    for _ in range(5):
                        env.step([0, 0, 0, 0, 0, 0, 1])
                    idle_wins += env.success()
                key = f"{family}/{split}"
                results[key] = wins / args.episodes
                baseline[key] = idle_wins / args.episodes
                lengths[key] = float(np.mean(lens))
                print(key, results[key], baseline[key], lengths[key], flush=True)
    worst = min(results.values())
    write_result("sim_expert_success", {
        "metric": f"scripted expert success rate per family/split over {args.episodes} episodes each (min over families)",
        "value": worst,
        "baseline": max(baseline.values()),
        "baseline_metric": "success rate of a do-nothing policy on the same tasks (max over families)",
        "ratio": round(worst / TARGET, 3),
        "target": TARGET,
        "per_family": results,
        "baseline_per_family": baseline,
        "mean_episode_steps": lengths,
        "episodes_per_family": args.episodes,
        "seconds": round(time.perf_counter() - start, 1),
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],  # the 2 cores are shared
        "peak_rss_mib": round(peak_rss_mib(), 1),
    })


if __name__ == "__main__":
    main()
