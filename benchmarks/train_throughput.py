"""Training throughput of the tiny preset on CPU, and whether the data loader keeps up.

1. Trainer: samples/s of ``Trainer`` (tiny-siglip preset, sim data, batch 8, fp32, full
   fine-tuning, metrics every step) over the steps after a warm-up. Baseline, same run: a bare
   loop of forward + backward + AdamW on the same batches (pre-collated, no metrics, no
   logging), i.e. the cost of the model alone; ratio = trainer / bare loop.
2. Data loader: samples/s of the training DataLoader alone (PNG decode, reasoning join,
   tokenization, image transform, collate) with 0 and 1 worker processes. Baseline: the
   trainer's consumption from (1); ratio = loader / trainer (> 1: the loader is not the bottleneck).

Usage: python benchmarks/train_throughput.py [--episodes 6] [--image-size 128] [--steps 30]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import peak_rss_mib, write_result  # noqa: E402


def make_data(root: Path, episodes: int, image_size: int) -> tuple[Path, Path]:
    from ecot.cli import main

    data, annotations = root / "data", root / "annotations"
    assert main(["sim", "collect", "--task", "all", "--episodes", str(episodes), "--out", str(data),
                 "--image-size", str(image_size), "--no-progress"]) == 0
    assert main(["annotate", str(data), "--out", str(annotations), "--no-progress"]) == 0
    return data, annotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="tiny-siglip")
    args = parser.parse_args()

    import torch

    from ecot.train.recipes import RunConfig, build_run
    from ecot.train.samples import collate
    from ecot.train.sampler import ResumableSampler
    from ecot.train.trainer import Trainer, TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, annotations = make_data(root, args.episodes, args.image_size)
        warmup = 5
        train_config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=1e-3, log_every=10**9,
                                   tensorboard=False, progress=False)
        run = RunConfig(data=str(data), out=str(root / "run"), features=str(annotations), model=args.model,
                        eval_episodes=0, train=train_config)
        model, processor, train_data, _, stats = build_run(run)
        n_params = sum(p.numel() for p in model.parameters())
        pad = processor.tokenizer.pad_token_id

        # (2) the data loader alone
        def loader_rate(workers: int, batches: int = 12) -> float:
            sampler = ResumableSampler(len(train_data), seed=0)
            loader = torch.utils.data.DataLoader(
                train_data, batch_sampler=torch.utils.data.BatchSampler(sampler, args.batch_size, False),
                collate_fn=lambda items: collate(items, pad), num_workers=workers,
            )
            it = iter(loader)
            next(it)  # worker start-up is not throughput
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            rate = batches * args.batch_size / (time.perf_counter() - start)
            del it, loader
            return rate

        loader_0 = loader_rate(0)
        loader_1 = loader_rate(1)

        # (1b) bare loop on pre-collated batches: the model's own cost
        keys = list(itertools.islice(iter(ResumableSampler(len(train_data), seed=1)), 8 * args.batch_size))
        batches = [collate([train_data[k] for k in keys[i : i + args.batch_size]], pad) for i in range(0, len(keys), args.batch_size)]
        torch.manual_seed(0)
        bare_model = type(model)(model.config)
        bare_model.load_state_dict(model.state_dict())
        bare_model.train()
        optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-3)
        inputs = ("input_ids", "attention_mask", "pixel_values", "labels")
        timed = 0.0
        for i in range(warmup + args.steps):
            batch = batches[i % len(batches)]
            start = time.perf_counter()
            out = bare_model(**{k: batch[k] for k in inputs})
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(bare_model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= warmup:
                timed += time.perf_counter() - start
        bare_rate = args.steps * args.batch_size / timed
        del bare_model, optimizer

        # (1) the trainer's loop (no export): warm-up steps, then the timed steps
        from ecot.train.trainer import _Loggers

        trainer = Trainer(train_config, model, processor, train_data, action_stats=stats)
        no_logs = _Loggers(trainer.config, Path(trainer.config.out_dir), is_main=False)
        trainer.config.max_steps = warmup
        trainer._loop(no_logs)
        trainer.config.max_steps = warmup + args.steps
        start = time.perf_counter()
        trainer._loop(no_logs)
        trainer_rate = args.steps * args.batch_size / (time.perf_counter() - start)

    result = {
        "description": "tiny-preset training samples/s on CPU (fp32, batch %d) and data-loader samples/s" % args.batch_size,
        "model": args.model,
        "parameters": n_params,
        "image_size_dataset": args.image_size,
        "torch_threads": torch.get_num_threads(),
        "value": round(trainer_rate, 2),
        "unit": "samples/s (trainer, incl. per-step metrics and data loading in the main process)",
        "baseline": round(bare_rate, 2),
        "baseline_unit": "samples/s (bare forward+backward+AdamW on pre-collated batches)",
        "ratio": round(trainer_rate / bare_rate, 3),
        "loader": {
            "workers_0_samples_per_s": round(loader_0, 1),
            "workers_1_samples_per_s": round(loader_1, 1),
            "baseline_trainer_samples_per_s": round(trainer_rate, 2),
            "ratio_workers_0": round(loader_0 / trainer_rate, 2),
            "ratio_workers_1": round(loader_1 / trainer_rate, 2),
        },
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    write_result("train_throughput", result)


if __name__ == "__main__":
    main()
