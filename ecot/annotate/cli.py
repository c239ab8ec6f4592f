"""`ecot annotate DATASET_DIR --out DIR`: embodied features and reasoning for a dataset.

Imports nothing heavy at module level; the handler does.
"""

from __future__ import annotations

import argparse


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
    p.add_argument("dataset_dir", metavar="DATASET_DIR", help="dataset directory (LeRobot layout, e.g. from `ecot sim collect`)")
    p.add_argument("--out", required=True, help="output directory (created; resumed if it exists)")
    p.add_argument("--shard", default="0/1", help="annotate only episodes with index %% n == i (i/n)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    p.add_argument("--ray", action="store_true", help="distribute over a Ray cluster (RAY_ADDRESS, or a local one)")
    p.add_argument("--limit", type=int, default=None, help="annotate only the first N episodes")
    p.add_argument("--reasoning", default="template", choices=["template", "openai", "gemini"])
    p.add_argument("--gripper", default="gt", choices=["gt", "detector"])
    p.add_argument("--boxes", default="gt", choices=["gt", "grounding-dino"])
    p.add_argument("--captions", default="gt", choices=["gt", "transformers", "openai", "gemini"])
    p.add_argument("--llm-model", default="gpt-4o-mini", help="model name for the openai/gemini backends")
    p.add_argument("--llm-base-url", default=None,
                   help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)")
    p.add_argument("--llm-api-key-env", default=None,
                   help="environment variable holding the API key (default: OPENAI_API_KEY / GEMINI_API_KEY)")
    p.add_argument("--llm-cache", default=None, help="response cache directory (default OUT/llm_cache)")
    p.add_argument("--device", default="cpu", help="torch device for the model backends")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-validate", action="store_true", help="skip the validation report")
    p.set_defaults(func=_handler)


def _handler(args) -> int:
    import sys

    from ecot.annotate.pipeline import AnnotateConfig
    from ecot.annotate.runner import RunConfig, WorkDir, failure_summary, parse_shard, run_annotation
    from ecot.errors import check_device

    # Errors are reported by ecot.cli.main: usage errors exit 2, failures 1.
    check_device(args.device)
    shard_index, num_shards = parse_shard(args.shard)
    model_opts = {"device": args.device} if args.device != "cpu" else {}
    annotate = AnnotateConfig(
        reasoning=args.reasoning, gripper=args.gripper, boxes=args.boxes, captions=args.captions,
        llm_model=args.llm_model, llm_base_url=args.llm_base_url, llm_api_key_env=args.llm_api_key_env,
        llm_cache=args.llm_cache,
        gripper_options=dict(model_opts) if args.gripper != "gt" else {},
        boxes_options=dict(model_opts) if args.boxes != "gt" else {},
        caption_options=dict(model_opts) if args.captions == "transformers" else {},
    )
    config = RunConfig(
        dataset_dir=args.dataset_dir, out_dir=args.out, shard_index=shard_index, num_shards=num_shards,
        workers=args.workers, use_ray=args.ray, limit=args.limit, progress=not args.no_progress,
        validate=not args.no_validate, annotate=annotate,
    )
    summary = run_annotation(config)
    rate = summary.steps_now / summary.seconds if summary.seconds > 0 else 0.0
    print(f"annotated {summary.annotated_now} episode(s) now ({summary.steps_now} steps, {rate:.0f} steps/s); "
          f"{summary.done}/{summary.total} of this shard done", file=sys.stderr)
    text = failure_summary(summary, WorkDir(args.out))
    if text:
        print(text, file=sys.stderr)
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
    return 1 if text else 0
