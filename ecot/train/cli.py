"""``ecot train``: train or fine-tune an ECoT policy (one CPU process, or many GPUs under torchrun).

Examples::

    ecot train --data data/sim --features data/sim/annotations --recipe ecot --model tiny-siglip --out runs/tiny
    torchrun --nproc_per_node 8 -m ecot train --data DIR --model CKPT_DIR --finetune lora --out runs/ft
"""

from __future__ import annotations

import argparse

from ecot.options import add_later, add_options, build, group_of

TINY_LR = 1e-3  # from-scratch tiny presets
FINETUNE_LR = 2e-5  # OpenVLA/ECoT full fine-tuning (LoRA: 5e-4)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an ECoT policy (ecot, no-reasoning, reasoning-dropout, reasoning-pretrain recipes)",
        description="Train or fine-tune an ECoT VLA. The run directory gets checkpoints/step_XXXXXX/ (resumable), "
        "final/ (loadable with VLA.from_pretrained), metrics.jsonl and TensorBoard logs. Launch with "
        "`torchrun --nproc_per_node N -m ecot train ...` for several processes.",
    )
    add_later(p, _add_options)
    p.set_defaults(func=_train)


def _add_options(p: argparse.ArgumentParser) -> None:
    """The flags: RunConfig's and TrainConfig's fields (ecot.train.recipes, ecot.train.trainer), plus two of the CLI's."""
    from ecot.train.recipes import RunConfig

    # Laid out group by group, in the order --help has always shown.
    add_options(p, RunConfig, only=["data", "recipe", "model"])
    add_options(p, RunConfig, group="run")
    group_of(p, "run").add_argument(
        "--force-new", action="store_true",
        help="start a new run; OUT must be new or empty (a run resumes only with its own options)")
    add_options(p, RunConfig, group="samples")
    add_options(p, RunConfig, group="optimization", overrides={
        "lr": {"default": None, "help": f"default {TINY_LR} for tiny presets, {FINETUNE_LR} otherwise"}})
    add_options(p, RunConfig)  # runtime
    group_of(p, "runtime").add_argument("--no-resume", action="store_true", help=argparse.SUPPRESS)  # old --force-new


def run_config_from_args(args: argparse.Namespace):
    from ecot.model.config import PRESETS
    from ecot.train.recipes import RunConfig, check_model_source
    from ecot.train.trainer import TrainConfig

    check_model_source(args.model)
    lr = args.lr
    if lr is None:
        lr = TINY_LR if args.model.startswith("tiny") and args.model in PRESETS else FINETUNE_LR
    return build(RunConfig, args, train=build(TrainConfig, args, lr=lr, resume=True))


def _train(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import os
    import sys

    from ecot.errors import check_device
    from ecot.runlock import locked_dir
    from ecot.train.runstate import inspect_run_dir, prepare_run_dir

    # Everything is validated before anything is written or computed.
    check_device(args.device)
    run = run_config_from_args(args)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with locked_dir(run.out, "ecot train") if main_rank else contextlib.nullcontext():
        state = inspect_run_dir(run, force_new=args.force_new or args.no_resume)
        if state.finished:
            if main_rank:
                print(f"{run.out} is already finished (step {state.step} of {state.max_steps}): nothing to do; "
                      "pass a larger --max-steps to train further", file=sys.stderr)
            return 0

        from ecot.train.recipes import build_run
        from ecot.train.trainer import Trainer

        model, processor, train_data, eval_data, action_stats = build_run(run)
        if main_rank:
            prepare_run_dir(run, state)
            if state.step:
                print(f"resumed from step {state.step} of {state.max_steps}", file=sys.stderr)
        trainer = Trainer(run.train, model, processor, train_data, eval_data=eval_data, action_stats=action_stats)
        result = trainer.fit()
    if trainer.info.is_main:
        print(json.dumps({"run_dir": str(run.out), "final": str(run.out) + "/final", **result}, indent=2))
    return 0
