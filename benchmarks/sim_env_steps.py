"""Environment steps per second of the MuJoCo tabletop, with camera rendering.

Figure: control steps (0.2 s of simulated time, physics substeps + one 224x224 render +
ground-truth projection) per second of wall time on one core, driven by the scripted expert.
Baseline, same run: the same rollouts without rendering (physics + expert only), which shows
what the camera costs.

Usage: python benchmarks/sim_env_steps.py [--episodes 8] [--image-size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import peak_rss_mib, write_result  # noqa: E402


def rollouts(render: bool, episodes: int, image_size: int) -> tuple[int, float]:
    from ecot.sim.env import SimConfig, TabletopEnv
    from ecot.sim.expert import ScriptedExpert
    from ecot.sim.tasks import FAMILIES

    steps, elapsed = 0, 0.0
    with TabletopEnv(SimConfig(image_size=image_size, render=render)) as env:
        for k in range(episodes):
            env.reset(seed=k, task=FAMILIES[k % len(FAMILIES)])
            expert = ScriptedExpert(env, k)
            start = time.perf_counter()
            while not expert.done and env.steps < env.config.max_steps:
                action = expert.act()
                if expert.done:
                    break
                env.step(action)
                if render:
                    env.ground_truth()
                steps += 1
            elapsed += time.perf_counter() - start
    return steps, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    from ecot.sim._gl import ensure_gl_backend

    backend = ensure_gl_backend()
    n_r, t_r = rollouts(True, args.episodes, args.image_size)
    n_b, t_b = rollouts(False, args.episodes, args.image_size)
    value, baseline = n_r / t_r, n_b / t_b
    write_result("sim_env_steps", {
        "metric": f"control steps per second with {args.image_size}x{args.image_size} rendering (one core)",
        "value": round(value, 1),
        "baseline": round(baseline, 1),
        "baseline_metric": "control steps per second without rendering (physics + expert only)",
        "ratio": round(value / baseline, 3),
        "steps": n_r,
        "gl_backend": backend,
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],  # the 2 cores are shared
        "peak_rss_mib": round(peak_rss_mib(), 1),
    })


if __name__ == "__main__":
    main()
