"""The one `ecot` command. Each stage registers its own subcommands.

A stage's CLI module exposes ``register(subparsers)``; it must import nothing heavy
at module level (torch, mujoco, ...) so that ``ecot --help`` stays fast. Heavy imports
happen inside the handler that the subcommand sets with ``parser.set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Stage CLI modules, in pipeline order. A module that does not exist yet is skipped.
STAGE_MODULES = [
    "ecot.data.cli",
    "ecot.sim.cli",
    "ecot.annotate.cli",
    "ecot.model.cli",
    "ecot.train.cli",
    "ecot.policy.cli",
    "ecot.eval.cli",
    "ecot.demo",
]


def build_parser() -> argparse.ArgumentParser:
    from ecot import __version__

    parser = argparse.ArgumentParser(
        prog="ecot",
        description="Embodied Chain-of-Thought robot policies: simulate, annotate, train, run.",
    )
    parser.add_argument("--version", action="version", version=f"ecot {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # the stage is not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        result = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError) as err:
        # Bad input (missing file, malformed data, unknown key): one clear line, no traceback,
        # unless ECOT_DEBUG is set.
        if os.environ.get("ECOT_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ecot: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
