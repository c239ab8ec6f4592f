"""`ecot policy`: the policy runtime from the shell (``ecot policy bench CHECKPOINT``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ecot.options import DefaultsHelpFormatter, add_later, add_options, build, option

from ecot.policy.modes import MODES


@dataclass
class BenchOptions:
    """What ``ecot policy bench`` measures; ``--reuse-steps`` is ``PolicyConfig.reuse_steps``."""

    checkpoint: str = option(help="checkpoint directory or hub id", positional=True)
    modes: str = option(",".join(MODES), "comma-separated modes")
    steps: int = option(10, "measured control steps per mode")
    warmup: int = option(1, "unmeasured first steps per mode")
    instruction: str = option("put the red block in the bowl", "the task instruction the policy is given every step")
    no_baseline: bool = option(False, "skip the predict_action (free generation) baseline")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cpu)")
    dtype: str | None = option(None, "float32, bfloat16, float16 (default: the checkpoint's)")
    out: str | None = option(None, "also write the results as JSON here")

    @property
    def mode_list(self) -> list[str]:
        return [m.strip() for m in self.modes.split(",") if m.strip()]

    def __post_init__(self) -> None:
        # ValueError: build() reports it as a usage error that names the flag.
        unknown = [m for m in self.mode_list if m not in MODES]
        if unknown or not self.mode_list:
            raise ValueError(f"unknown mode(s) {unknown} in --modes; expected a comma-separated subset of {list(MODES)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("policy", help="the ECoT policy runtime: per-mode latency on this machine")
    sub = p.add_subparsers(title="policy commands", metavar="COMMAND")
    b = sub.add_parser("bench", help="per-mode latency (ms per control step, tokens decoded) vs predict_action",
                       formatter_class=DefaultsHelpFormatter)
    add_later(b, _bench_options)
    b.set_defaults(func=_bench)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _bench_options(b: argparse.ArgumentParser) -> None:
    """The flags: BenchOptions' fields, and PolicyConfig's reuse_steps where --help has always shown it."""
    from ecot.policy.policy import PolicyConfig

    add_options(b, BenchOptions, only=["checkpoint", "modes", "steps", "warmup"])
    add_options(b, PolicyConfig, only=["reuse_steps"])
    add_options(b, BenchOptions)


def _bench(args: argparse.Namespace) -> int:
    import json

    from ecot.policy.bench import run_bench
    from ecot.policy.policy import PolicyConfig

    opts = build(BenchOptions, args)
    config = build(PolicyConfig, args)  # only --reuse-steps is a bench flag; its check is PolicyConfig's
    modes = opts.mode_list
    report = run_bench(opts.checkpoint, opts.out, modes, opts.steps, opts.warmup, config.reuse_steps, opts.device,
                       opts.dtype, opts.instruction, baseline=not opts.no_baseline)
    print(f"{'mode':<16}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'tokens/step':>13}{'speedup':>10}")
    for name, r in report["modes"].items():
        speed = r.get("speedup_vs_predict_action")
        print(f"{name:<16}{r['mean_ms']:>10.1f}{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}"
              f"{r['tokens_decoded_per_step']:>13.1f}{(f'{speed:.1f}x' if speed else '-'):>10}")
    if opts.out:
        print(f"results written to {opts.out}")
    else:
        print(json.dumps(report["modes"]))
    return 0
