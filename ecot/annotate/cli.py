"""`ecot annotate DATASET_DIR --out DIR`: embodied features and reasoning for a dataset.

Imports nothing heavy at module level; the handler does.
"""

from __future__ import annotations

import argparse

from ecot.options import add_later, add_options, build


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "annotate",
        help="annotate a dataset with embodied features and reasoning (resumable)",
        description=(
            "Annotate every episode of DATASET_DIR: move primitives, gripper points, object boxes, captions and "
            "per-step reasoning. Writes OUT/embodied_features.json (the original ECoT layout), OUT/steps.parquet "
            "and OUT/validation.json. Re-running the same command resumes after any crash."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_later(p, _add_options)
    p.set_defaults(func=_handler)


def _add_options(p: argparse.ArgumentParser) -> None:
    """The flags: the fields of RunConfig (ecot.annotate.runner) and AnnotateConfig (ecot.annotate.pipeline),
    and the two that the CLI turns into several fields (--shard, --device), where --help has always shown them."""
    from ecot.annotate.runner import RunConfig

    add_options(p, RunConfig, only=["dataset_dir", "out_dir"])
    p.add_argument("--shard", default="0/1", help="annotate only episodes with index %% n == i (i/n)")
    add_options(p, RunConfig, only=["workers", "use_ray", "limit", "annotate"])
    p.add_argument("--device", default="cpu", help="torch device for the model backends")
    add_options(p, RunConfig)  # --no-progress, --no-validate


def _handler(args) -> int:
    import sys

    from ecot.annotate.pipeline import AnnotateConfig
    from ecot.annotate.runner import RunConfig, WorkDir, failure_summary, parse_shard, run_annotation
    from ecot.errors import EcotError, check_device

    # Errors are reported by ecot.cli.main: usage errors exit 2, failures 1.
    check_device(args.device)
    shard_index, num_shards = parse_shard(args.shard)
    model_opts = {"device": args.device} if args.device != "cpu" else {}
    annotate = build(
        AnnotateConfig, args,
        gripper_options=dict(model_opts) if args.gripper != "gt" else {},
        boxes_options=dict(model_opts) if args.boxes != "gt" else {},
        caption_options=dict(model_opts) if args.captions == "transformers" else {},
    )
    config = build(RunConfig, args, shard_index=shard_index, num_shards=num_shards, annotate=annotate)
    summary = run_annotation(config)
    rate = summary.steps_now / summary.seconds if summary.seconds > 0 else 0.0
    print(f"annotated {summary.annotated_now} episode(s) now ({summary.steps_now} steps, {rate:.0f} steps/s); "
          f"{summary.done}/{summary.total} of this shard done", file=sys.stderr)
    text = failure_summary(summary, WorkDir(args.out))
    if summary.features_path is not None:
        print(f"features: {summary.features_path}", file=sys.stderr)
        report = summary.features_path.parent / "validation.json"
        if report.exists():
            import json

            r = json.loads(report.read_text())
            cov, con = r["coverage"], r["consistency"]
            print(f"validation: {r['episodes']} episodes, {r['steps']} steps; coverage reasoning {cov['reasoning']:.3f} "
                  f"gripper {cov['gripper']:.3f} boxes {cov['boxes']:.3f}; primitive/action agreement "
                  f"{con['primitive_action_agreement']}; boxes inside image {con['boxes_inside_image']}", file=sys.stderr)
    elif not text:
        print("other shards still have episodes to annotate; the features file is assembled when all are done",
              file=sys.stderr)
    if text:  # some episodes failed: reported by ecot.cli like every failure (exit code 1)
        raise EcotError(text)
    return 0
