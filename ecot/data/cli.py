"""`ecot features`: look into an embodied-features file (streamed, any size)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
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
