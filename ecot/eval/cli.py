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
    from ecot.eval.policies import MODES

    families = ("pick_place", "move_relation", "stack", "push")  # ecot.sim.tasks.FAMILIES, without importing it
    p = subparsers.add_parser("eval", help="closed-loop evaluation in the sim: success, reasoning faithfulness, GIFs",
                              description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", required=True, help="CHECKPOINT | ws://HOST:PORT | expert | oracle | random")
    p.add_argument("--env", default="sim", choices=["sim"], help="environment (default %(default)s)")
    p.add_argument("--task", default="all", choices=("all",) + families, help="task family (default %(default)s)")
    p.add_argument("--split", default="seen", choices=["seen", "heldout"], help="composition split (default %(default)s)")
    p.add_argument("--episodes", type=int, default=20, help="episodes (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default %(default)s)")
    p.add_argument("--mode", default="full", choices=MODES, help="policy mode of a local checkpoint (default %(default)s)")
    p.add_argument("--reuse-steps", type=int, default=5, help="reasoning reuse interval for --mode reuse (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=80, help="control steps per episode (default %(default)s)")
    p.add_argument("--image-size", type=int, default=224,
                   help="camera resolution; use the resolution the policy was trained at (default %(default)s)")
    p.add_argument("--gifs", type=int, default=3, help="GIFs of this many successes and failures (default %(default)s)")
    p.add_argument("--device", default=None, help="torch device of a local checkpoint (default: cuda if available)")
    p.add_argument("--unnorm-key", default=None, help="normalization statistics key of the checkpoint")
    p.add_argument("--api-key", default=None, help="API key of a ws:// server")
    p.add_argument("--rerun", default=None, metavar="OUT.rrd", help="also log every step to a Rerun recording (pip install 'ecot[viz]')")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_eval)

    r = subparsers.add_parser("report", help="one self-contained HTML report from evaluation directories",
                              description="Render one offline HTML file (plots and GIFs inlined) comparing the "
                                          "evaluation runs in DIR... (e.g. ECoT vs no-reasoning, full vs reuse).")
    r.add_argument("dirs", nargs="+", metavar="DIR", help="evaluation output directories (each with results.json)")
    r.add_argument("--out", default="report.html", help="HTML file to write (default %(default)s)")
    r.add_argument("--gallery", type=int, default=6, help="GIFs per run in the gallery (default %(default)s)")
    r.set_defaults(func=_report)


def _eval(args: argparse.Namespace) -> int:
    from ecot.eval.sim import EvalConfig, evaluate
    from ecot.runlock import locked_dir

    config = EvalConfig(policy=args.policy, out=args.out, env=args.env, task=args.task, split=args.split,
                        episodes=args.episodes, seed=args.seed, workers=args.workers, mode=args.mode,
                        reuse_steps=args.reuse_steps, max_steps=args.max_steps, image_size=args.image_size,
                        gifs=args.gifs, device=args.device, unnorm_key=args.unnorm_key, api_key=args.api_key,
                        rerun=args.rerun)
    with locked_dir(args.out, "ecot eval"):  # a second evaluation into the same --out fails at once
        results = evaluate(config, progress=not args.no_progress)
    shown = {k: results[k] for k in ("policy", "split", "episodes", "success_rate", "success_ci95", "by_task", "latency_ms")}
    f = results.get("faithfulness")
    if f:
        shown["faithfulness"] = {k: f[k] for k in ("box_iou", "box_precision", "box_recall", "gripper_err_px",
                                                   "move_agree", "subtask_correct", "plan_coverage")}
    print(json.dumps(shown, indent=2))
    print(f"results in {args.out}/results.json", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ecot.viz.report import write_report

    path = write_report(args.dirs, args.out, gallery=args.gallery)
    print(f"report: {path}", file=sys.stderr)
    return 0
