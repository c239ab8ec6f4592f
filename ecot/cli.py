"""The one `ecot` command. Each stage registers its own subcommands.

A stage's CLI module exposes ``register(subparsers)``; it must import nothing heavy
at module level (torch, mujoco, ...) so that ``ecot --help`` stays fast. Heavy imports
happen inside the handler that the subcommand sets with ``parser.set_defaults(func=...)``.

Errors are reported one way for every subcommand (:func:`report_error`): one line
``ecot: error: ...`` saying what was wrong and what was expected, exit code 2 for usage errors
(argparse's, and :class:`ecot.errors.UsageError`) and 1 for failures (I/O and disk full,
locked directories, malformed files, ...). ``ecot --debug ...`` (or ``ECOT_DEBUG=1``) shows the
traceback instead.
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
    "ecot.serve.cli",
    "ecot.eval.cli",
    "ecot.demo",
]


def build_parser() -> argparse.ArgumentParser:
    from ecot import __version__
    from ecot.options import Parser

    # A Parser (and its subcommands' parsers) adds a subcommand's generated flags on first use (ecot.options).
    parser = Parser(
        prog="ecot",
        description="Embodied Chain-of-Thought robot policies: simulate, annotate, train, run.",
    )
    parser.add_argument("--version", action="version", version=f"ecot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (or set ECOT_DEBUG=1)")
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


def report_error(err: BaseException) -> int:
    """Print ``err`` as one ``ecot: error:`` line on stderr; return the exit code (2 usage, 1 failure)."""
    from ecot.errors import EcotError, describe_os_error, is_disk_full

    code = 1
    if isinstance(err, EcotError):
        message, code = str(err), err.exit_code
    elif isinstance(err, OSError):
        message = describe_os_error(err)
    elif is_disk_full(err):  # torch / safetensors report a full disk as their own errors
        message = f"disk full: no space left on device ({type(err).__name__}: {str(err).splitlines()[0]}); " \
                  "free some space and re-run"
    elif isinstance(err, KeyError):
        message = str(err.args[0]) if err.args else "missing key"
    elif isinstance(err, (ValueError, ImportError, NotImplementedError)):
        message = str(err)
    else:
        first = (str(err).splitlines() or [""])[0]
        message = f"unexpected {type(err).__name__}: {first} (rerun with `ecot --debug ...` for the traceback)"
    print(f"ecot: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is global; accept it after the subcommand too (`ecot train ... --debug`).
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:cut]
    argv = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    debug = bool(debug or os.environ.get("ECOT_DEBUG"))
    try:
        result = func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every expected failure becomes one line
        if debug:
            raise
        return report_error(err)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
