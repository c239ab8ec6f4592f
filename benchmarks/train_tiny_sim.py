"""Acceptance run: a tiny ECoT policy trained on built-in sim data on the 2-core CPU.

Collects sim episodes (all task families), annotates them with the ground-truth/template
backends, trains the ``tiny-siglip`` preset with the ``ecot`` recipe through the same code path
as ``ecot train``, and reports the metrics on held-out episodes (the last ``--eval-episodes``):
action-token accuracy, reasoning loss, action loss and action L1 after unnormalizing.
Baselines, same run and the same held-out steps: each action dimension's most common token
(the strongest trivial predictor of the accuracy) and zero motion (of the L1); the untrained
model and chance (1/256) are kept for reference only.

Usage: python benchmarks/train_tiny_sim.py [--episodes 24] [--eval-episodes 4] [--steps 600]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import peak_rss_mib, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--eval-episodes", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default="tiny-siglip")
    parser.add_argument("--keep", default=None, help="keep the run directory here")
    args = parser.parse_args()

    import json

    import torch

    from ecot.cli import main as ecot_main
    from ecot.train.recipes import RunConfig, build_run
    from ecot.train.trainer import Trainer, TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, annotations = root / "data", root / "annotations"
        start = time.perf_counter()
        assert ecot_main(["sim", "collect", "--task", "all", "--episodes", str(args.episodes), "--out", str(data),
                          "--image-size", str(args.image_size), "--no-progress"]) == 0
        assert ecot_main(["annotate", str(data), "--out", str(annotations), "--no-progress"]) == 0
        data_s = time.perf_counter() - start

        out = Path(args.keep) if args.keep else root / "run"
        train_config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, schedule="cosine",
                                   warmup_steps=20, min_lr_ratio=0.1, log_every=50, eval_every=args.steps // 3,
                                   save_every=args.steps // 2, progress=False, resume=False)
        run = RunConfig(data=str(data), out=str(out), features=str(annotations), model=args.model, recipe="ecot",
                        eval_episodes=args.eval_episodes, train=train_config)
        model, processor, train_data, eval_data, stats = build_run(run)
        trainer = Trainer(train_config, model, processor, train_data, eval_data=eval_data, action_stats=stats)
        untrained = trainer.evaluate()
        start = time.perf_counter()
        final = trainer.fit()
        train_s = time.perf_counter() - start
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    held_out = {k.removeprefix("eval/"): round(v, 4) for k, v in final.items() if k.startswith("eval/")}
    baseline = {k.removeprefix("eval/"): round(v, 4) for k, v in untrained.items()}
    result = {
        "description": "tiny ECoT policy trained on sim data on a 2-core CPU; metrics on held-out episodes",
        "model": args.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": "ecot",
        "episodes": args.episodes,
        "held_out_episodes": args.eval_episodes,
        "train_steps_total": len(train_data),
        "held_out_steps_total": len(eval_data),
        "optimizer_steps": args.steps,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "data_prep_s": round(data_s, 1),
        "train_s": round(train_s, 1),
        "value": held_out.get("action_accuracy"),
        "unit": "held-out action-token accuracy",
        "baseline": held_out.get("majority_action_accuracy"),
        "baseline_what": "each dimension's most common token on the same held-out steps",
        "ratio": round(held_out["action_accuracy"] / held_out["majority_action_accuracy"], 3),
        "ratio_what": "held-out accuracy / majority-token accuracy (> 1: the policy beats it)",
        "l1_ratio_vs_zero_motion": round(held_out["action_l1"] / held_out["zero_motion_action_l1"], 3),
        "chance_action_accuracy": round(1 / 256, 4),
        "held_out": held_out,
        "held_out_untrained": baseline,
        "final_train": {k.removeprefix("train/"): round(v, 4) for k, v in final.items() if k.startswith("train/")},
        "eval_history": [{"step": h["step"], **{k.removeprefix("eval/"): round(v, 4) for k, v in h.items() if k.startswith("eval/")}}
                         for h in history if "eval/loss" in h],
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    write_result("train_tiny_sim", result)


if __name__ == "__main__":
    main()
