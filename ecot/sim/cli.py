"""``ecot sim collect`` and ``ecot sim render`` (nothing heavy imported at module level)."""

from __future__ import annotations

import argparse

from ecot.options import add_later, add_options, build


def register(subparsers) -> None:
    sim = subparsers.add_parser("sim", help="built-in MuJoCo tabletop: collect demonstrations, render episodes")
    sub = sim.add_subparsers(title="sim commands", metavar="SIM_COMMAND")
    sim.set_defaults(func=lambda args: (sim.print_help(), 0)[1])

    c = sub.add_parser("collect", help="collect scripted demonstrations into a LeRobot v3.0 dataset (resumable)")
    add_later(c, _collect_options)
    c.set_defaults(func=_collect)

    r = sub.add_parser("render", help="write one episode as a GIF with its ground truth drawn")
    r.add_argument("dataset", help="dataset directory (ours, or any dataset open_dataset reads)")
    r.add_argument("--episode", type=int, default=0)
    r.add_argument("--out", required=True, help="output .gif file")
    r.add_argument("--scale", type=int, default=2, help="upscaling factor of the frames")
    r.set_defaults(func=_render)


def _collect_options(c: argparse.ArgumentParser) -> None:
    """The flags: CollectConfig's fields (ecot.sim.collect), with --out and --no-progress where --help has shown them."""
    from ecot.sim.collect import CollectConfig

    add_options(c, CollectConfig, only=["task", "split", "episodes"])
    c.add_argument("--out", required=True, help="output dataset directory")
    add_options(c, CollectConfig, only=["seed", "image_size", "workers", "max_attempts", "dataset_name", "num_objects",
                                        "stop_at_success", "video"])
    add_options(c, CollectConfig)  # any field added later
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _collect(args: argparse.Namespace) -> int:
    from ecot.sim.collect import CollectConfig, collect

    # Invalid settings raise UsageError here (naming the flags), before the output directory is touched.
    config = build(CollectConfig, args)
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
