"""Does reasoning help? ECoT vs no-reasoning vs reasoning-dropout policies in the built-in sim.

The paper's comparison, reproduced at laptop scale: the same scripted demonstrations (one task
family, few objects: what a tiny model learns on a CPU), the same model preset, optimizer steps
and batch size for every recipe; each policy is evaluated closed-loop with ``ecot eval`` on seen
and held-out compositions (fixed seeds, 95 % Wilson intervals), beside the scripted expert (the
upper bound) and a random policy (the floor). Writes ``benchmarks/results/policy_quality.json``
and an HTML report (``ecot report``) of every evaluation.

Resumable: every stage (collection, annotation, each training run, each evaluation) picks up
where it stopped, so a killed run is restarted with the same command.

    python benchmarks/policy_quality.py                       # the defaults below, hours on 2 CPU cores
    python benchmarks/policy_quality.py --eval-episodes 10    # a quicker, noisier look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402

# (name, training recipe, policy mode at evaluation)
POLICIES = {
    "ecot": ("ecot", "full"),
    "no-reasoning": ("no-reasoning", "no-reasoning"),
    "reasoning-dropout": ("reasoning-dropout", "full"),
    "reasoning-dropout-fast": ("reasoning-dropout", "no-reasoning"),
}


def parse_args() -> argparse.Namespace:
    from ecot.demo import DEMO_RECIPE
    from ecot.sim import EXPERT_STYLES
    from ecot.sim.scene import CAMERAS, START_REGIONS

    r = DEMO_RECIPE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/policy_quality", help="work directory (resumable)")
    p.add_argument("--task", default=r["task"], help="task family of the demonstrations and evaluations")
    p.add_argument("--num-objects", type=int, default=r["num_objects"])
    p.add_argument("--expert-style", default=r["expert_style"], choices=EXPERT_STYLES)
    p.add_argument("--episodes", type=int, default=r["episodes"], help="demonstrations (seen compositions)")
    p.add_argument("--action-noise", type=float, default=r["action_noise"],
                   help="recovery data: std (m) of the noise on executed steps")
    p.add_argument("--action-noise-fraction", type=float, default=r["action_noise_fraction"],
                   help="share of the steps that get the noise")
    p.add_argument("--moves-from", default=r["moves_from"], choices=("states", "actions"),
                   help="what the annotations' MOVE describes (ecot annotate --moves-from)")
    p.add_argument("--start", default=r["start"], choices=START_REGIONS,
                   help="where demonstrations start the gripper (anywhere: episode-level recovery data, evaluated "
                        "from home; table: planar pushing, evaluated from the table too)")
    p.add_argument("--camera", default=r["camera"], choices=CAMERAS, help="the camera of demonstrations and evaluations")
    p.add_argument("--image-size", type=int, default=r["image_size"])
    p.add_argument("--model", default=r["model"])
    p.add_argument("--no-locator", dest="locator", action="store_false", default=r["locator"],
                   help="train without the locator and the move head (the demo recipe's --no-locator)")
    p.add_argument("--action-loss-weight", type=float, default=r["action_loss_weight"],
                   help="weight of the action tokens' loss (with the locator)")
    p.add_argument("--locator-pretrain-steps", type=int, default=r["locator_pretrain_steps"],
                   help="with the locator: its steps of training alone before the language model's")
    p.add_argument("--vision-pretrain-steps", type=int, default=r["vision_pretrain_steps"],
                   help="vision pre-training steps on the sim's ground truth before every recipe (0: none)")
    p.add_argument("--steps", type=int, default=r["train_steps"], help="optimizer steps of every recipe")
    p.add_argument("--batch-size", type=int, default=r["batch_size"])
    p.add_argument("--lr", type=float, default=r["lr"])
    p.add_argument("--policies", default="ecot,no-reasoning,reasoning-dropout",
                   help=f"comma-separated, from {', '.join(POLICIES)}")
    p.add_argument("--eval-episodes", type=int, default=50, help="closed-loop episodes per policy and split")
    p.add_argument("--max-steps", type=int, default=r["rollout_steps"], help="control steps per episode")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


class _Costs(dict):
    """Seconds per stage, summed over every run of the same work directory (kept in ``cost.json``), so a
    resumed benchmark reports what it cost in all, not only what its last run had left to do."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.before = json.loads(path.read_text()) if path.is_file() else {}
        self.update(self.before)

    def __setitem__(self, key: str, seconds: float) -> None:
        super().__setitem__(key, self.before.get(key, 0.0) + seconds)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(self), indent=2))
        tmp.replace(self.path)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from ecot.annotate.pipeline import AnnotateConfig
    from ecot.annotate.runner import RunConfig as AnnotateRunConfig
    from ecot.annotate.runner import run_annotation
    from ecot.demo import train_policy
    from ecot.eval.sim import EvalConfig, evaluate
    from ecot.sim.collect import CollectConfig, collect
    from ecot.viz.report import write_report

    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise SystemExit(f"unknown policies {unknown}; expected some of {list(POLICIES)}")
    out = Path(args.out)
    dataset, annotations = out / "dataset", out / "annotations"
    cost = _Costs(out / "cost.json")

    t = time.perf_counter()
    collect(dataset, CollectConfig(task=args.task, split="seen", episodes=args.episodes, seed=args.seed,
                                   image_size=args.image_size, workers=args.workers, num_objects=args.num_objects,
                                   stop_at_success=True, expert_style=args.expert_style, action_noise=args.action_noise,
                                   action_noise_fraction=args.action_noise_fraction, start=args.start,
                                   camera=args.camera))
    cost["collect_s"] = time.perf_counter() - t
    t = time.perf_counter()
    run_annotation(AnnotateRunConfig(dataset_dir=str(dataset), out_dir=str(annotations), workers=args.workers,
                                     annotate=AnnotateConfig(moves_from=args.moves_from)))
    cost["annotate_s"] = time.perf_counter() - t

    evals: dict[str, Path] = {}
    results: dict[str, dict] = {}

    def run_eval(label: str, policy: str, split: str, mode: str = "full") -> None:
        where = out / "eval" / f"{label}-{split}"
        t0 = time.perf_counter()
        res = evaluate(EvalConfig(policy=policy, out=str(where), task=args.task, split=split, episodes=args.eval_episodes,
                                  seed=10_000 + (0 if split == "seen" else 50_000), max_steps=args.max_steps,
                                  image_size=args.image_size, num_objects=args.num_objects, mode=mode,
                                  start="table" if args.start == "table" else "home",  # recovery starts train only
                                  camera=args.camera,
                                  workers=args.workers, gifs=2))
        cost[f"eval_{label}_{split}_s"] = time.perf_counter() - t0
        evals[f"{label}-{split}"] = where
        f = res.get("faithfulness") or {}
        results.setdefault(label, {})[split] = {
            "success_rate": res["success_rate"], "success_ci95": res["success_ci95"], "episodes": res["episodes"],
            "faithfulness": {k: f.get(k) for k in ("box_iou", "box_iou_ok", "box_recall", "gripper_err_px", "move_agree",
                                                   "subtask_correct")} if f else None,
            "latency_ms": res.get("latency_ms"),
        }

    for split in ("seen", "heldout"):
        run_eval("expert", "expert", split)
        run_eval("random", "random", split)
    trained: dict[str, dict] = {}
    for name in names:
        recipe, mode = POLICIES[name]
        run = out / "train" / recipe
        if recipe not in trained:
            t = time.perf_counter()
            metrics = train_policy(dataset, annotations, run, recipe=recipe, model=args.model, steps=args.steps,
                                   batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                   vision_pretrain_steps=args.vision_pretrain_steps, locator=args.locator,
                                   action_loss_weight=args.action_loss_weight if args.locator else 1.0,
                                   locator_pretrain_steps=args.locator_pretrain_steps)
            cost[f"train_{recipe}_s"] = time.perf_counter() - t
            trained[recipe] = metrics
        for split in ("seen", "heldout"):
            run_eval(name, str(run / "final"), split, mode)
        results[name]["training"] = trained[recipe]

    report = write_report(list(evals.values()), out / "report.html")
    write_result(
        "policy_quality",
        {
            "what": (f"{args.task} with {args.num_objects} objects, {args.episodes} {args.expert_style}-style "
                     f"demonstrations at {args.image_size} px"
                     + (f" (executed steps perturbed: {args.action_noise} m std on {args.action_noise_fraction:.0%} of them)"
                        if args.action_noise else "")
                     + (", MOVE from the commanded actions" if args.moves_from == "actions" else "")
                     + (f", starting {args.start}" if args.start != "home" else "")
                     + (f", {args.camera} camera" if args.camera != "main" else "") + ", "
                     f"{args.model}, " + (f"the locator ({args.locator_pretrain_steps} steps alone first) as the only "
                                         "view of the image and the writer of VISIBLE OBJECTS, the move head with the action bound to its MOVE (ECoT), action "
                                         f"loss weight {args.action_loss_weight}, " if args.locator else "")
                     + (f"{args.vision_pretrain_steps} vision pre-training steps, "
                                          if args.vision_pretrain_steps else "")
                     + f"{args.steps} steps x batch {args.batch_size}, lr {args.lr}; "
                     f"{args.eval_episodes} closed-loop episodes per policy and split, {args.max_steps} steps each"),
            "value": results,
            "baseline": {"expert": results["expert"], "random": results["random"]},
            "cost_s": {k: round(v, 1) for k, v in cost.items()},  # summed over every (resumed) run
            "report": str(report),
        },
    )


if __name__ == "__main__":
    main()
