"""Control-step latency of a trained tiny policy in the built-in sim, per mode, vs ``predict_action``.

The policy acts in closed loop in the MuJoCo tabletop: each step renders the camera, the policy
reasons (as its mode says) and acts, the sim steps. For each mode and for the baseline (free
generation with transformers' ``generate``, ``VLA.predict_action``) the same episode seeds are run;
reported are mean / p50 / p95 ms per control step (policy time only, not the sim's) and tokens
the model decoded per step. Times are wall-clock and, beside them, this process's CPU time (one
torch thread), which a machine shared with other jobs inflates less.

The checkpoint: ``--checkpoint DIR`` (e.g. the demo's ``runs/demo/train/final``), or by default
the tests' tiny trained policy (``tests/tiny_policy.py``: overfit on three synthetic scenes, so in
the sim it writes fluent but wrong reasoning — the latency is what is measured here).

The modes run as ``ECoTPolicy`` does by default, checking the previous step's ids as a draft;
``full`` and ``reuse`` also run without drafts (``draft=False``), to show what drafts add.

Usage::

    python benchmarks/policy_step_latency.py [--checkpoint DIR] [--steps 12] [--episodes 2]
    # the demo's policy on the scenes it was trained for:
    python benchmarks/policy_step_latency.py --checkpoint runs/demo/train/final --task push --num-objects 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402
from ecot.policy.modes import MODES  # noqa: E402


def run(model, mode: str | None, episodes: int, steps: int, image_size: int, reuse_steps: int,
        task: str | None = None, num_objects: int = 4, compile: bool = False, draft: bool = True) -> dict:
    from ecot.policy import ECoTPolicy
    from ecot.sim import SimConfig, TabletopEnv

    wall, cpu, tokens, drafted = [], [], [], []
    policy = ECoTPolicy(model, mode=mode, reuse_steps=reuse_steps, compile=compile, draft=draft) if mode else None
    with TabletopEnv(SimConfig(image_size=image_size, max_steps=steps + 1, num_objects=num_objects)) as env:
        if policy is not None and compile:  # compilation happens on the first steps: not timed
            obs, _ = env.reset(seed=999, task=task)
            for _ in range(reuse_steps + 1):
                obs, *_ = env.step(policy.step(obs["image"], env.task.instruction).action)
            policy._session.wait_idle(timeout=300)  # async: the background decoder compiles too
        for episode in range(episodes):
            obs, _ = env.reset(seed=1000 + episode, task=task)
            instruction = env.task.instruction
            if policy is not None:
                policy.reset()
            for t in range(steps):
                w, c = time.perf_counter(), time.process_time()
                if policy is None:
                    try:
                        pred = model.predict_action(obs["image"], instruction, max_new_tokens=512)
                        action, n = pred.action, len(pred.generated_ids)
                    except ValueError as err:  # free generation wrote no valid action: hold still
                        action, n = np.zeros(7), len(getattr(err, "generated_ids", []))
                else:
                    out = policy.step(obs["image"], instruction)
                    action, n = out.action, out.timings["tokens_decoded"]
                    drafted.append(out.timings["tokens_from_draft"])
                wall.append((time.perf_counter() - w) * 1000)
                cpu.append((time.process_time() - c) * 1000)
                tokens.append(n)
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
    if policy is not None:
        policy.close()
    return {
        "steps": len(wall),
        "mean_ms": round(float(np.mean(wall)), 1),
        "p50_ms": round(float(np.percentile(wall, 50)), 1),
        "p95_ms": round(float(np.percentile(wall, 95)), 1),
        "mean_cpu_ms": round(float(np.mean(cpu)), 1),
        "tokens_decoded_per_step": round(float(np.mean(tokens)), 1),
        **({"tokens_from_draft_per_step": round(float(np.mean(drafted)), 1)} if drafted else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--reuse-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--task", default=None, help="task family of the episodes (default: a random family each)")
    parser.add_argument("--num-objects", type=int, default=4, help="objects per scene")
    parser.add_argument("--compile", action="store_true",
                        help="the modes run with the torch.compile'd decode step (inductor); writes "
                             "policy_step_latency_compiled.json")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

    import torch

    from ecot.model import VLA

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint
    if checkpoint is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_policy import train_tiny_policy

        checkpoint = str(train_tiny_policy(Path(tempfile.mkdtemp()) / "tiny_policy"))
        source = "tests/tiny_policy.py (overfit on three synthetic scenes)"
    else:
        source = checkpoint
    model = VLA.from_pretrained(checkpoint, progress=False)
    size = int(model.processor.image_size)
    scene = {"task": args.task, "num_objects": args.num_objects}
    run(model, "full", 1, 2, size, args.reuse_steps, **scene)  # warm-up
    results = {"predict_action": run(model, None, args.episodes, args.steps, size, args.reuse_steps, **scene)}
    for mode in MODES:
        results[mode] = run(model, mode, args.episodes, args.steps, size, args.reuse_steps, **scene,
                            compile=args.compile)
    for mode in ("full", "reuse"):  # what the previous step's draft adds (PolicyConfig.draft)
        results[f"{mode} without draft"] = run(model, mode, args.episodes, args.steps, size, args.reuse_steps,
                                               **scene, compile=args.compile, draft=False)
    base = results["predict_action"]
    timed = [m for m in results if m != "predict_action"]
    ratios = {m: round(base["mean_cpu_ms"] / results[m]["mean_cpu_ms"], 2) for m in timed}
    write_result(
        "policy_step_latency_compiled" if args.compile else "policy_step_latency",
        {
            "what": "ms per closed-loop control step in the built-in sim (policy time only), tiny-siglip, CPU"
                    + (", the modes' one-token decode step torch.compile'd (inductor; compiled before timing)"
                       if args.compile else ""),
            "checkpoint": source,
            "episodes": args.episodes,
            "steps_per_episode": args.steps,
            "reuse_steps": args.reuse_steps,
            "task": args.task or "random family per episode",
            "num_objects": args.num_objects,
            "torch_threads": args.threads,
            "load_average": os.getloadavg(),
            "value": {m: results[m] for m in timed},
            "baseline": {"predict_action": base},
            "ratio": ratios,
            "ratio_meaning": "predict_action CPU ms per step / the mode's (higher is better); goals: reuse >= 4, "
                             "no-reasoning >= 15. The modes check the previous step's ids as a draft (the default); "
                             "'<mode> without draft' is PolicyConfig(draft=False)",
        },
    )


if __name__ == "__main__":
    main()
