"""`ecot policy`: the policy runtime from the shell (``ecot policy bench CHECKPOINT``)."""

from __future__ import annotations

import argparse

MODES = ("full", "reuse", "async", "no-reasoning")  # == ecot.policy.MODES (kept import-free for `ecot --help`)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("policy", help="the ECoT policy runtime: per-mode latency on this machine")
    sub = p.add_subparsers(title="policy commands", metavar="COMMAND")
    b = sub.add_parser("bench", help="per-mode latency (ms per control step, tokens decoded) vs predict_action")
    b.add_argument("checkpoint", help="checkpoint directory or hub id")
    b.add_argument("--modes", default=",".join(MODES), help="comma-separated modes (default %(default)s)")
    b.add_argument("--steps", type=int, default=10, help="measured control steps per mode (default %(default)s)")
    b.add_argument("--warmup", type=int, default=1, help="unmeasured first steps per mode (default %(default)s)")
    b.add_argument("--reuse-steps", type=int, default=5, help="reuse mode: steps per high-level reasoning (default %(default)s)")
    b.add_argument("--instruction", default="put the red block in the bowl")
    b.add_argument("--no-baseline", action="store_true", help="skip the predict_action (free generation) baseline")
    b.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    b.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the checkpoint's)")
    b.add_argument("--out", default=None, help="also write the results as JSON here")
    b.set_defaults(func=_bench)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _bench(args: argparse.Namespace) -> int:
    import json

    from ecot.policy.bench import run_bench

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown mode(s) {unknown} in --modes; expected a comma-separated subset of {list(MODES)}")
    for name in ("steps", "reuse_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    report = run_bench(args.checkpoint, args.out, modes, args.steps, args.warmup, args.reuse_steps, args.device,
                       args.dtype, args.instruction, baseline=not args.no_baseline)
    print(f"{'mode':<16}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'tokens/step':>13}{'speedup':>10}")
    for name, r in report["modes"].items():
        speed = r.get("speedup_vs_predict_action")
        print(f"{name:<16}{r['mean_ms']:>10.1f}{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}"
              f"{r['tokens_decoded_per_step']:>13.1f}{(f'{speed:.1f}x' if speed else '-'):>10}")
    if args.out:
        print(f"results written to {args.out}")
    else:
        print(json.dumps(report["modes"]))
    return 0
