"""`ecot eval` (closed-loop evaluation in the sim) and `ecot report` (one HTML file from run directories).

Nothing heavy is imported at module level; the handlers import what they need.
"""

from __future__ import annotations

import argparse
import json
import sys

EVAL_DESCRIPTION = """\
Evaluate a policy closed-loop in the built-in MuJoCo tabletop over seeded episodes: success by
task family, reasoning faithfulness against the sim's ground truth, latency, GIFs.

--policy is a checkpoint directory, ws://HOST:PORT (a running `ecot serve`), or one of the
built-ins: expert (scripted), oracle (expert actions + reasoning from ground truth: the
faithfulness sanity check), random (uniform actions).

Writes OUT/results.json, OUT/episodes.jsonl, OUT/eval_config.json and OUT/gifs/. Re-running the
same command resumes (finished episodes are skipped); raising --episodes adds episodes.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ecot.options import DefaultsHelpFormatter, add_later

    p = subparsers.add_parser("eval", help="closed-loop evaluation in the sim: success, reasoning faithfulness, GIFs",
                              description=EVAL_DESCRIPTION, formatter_class=DefaultsHelpFormatter)
    add_later(p, _add_options)
    p.set_defaults(func=_eval)

    r = subparsers.add_parser("report", help="one self-contained HTML report from evaluation directories",
                              description="Render one offline HTML file (plots and GIFs inlined) comparing the "
                                          "evaluation runs in DIR... (e.g. ECoT vs no-reasoning, full vs reuse).")
    r.add_argument("dirs", nargs="+", metavar="DIR", help="evaluation output directories (each with results.json)")
    r.add_argument("--out", default="report.html", help="HTML file to write (default %(default)s)")
    r.add_argument("--gallery", type=int, default=6, help="GIFs per run in the gallery (default %(default)s)")
    r.set_defaults(func=_report)


def _add_options(p: argparse.ArgumentParser) -> None:
    """The flags: EvalConfig's fields (ecot.eval.sim; `(default X)` is added by the formatter), and --no-progress."""
    from ecot.eval.sim import EvalConfig
    from ecot.options import add_options

    add_options(p, EvalConfig)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _eval(args: argparse.Namespace) -> int:
    from ecot.eval.sim import EvalConfig, evaluate
    from ecot.options import build
    from ecot.runlock import locked_dir

    config = build(EvalConfig, args)
    with locked_dir(args.out, "ecot eval"):  # a second evaluation into the same --out fails at once
        results = evaluate(config, progress=not args.no_progress)
    shown = {k: results[k] for k in ("policy", "split", "episodes", "success_rate", "success_ci95", "by_task", "latency_ms")}
    f = results.get("faithfulness")
    if f:
        shown["faithfulness"] = {k: f[k] for k in ("box_iou", "box_iou_ok", "box_precision", "box_recall", "gripper_err_px",
                                                   "move_agree", "subtask_correct", "plan_coverage")}
    print(json.dumps(shown, indent=2))
    print(f"results in {args.out}/results.json", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ecot.viz.report import write_report

    path = write_report(args.dirs, args.out, gallery=args.gallery)
    print(f"report: {path}", file=sys.stderr)
    return 0
