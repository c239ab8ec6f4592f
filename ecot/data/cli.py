"""`ecot data` (info, convert) and `ecot features` (look into an embodied-features file, streamed)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", help="inspect and convert datasets (LeRobot v2.1/v3.0, RLDS)",
        description="Summarize a dataset directory or convert it to LeRobot v3.0.")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")
    info = data_commands.add_parser("info", help="summarize a dataset: format, episodes, frames, cameras, features")
    info.add_argument("path", help="dataset directory (LeRobot v2.1 or v3.0, image or video; RLDS/TFDS)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_data_info)
    conv = data_commands.add_parser("convert", help="convert LeRobot v2.1 / v3.0 or RLDS into LeRobot v3.0 (resumable)")
    conv.add_argument("src", help="source dataset directory")
    conv.add_argument("dst", help="output directory (re-run the same command to resume)")
    conv.add_argument("--to", default="lerobot-v3", choices=["lerobot-v3"], help="target format")
    conv.add_argument("--video", action="store_true", help="store the camera as mp4 video (AV1) instead of PNG images")
    conv.add_argument("--limit", type=int, default=None, help="convert only the first N episodes")
    conv.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    conv.set_defaults(func=_data_convert)
    data.set_defaults(func=lambda args: data.print_help() or 0)

    parser = subparsers.add_parser(
        "features",
        help="inspect an embodied-features JSON file (ECoT layout)",
        description="Inspect an embodied-features file in the released ECoT layout, streaming it.",
    )
    commands = parser.add_subparsers(title="features commands", metavar="COMMAND")

    show = commands.add_parser("show", help="print the reasoning strings the training loader builds")
    show.add_argument("file", help="features JSON file")
    show.add_argument("--limit", type=int, default=5, help="how many steps to print (default 5; 0 = all)")
    show.add_argument("--episode", default=None, help="only this episode id")
    show.set_defaults(func=_show)

    stats = commands.add_parser("stats", help="count episodes and steps, and coverage of each feature")
    stats.add_argument("file", help="features JSON file")
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.set_defaults(func=_stats)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)


def _show(args: argparse.Namespace) -> int:
    from ecot.data.features import iter_reasoning_strings

    shown = 0
    for file_path, episode_id, step, text in iter_reasoning_strings(args.file):
        if args.episode is not None and episode_id != args.episode:
            continue
        print(f"[{file_path} | episode {episode_id} | step {step}]\n{text}\n")
        shown += 1
        if args.limit and shown >= args.limit:
            break
    if shown == 0:
        print("no annotated steps found")
    return 0


def feature_stats(path: str) -> dict:
    """Counts over a features file: episodes, steps with reasoning, steps with boxes / gripper."""
    from tqdm import tqdm

    from ecot.data.features import GRIPPER_KEY, iter_feature_episodes

    counts = {"file_paths": 0, "episodes": 0, "episodes_with_reasoning": 0, "reasoning_steps": 0,
              "steps_with_boxes": 0, "steps_with_gripper": 0}
    last_path = None
    for file_path, _, entry in tqdm(iter_feature_episodes(path), desc="reading", unit="ep", mininterval=1, leave=False):
        if file_path != last_path:
            counts["file_paths"] += 1
            last_path = file_path
        counts["episodes"] += 1
        reasoning = entry.get("reasoning")
        features = entry.get("features") or {}
        if isinstance(reasoning, dict):
            counts["episodes_with_reasoning"] += 1
            counts["reasoning_steps"] += len(reasoning)
        counts["steps_with_boxes"] += sum(1 for boxes in features.get("bboxes") or [] if boxes)
        counts["steps_with_gripper"] += len(features.get(GRIPPER_KEY) or [])
    return counts


def _stats(args: argparse.Namespace) -> int:
    counts = feature_stats(args.file)
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        for key, value in counts.items():
            print(f"{key:>24}: {value}")
    return 0


def _data_info(args: argparse.Namespace) -> int:
    from ecot.data.convert import describe

    summary = describe(args.path)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    for key in ("path", "format", "episodes", "frames", "fps", "robot_type", "tasks", "image_key", "ground_truth", "norm_stats"):
        if key in summary:
            print(f"{key:>12}: {summary[key]}")
    for cam, desc in summary.get("cameras", {}).items():
        print(f"{'camera':>12}: {cam} " + " ".join(f"{k}={v}" for k, v in desc.items()))
    for name, ft in summary.get("features", {}).items():
        print(f"{'feature':>12}: {name} {ft['dtype']} {ft['shape']}")
    return 0


def _data_convert(args: argparse.Namespace) -> int:
    from ecot.data.convert import convert
    from ecot.runlock import locked_dir

    with locked_dir(args.dst, "ecot data convert"):
        out = convert(args.src, args.dst, to=args.to, video=args.video, progress=not args.no_progress, limit=args.limit)
    print(f"{out['episodes']} episodes in {out['out']} (LeRobot v3.0; {out['new_episodes']} converted now from {out['source_format']})")
    return 0
