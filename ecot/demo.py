"""`ecot demo`: the whole ECoT pipeline on built-in defaults, on a CPU, in minutes.

1. collect scripted demonstrations in the built-in MuJoCo tabletop (`ecot sim collect`);
2. annotate them with embodied reasoning, offline (`ecot annotate`, template backend);
3. train a tiny ECoT policy from scratch (`ecot train --recipe ecot --model tiny-siglip`);
4. run the trained policy closed-loop in new scenes: at every step it writes its reasoning, then
   acts; the reasoning is printed and drawn (boxes, gripper trail, text) into a GIF.

Every stage writes under one run directory and is resumable: re-running the command skips
what is done. Each stage is the same code as its own subcommand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    episodes: int = 60  # demonstrations to collect (round robin over the task families)
    image_size: int = 112  # camera resolution (the tiny preset's input size)
    train_steps: int = 600
    batch_size: int = 16
    model: str = "tiny-siglip"
    rollouts: int = 2  # closed-loop episodes with the trained policy
    rollout_steps: int = 40  # control steps per rollout
    seed: int = 0
    workers: int = 2  # simulation processes for collection

    def __post_init__(self) -> None:
        for name in ("episodes", "train_steps", "batch_size", "rollout_steps", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.rollouts < 0:
            raise ValueError(f"rollouts must be >= 0, got {self.rollouts}")


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo: sim demonstrations -> reasoning annotation -> tiny ECoT policy -> closed-loop rollouts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=defaults.out, help="run directory (default %(default)s)")
    p.add_argument("--episodes", type=int, default=defaults.episodes, help="demonstrations to collect (default %(default)s)")
    p.add_argument("--image-size", type=int, default=defaults.image_size, help="camera resolution (default %(default)s)")
    p.add_argument("--train-steps", type=int, default=defaults.train_steps, help="optimizer steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="default %(default)s")
    p.add_argument("--model", default=defaults.model, help="model preset (default %(default)s)")
    p.add_argument("--rollouts", type=int, default=defaults.rollouts, help="closed-loop episodes (default %(default)s)")
    p.add_argument("--rollout-steps", type=int, default=defaults.rollout_steps, help="default %(default)s")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--workers", type=int, default=defaults.workers, help="simulation processes (default %(default)s)")
    p.set_defaults(func=_handler)


def _handler(args: argparse.Namespace) -> int:
    config = DemoConfig(
        out=args.out, episodes=args.episodes, image_size=args.image_size, train_steps=args.train_steps,
        batch_size=args.batch_size, model=args.model, rollouts=args.rollouts, rollout_steps=args.rollout_steps,
        seed=args.seed, workers=args.workers,
    )
    summary = run_demo(config)
    print(json.dumps(summary, indent=2))
    return 0


def _say(message: str) -> None:
    print(f"\n== {message}", file=sys.stderr, flush=True)


def _stage(argv: list[str]) -> None:
    from ecot.cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"`ecot {' '.join(argv)}` failed with exit code {code}")


def run_demo(config: DemoConfig) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(asdict(config), indent=2))
    dataset, annotations, run = out / "dataset", out / "annotations", out / "train"
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    _say(f"1/4 collecting {config.episodes} scripted demonstrations -> {dataset}")
    _stage(["sim", "collect", "--task", "all", "--split", "seen", "--episodes", str(config.episodes),
            "--out", str(dataset), "--seed", str(config.seed), "--image-size", str(config.image_size),
            "--workers", str(config.workers)])
    timings["collect_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(f"2/4 annotating embodied reasoning (template backend, offline) -> {annotations}")
    _stage(["annotate", str(dataset), "--out", str(annotations), "--workers", str(config.workers)])
    timings["annotate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(f"3/4 training a {config.model} ECoT policy for {config.train_steps} steps on {_device()} -> {run}")
    _stage(["train", "--data", str(dataset), "--features", str(annotations), "--recipe", "ecot",
            "--model", config.model, "--out", str(run), "--max-steps", str(config.train_steps),
            "--batch-size", str(config.batch_size), "--schedule", "cosine", "--warmup-steps", "20",
            "--log-every", "50", "--seed", str(config.seed)])
    timings["train_s"] = time.perf_counter() - t0
    metrics = _final_metrics(run)

    t0 = time.perf_counter()
    _say(f"4/4 running the policy closed-loop in {config.rollouts} new scene(s)")
    rollouts = [rollout(run / "final", out / f"rollout_{i}.gif", config, seed=10_000 + config.seed * 100 + i)
                for i in range(config.rollouts)]
    timings["rollouts_s"] = time.perf_counter() - t0

    summary = {
        "run_dir": str(out),
        "dataset": str(dataset),
        "features": str(annotations / "embodied_features.json"),
        "checkpoint": str(run / "final"),
        "held_out_metrics": metrics,
        "rollouts": rollouts,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _final_metrics(run: Path) -> dict:
    """The last held-out evaluation the trainer logged (metrics.jsonl)."""
    path = run / "metrics.jsonl"
    last: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if any(str(k).startswith("eval") for k in record):
                last = record
    return {k: v for k, v in last.items() if str(k).startswith("eval") or k == "step"}


def rollout(checkpoint: Path, gif_path: Path, config: DemoConfig, seed: int) -> dict:
    """One closed-loop episode: reasoning printed each step, frames with the reasoning drawn."""
    import numpy as np
    import torch

    from ecot.model import VLA, ActionDecodeError, VLAProcessor
    from ecot.reasoning import Reasoning
    from ecot.sim import SimConfig, TabletopEnv
    from ecot.viz.overlay import reasoning_frame, save_gif

    device = _device()
    model = VLA.from_pretrained(checkpoint, dtype=torch.float32, device=device)
    processor = VLAProcessor.from_pretrained(checkpoint, config=model.config)
    model.eval()
    frames, problems, decode_failures = [], 0, 0
    with TabletopEnv(SimConfig(image_size=config.image_size, max_steps=config.rollout_steps + 1)) as env:
        obs, info = env.reset(seed=seed)
        instruction = env.task.instruction
        print(f"\n[rollout seed {seed}] instruction: {instruction}", file=sys.stderr)
        success = False
        for t in range(config.rollout_steps):
            try:
                result = model.predict_action(obs["image"], instruction, processor=processor, max_new_tokens=256)
                reasoning, action = result.reasoning, result.action
            except ActionDecodeError as err:
                # No usable action tokens: hold still (keep the gripper as it is) and show what was written.
                reasoning = Reasoning.parse(err.text)
                action = np.array([0, 0, 0, 0, 0, 0, float(obs["state"][6] > 0.5)])
                decode_failures += 1
            problems += bool(reasoning.problems)
            print(f"  step {t:2d} | SUBTASK: {reasoning.subtask} | MOVE: {reasoning.move} | "
                  f"action {np.round(action, 3).tolist()}", file=sys.stderr)
            frames.append(reasoning_frame(obs["image"], reasoning, header=f"{instruction} (step {t})",
                                          action=action, scale=3))
            obs, _, terminated, truncated, info = env.step(action)
            success = bool(info.get("success", False))
            if terminated or truncated or success:
                break
    save_gif(frames, gif_path)
    print(f"  -> {'success' if success else 'no success'} after {len(frames)} steps; frames in {gif_path}", file=sys.stderr)
    return {"seed": seed, "instruction": instruction, "success": success, "steps": len(frames),
            "steps_with_parse_problems": problems, "steps_without_action": decode_failures, "gif": str(gif_path)}
