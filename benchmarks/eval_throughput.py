"""Throughput of ``ecot eval`` in the sim: episodes per minute with 2 worker processes vs 1.

Two policies: the scripted expert (simulation + rendering + ground truth + GIFs bound) and a tiny
tiny-siglip checkpoint run by ``ecot.policy.ECoTPolicy`` (model bound). The tiny checkpoint is
randomly initialised unless ``--checkpoint`` names a trained one: a random model fills every
reasoning field up to the grammar's per-field token budget (the worst case for latency).
Baseline, same run: ``--workers 1``.

Usage: python benchmarks/eval_throughput.py [--expert-episodes 16] [--policy-episodes 2] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import peak_rss_mib, write_result  # noqa: E402


def tiny_checkpoint(out: Path) -> Path:
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text

    text = ("TASK: put the red block in the blue bowl. PLAN: move to the red block, grasp the red block. "
            "VISIBLE OBJECTS: the red block [10, 12, 20, 22] SUBTASK: move to the red block MOVE: move down "
            "GRIPPER POSITION: [30, 40, 31, 41]")
    tokenizer = train_tiny_tokenizer([training_text("put the red block in the blue bowl", text, "", s)
                                      for s in ("vicuna", "pure")], vocab_size=1024)
    torch.manual_seed(0)
    stats = {"ecot_sim": {"action": {"mask": [True] * 6 + [False], "q01": [-0.045] * 3 + [0, 0, -0.3, 0],
                                     "q99": [0.045] * 3 + [0, 0, 0.3, 1], "min": [-0.05] * 7, "max": [0.05] * 7,
                                     "mean": [0.0] * 7, "std": [0.02] * 7},
                          "num_trajectories": 1, "num_transitions": 1}}
    config = VLAConfig.preset("tiny-siglip", norm_stats=stats)
    model = VLA(config).eval()
    model.processor = VLAProcessor(config, tokenizer)
    model.save_pretrained(out)
    return out


def run(policy: str, workers: int, episodes: int, image_size: int, max_steps: int, root: Path) -> dict:
    from ecot.eval.sim import EvalConfig, evaluate

    out = root / f"{Path(policy).name}_w{workers}"
    start = time.perf_counter()
    results = evaluate(EvalConfig(policy=policy, out=str(out), episodes=episodes, workers=workers,
                                  image_size=image_size, max_steps=max_steps, gifs=1, device="cpu"), progress=False)
    elapsed = time.perf_counter() - start
    steps = sum(json.loads(line)["steps"] for line in (out / "episodes.jsonl").read_text().splitlines())
    return {"seconds": round(elapsed, 2), "episodes_per_min": round(60 * episodes / elapsed, 2),
            "steps_per_s": round(steps / elapsed, 2), "success_rate": results["success_rate"],
            "latency_ms": results["latency_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expert-episodes", type=int, default=16)
    parser.add_argument("--policy-episodes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--policy-steps", type=int, default=2, help="control steps per tiny-policy episode")
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of the random tiny one")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ecot_eval_bench_"))
    try:
        ckpt = args.checkpoint or str(tiny_checkpoint(root / "tiny_random"))
        expert = {w: run("expert", w, args.expert_episodes, args.image_size, 80, root) for w in (2, 1)}
        policy = {w: run(ckpt, w, args.policy_episodes, args.image_size, args.policy_steps, root) for w in (2, 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_result("eval_throughput", {
        "metric": f"episodes per minute, ecot eval --env sim --workers 2 ({args.image_size}px), scripted expert",
        "value": expert[2]["episodes_per_min"],
        "baseline": expert[1]["episodes_per_min"],
        "baseline_metric": "the same with --workers 1",
        "ratio": round(expert[2]["episodes_per_min"] / expert[1]["episodes_per_min"], 3),
        "expert": {"episodes": args.expert_episodes, "max_steps": 80, "workers_2": expert[2], "workers_1": expert[1]},
        "tiny_policy": {"checkpoint": "random tiny-siglip via ECoTPolicy (fills each field's token budget)"
                        if not args.checkpoint else args.checkpoint,
                        "episodes": args.policy_episodes, "max_steps": args.policy_steps,
                        "workers_2": policy[2], "workers_1": policy[1],
                        "ratio": round(policy[2]["episodes_per_min"] / policy[1]["episodes_per_min"], 3)},
        "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],  # the 2 cores are shared
        "peak_rss_mib": round(peak_rss_mib(), 1),
    })


if __name__ == "__main__":
    main()
