"""``ecot sim collect`` and ``ecot sim render`` (nothing heavy imported at module level)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    sim = subparsers.add_parser("sim", help="built-in MuJoCo tabletop: collect demonstrations, render episodes")
    sub = sim.add_subparsers(title="sim commands", metavar="SIM_COMMAND")
    sim.set_defaults(func=lambda args: (sim.print_help(), 0)[1])

    c = sub.add_parser("collect", help="collect scripted demonstrations into a LeRobot v3.0 dataset (resumable)")
    c.add_argument("--task", default="all", help="task family (pick_place, move_relation, stack, push) or 'all'")
    c.add_argument("--split", default="seen", choices=["seen", "heldout"], help="object/relation compositions")
    c.add_argument("--episodes", type=int, required=True, help="total number of episodes in the dataset")
    c.add_argument("--out", required=True, help="output dataset directory")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--image-size", type=int, default=224, help="square camera image size in pixels")
    c.add_argument("--workers", type=int, default=1, help="parallel simulation processes")
    c.add_argument("--max-attempts", type=int, default=3, help="retries (new seed) when a demonstration fails")
    c.add_argument("--name", default="ecot_sim", help="dataset name (the key of its normalization statistics)")
    c.add_argument("--num-objects", type=int, default=4, help="objects per scene (the task's own plus distractors)")
    c.add_argument("--stop-at-success", action="store_true",
                   help="end each demonstration when its task is achieved (no retreat frames)")
    c.add_argument("--expert-style", default="smooth", choices=["smooth", "axis"],
                   help="smooth: human-like straight moves with noise; axis: fixed-speed steps per axis, no noise")
    c.add_argument("--video", action="store_true", help="store the camera as mp4 video (LeRobot v3.0, AV1) instead of PNG frames")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    c.set_defaults(func=_collect)

    r = sub.add_parser("render", help="write one episode as a GIF with its ground truth drawn")
    r.add_argument("dataset", help="dataset directory (ours, or any dataset open_dataset reads)")
    r.add_argument("--episode", type=int, default=0)
    r.add_argument("--out", required=True, help="output .gif file")
    r.add_argument("--scale", type=int, default=2, help="upscaling factor of the frames")
    r.set_defaults(func=_render)


def _collect(args: argparse.Namespace) -> int:
    from ecot.sim.collect import CollectConfig, collect

    # Invalid settings raise UsageError here, before the output directory is touched.
    config = CollectConfig(task=args.task, split=args.split, episodes=args.episodes, seed=args.seed,
                           image_size=args.image_size, workers=args.workers, max_attempts=args.max_attempts,
                           dataset_name=args.name, video=args.video, num_objects=args.num_objects,
                           stop_at_success=args.stop_at_success, expert_style=args.expert_style)
    summary = collect(args.out, config, progress=not args.no_progress)
    print(f"{summary['episodes']} episodes in {summary['out']} "
          f"({summary['new_episodes']} new, {summary['new_successes']} of them successful)")
    return 0


def _render(args: argparse.Namespace) -> int:
    from ecot.data import open_dataset
    from ecot.sim.render import render_episode_gif

    from ecot.errors import UsageError

    if args.scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {args.scale}")
    ds = open_dataset(args.dataset)
    if not 0 <= args.episode < len(ds):
        raise UsageError(f"--episode {args.episode} is out of range; expected 0 .. {len(ds) - 1} ({len(ds)} episodes)")
    path = render_episode_gif(ds[args.episode], args.out, scale=args.scale, fps=ds.fps or 5)
    print(f"wrote {path}")
    return 0
