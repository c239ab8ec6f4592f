"""``ecot train``: train or fine-tune an ECoT policy (one CPU process, or many GPUs under torchrun).

Examples::

    ecot train --data data/sim --features data/sim/annotations --recipe ecot --model tiny-siglip --out runs/tiny
    torchrun --nproc_per_node 8 -m ecot train --data DIR --model CKPT_DIR --finetune lora --out runs/ft
"""

from __future__ import annotations

import argparse

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
    g = p.add_argument_group("run")
    g.add_argument("--data", required=True, help="dataset directory (LeRobot layout from `ecot sim collect`, or RLDS)")
    g.add_argument("--recipe", default="ecot", choices=["ecot", "no-reasoning", "reasoning-dropout", "reasoning-pretrain"])
    g.add_argument("--model", default="tiny-siglip", help="preset (tiny-siglip, tiny-dinosiglip, ecot-7b-bridge, openvla-7b) or checkpoint dir")
    g.add_argument("--out", required=True, help="run directory (resumed when it holds checkpoints)")
    g.add_argument("--features", default=None, help="embodied-features file, or the `ecot annotate` output directory")
    g.add_argument("--tokenizer", default=None, help="tokenizer directory (needed by 7B presets)")
    g.add_argument("--eval-episodes", type=int, default=None, help="held-out episodes, the last ones (default 10%%)")
    g.add_argument("--allow-partial-reasoning", action="store_true",
                   help="train even if the features miss some training episodes (they train without reasoning; "
                        "the coverage is logged in metrics.jsonl)")
    g.add_argument("--force-new", action="store_true",
                   help="start a new run; OUT must be new or empty (a run resumes only with its own options)")

    s = p.add_argument_group("samples")
    s.add_argument("--loss-mask", default=None, choices=["whole", "reasoning+action", "action"],
                   help="which tokens carry the loss (default: whole sequence, as the original ECoT)")
    s.add_argument("--tag-dropout", type=float, default=0.0, help="original per-tag reasoning dropout probability")
    s.add_argument("--reasoning-dropout", type=float, default=None, help="probability of dropping the whole reasoning")
    s.add_argument("--pretrain-fraction", type=float, default=0.5, help="reasoning-pretrain: fraction of steps with reasoning")
    s.add_argument("--join", default="aligned", choices=["aligned", "original"], help="reasoning join (original: Bridge one-step offset)")
    s.add_argument("--augment", action="store_true", help="OpenVLA image augmentation (crop + colour jitter)")

    t = p.add_argument_group("optimization")
    t.add_argument("--max-steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=8, help="per process and micro-batch")
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--lr", type=float, default=None, help=f"default {TINY_LR} for tiny presets, {FINETUNE_LR} otherwise")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--schedule", default="constant", choices=["constant", "cosine"])
    t.add_argument("--min-lr-ratio", type=float, default=0.0)
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    t.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 autocast on GPU")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--finetune", default="full", choices=["full", "lora"])
    t.add_argument("--lora-rank", type=int, default=32)
    t.add_argument("--lora-alpha", type=int, default=16)
    t.add_argument("--lora-dropout", type=float, default=0.0)
    t.add_argument("--freeze-vision", action="store_true")
    t.add_argument("--freeze-llm", action="store_true")
    t.add_argument("--seed", type=int, default=7)

    r = p.add_argument_group("runtime")
    r.add_argument("--strategy", default="auto", choices=["auto", "none", "ddp", "fsdp"], help="under torchrun: DDP (auto) or FSDP2")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda")
    r.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    r.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: only at the end)")
    r.add_argument("--keep-last", type=int, default=2, help="checkpoints kept (0: all)")
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--eval-every", type=int, default=0, help="evaluate on held-out episodes every N steps (0: at the end)")
    r.add_argument("--eval-batches", type=int, default=0, help="limit evaluation to N batches (0: all)")
    r.add_argument("--no-resume", action="store_true", help=argparse.SUPPRESS)  # old name of --force-new
    r.add_argument("--no-tensorboard", action="store_true")
    r.add_argument("--wandb-project", default=None, help="also log to Weights & Biases (needs wandb)")
    r.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)


def run_config_from_args(args: argparse.Namespace):
    from ecot.model.config import PRESETS
    from ecot.train.lora import LoraSettings
    from ecot.train.recipes import RunConfig, check_model_source
    from ecot.train.trainer import TrainConfig

    check_model_source(args.model)
    lr = args.lr
    if lr is None:
        lr = TINY_LR if args.model.startswith("tiny") and args.model in PRESETS else FINETUNE_LR
    train = TrainConfig(
        out_dir=args.out,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        schedule=args.schedule,
        min_lr_ratio=args.min_lr_ratio,
        max_grad_norm=args.max_grad_norm,
        precision=args.precision,
        gradient_checkpointing=args.gradient_checkpointing,
        finetune=args.finetune,
        lora=LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha, dropout=args.lora_dropout),
        freeze_vision=args.freeze_vision,
        freeze_llm=args.freeze_llm,
        strategy=args.strategy,
        device=args.device,
        num_workers=args.num_workers,
        seed=args.seed,
        save_every=args.save_every,
        keep_last=args.keep_last,
        log_every=args.log_every,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        resume=True,
        tensorboard=not args.no_tensorboard,
        wandb_project=args.wandb_project,
        progress=not args.no_progress,
    )
    return RunConfig(
        data=args.data,
        out=args.out,
        recipe=args.recipe,
        model=args.model,
        features=args.features,
        tokenizer=args.tokenizer,
        join=args.join,
        loss_mask=args.loss_mask,
        tag_dropout=args.tag_dropout,
        reasoning_dropout=args.reasoning_dropout,
        pretrain_fraction=args.pretrain_fraction,
        augment=args.augment,
        eval_episodes=args.eval_episodes,
        allow_partial_reasoning=args.allow_partial_reasoning,
        train=train,
    )


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
