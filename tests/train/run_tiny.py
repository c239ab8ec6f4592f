"""Train the tiny test VLA on synthetic episodes (run directly or under torchrun by the tests).

usage: python run_tiny.py OUT_DIR MAX_STEPS [--strategy S] [--save-every N] [--batch-size B] [--lr LR] [--finetune full|lora]
                          [--param-report DIR]

``--param-report DIR``: each rank writes DIR/params_rank{R}.json describing the parameters of the
model as the trainer wrapped it (class, DTensor placements, local and global sizes), so the tests
can see that FSDP2 really sharded them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_helpers import make_episodes, reasoning_for, tiny_model_and_processor  # noqa: E402

from ecot.train.data import EpisodeSteps, SampleConfig, StepDataset  # noqa: E402
from ecot.train.trainer import Trainer, TrainConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--save-every", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--finetune", default="full")
    parser.add_argument("--tag-dropout", type=float, default=0.3)
    parser.add_argument("--param-report", default=None)
    args = parser.parse_args()
    episodes = make_episodes(2, 3)
    reasoning = reasoning_for(episodes)
    model, processor, stats = tiny_model_and_processor(episodes, reasoning)
    # Dropout and augmentation on, so that resuming must reproduce the per-sample randomness.
    data = StepDataset(EpisodeSteps(episodes), reasoning, processor, stats, SampleConfig(tag_dropout=args.tag_dropout, augment=True))
    config = TrainConfig(
        out_dir=args.out,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule="cosine",
        warmup_steps=2,
        log_every=1,
        save_every=args.save_every,
        keep_last=0,
        strategy=args.strategy,
        finetune=args.finetune,
        tensorboard=False,
        progress=False,
    )
    trainer = Trainer(config, model, processor, data, action_stats=stats.action)
    if args.param_report:
        report_params(trainer, Path(args.param_report))
    result = trainer.fit()
    print(json.dumps(result))
    return 0


def report_params(trainer: Trainer, dest: Path) -> None:
    from torch.distributed.tensor import DTensor

    params = {}
    for name, p in trainer.model.named_parameters():
        entry = {"class": type(p).__name__, "dtensor": isinstance(p, DTensor), "numel": p.numel()}
        if isinstance(p, DTensor):
            entry.update(placements=[[type(x).__name__, getattr(x, "dim", None)] for x in p.placements], mesh_size=p.device_mesh.size(),
                         local_numel=p.to_local().numel())
        params[name] = entry
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"params_rank{trainer.info.rank}.json").write_text(json.dumps(
        {"strategy": trainer.strategy, "world_size": trainer.info.world_size, "params": params}))


if __name__ == "__main__":
    sys.exit(main())
