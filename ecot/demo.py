"""`ecot demo`: the whole ECoT pipeline on built-in defaults, on a CPU, in minutes.

1. collect scripted demonstrations in the built-in MuJoCo tabletop (`ecot sim collect`, with
   recovery noise);
2. annotate them with embodied reasoning, offline (`ecot annotate`, template backend, MOVE from the
   commanded actions);
3. train a tiny ECoT policy from scratch (`ecot train --recipe ecot --model tiny-siglip --locator
   --locator-relations --locator-only --move-head --numeric-embeddings --tokenizer-numbers whole
   --action-loss-weight 10`; without the locator and the move head with `--no-locator`);
4. evaluate the trained policy closed-loop in new scenes (`ecot eval`): at every step it writes
   its reasoning, then acts; the reasoning is printed, scored against the sim's ground truth and
   drawn (boxes, gripper trail, text) into GIFs.

Every stage writes under one run directory and is resumable: re-running the command skips
what is done. Each stage is called through its Python API, the same code as its subcommand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ecot.options import DefaultsHelpFormatter, add_options, build, option
from ecot.sim import EXPERT_STYLES


# The recipe the demo and benchmarks/policy_quality.py train by default: what a tiny policy learns on
# 2 CPU cores in minutes (docs/quality.md has the measurements behind each choice).
DEMO_RECIPE: dict = {
    "task": "push",  # one task family: push one object to a side of the table (left, right or back)
    "num_objects": 2,  # the task's object and one distractor
    "start": "table",  # planar pushing: the gripper starts at pushing height (docs/quality.md, round seven)
    "camera": "main",  # over the robot's shoulder; "top" did not help at this budget (round seven)
    "expert_style": "sign",  # every step 2 cm or none per axis: choosing the action is choosing a direction
    # Recovery data: half the executed steps are nudged by 1 cm while the expert's own action is recorded,
    # so the demonstrations show the way back to the path; MOVE describes the commanded action, not the nudge.
    "action_noise": 0.01,
    "action_noise_fraction": 0.5,
    "moves_from": "actions",
    "episodes": 200,  # demonstrations, each ending 3 steps past success
    "image_size": 112,
    "model": "tiny-siglip",
    "vision_pretrain_steps": 0,  # on: the tower first learns to see on the sim's ground truth (did not help: docs/quality.md)
    # The locator finds the objects and the gripper and is the language model's only view of the image;
    # the move head chooses MOVE from its findings (docs/quality.md, round fourteen).
    "locator": True,
    # The locator first trains alone for this many steps (batch 32; `ecot train --locator-pretrain-steps`):
    # 900 instead of 300 names the objects it writes into VISIBLE OBJECTS right far more often (wrong names
    # 11 % -> 2 %); the closed loop did not clearly gain (docs/quality.md, round fifteen).
    "locator_pretrain_steps": 900,
    "action_loss_weight": 10.0,
    "train_steps": 600,
    "batch_size": 16,
    "lr": 1e-3,
    "rollouts": 10,
    "rollout_steps": 40,  # the sign expert's push demonstrations take 26 steps (median), 39 at most
}


@dataclass
class DemoConfig:
    """The demo's settings (also ``ecot demo``'s flags, see :mod:`ecot.options`; `(default X)` added in --help)."""

    out: str = option("runs/demo", "run directory")
    task: str = option(DEMO_RECIPE["task"], "task family of demonstrations and rollouts ('all': round robin)")
    num_objects: int = option(DEMO_RECIPE["num_objects"], "objects per scene")
    start: str = option(DEMO_RECIPE["start"], "where the gripper starts: home, or table (planar pushing at "
                        "table height, push tasks to the left, right or back)", choices=("home", "table"))
    camera: str = option(DEMO_RECIPE["camera"], "the camera: main (over the robot's shoulder) or top (straight down)",
                         choices=("main", "top"))
    expert_style: str = option(DEMO_RECIPE["expert_style"], "the scripted expert's motion", choices=EXPERT_STYLES)
    action_noise: float = option(DEMO_RECIPE["action_noise"], "recovery data: std (m) of the noise on executed steps "
                                 "(the expert's action is recorded; 0: none)")
    action_noise_fraction: float = option(DEMO_RECIPE["action_noise_fraction"], "share of the steps that get the noise")
    moves_from: str = option(DEMO_RECIPE["moves_from"], "what MOVE describes: the commanded actions or the executed "
                             "motion (states)", choices=("states", "actions"))
    episodes: int = option(DEMO_RECIPE["episodes"], "demonstrations to collect")
    image_size: int = option(DEMO_RECIPE["image_size"], "camera resolution")  # the tiny preset's input size
    locator: bool = option(DEMO_RECIPE["locator"], "train without the locator and the move head: the language model "
                           "sees the image's patches and writes every field itself")  # --no-locator
    locator_pretrain_steps: int = option(DEMO_RECIPE["locator_pretrain_steps"], "with the locator: its steps of "
                                         "training alone before the language model's (batch 32)")
    vision_pretrain_steps: int = option(DEMO_RECIPE["vision_pretrain_steps"],
                                        "vision pre-training steps on the sim's ground truth (0: none)")
    train_steps: int = option(DEMO_RECIPE["train_steps"], "optimizer steps")
    batch_size: int = option(DEMO_RECIPE["batch_size"], "training batch size")
    lr: float = option(DEMO_RECIPE["lr"], "learning rate (cosine schedule)")
    model: str = option(DEMO_RECIPE["model"], "model preset")
    rollouts: int = option(DEMO_RECIPE["rollouts"], "closed-loop episodes")  # with the trained policy
    rollout_steps: int = option(DEMO_RECIPE["rollout_steps"], "control steps per rollout")
    seed: int = 0
    workers: int = option(2, "simulation processes")  # for collection, annotation and rollouts

    def __post_init__(self) -> None:
        from ecot.errors import UsageError

        if self.vision_pretrain_steps < 0:
            raise UsageError(f"--vision-pretrain-steps must be >= 0, got {self.vision_pretrain_steps}")
        for name in ("episodes", "train_steps", "batch_size", "rollout_steps", "workers"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.rollouts < 0:
            raise UsageError(f"--rollouts must be >= 0, got {self.rollouts}")
        if self.image_size < 16:
            raise UsageError(f"--image-size must be at least 16 pixels, got {self.image_size}")
        from ecot.sim.tasks import FAMILIES, check_num_objects, check_start_option

        if self.task != "all" and self.task not in FAMILIES:
            raise UsageError(f"--task must be 'all' or one of {', '.join(FAMILIES)}, got {self.task!r}")
        check_num_objects(self.task, self.num_objects)
        check_start_option(self.task, self.start)
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo: sim demonstrations -> reasoning annotation -> tiny ECoT policy -> closed-loop rollouts",
        description=__doc__,
        formatter_class=DefaultsHelpFormatter,
    )
    add_options(p, DemoConfig)
    p.set_defaults(func=_handler)


def _handler(args: argparse.Namespace) -> int:
    summary = run_demo(build(DemoConfig, args))
    print(json.dumps(summary, indent=2))
    return 0


def _say(message: str) -> None:
    print(f"\n== {message}", file=sys.stderr, flush=True)


def run_demo(config: DemoConfig) -> dict:
    from ecot.errors import EcotError
    from ecot.runlock import locked_dir
    from ecot.train.recipes import check_model_source

    check_model_source(config.model)  # before collecting anything: `ecot demo --model nope` fails at once
    with locked_dir(config.out, "ecot demo"):
        return _run_demo(config)


def _run_demo(config: DemoConfig) -> dict:
    from ecot.annotate.pipeline import AnnotateConfig
    from ecot.annotate.runner import RunConfig as AnnotateRunConfig
    from ecot.annotate.runner import run_annotation
    from ecot.sim.collect import CollectConfig, collect

    out = Path(config.out)
    (out / "demo_config.json").write_text(json.dumps(asdict(config), indent=2))
    dataset, annotations, run, eval_dir = out / "dataset", out / "annotations", out / "train", out / "eval"
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    _say(f"1/4 collecting {config.episodes} scripted demonstrations ({config.task}, {config.num_objects} objects) -> {dataset}")
    collected = collect(dataset, CollectConfig(task=config.task, split="seen", episodes=config.episodes, seed=config.seed,
                                               image_size=config.image_size, workers=config.workers,
                                               num_objects=config.num_objects, stop_at_success=True,
                                               expert_style=config.expert_style, start=config.start,
                                               camera=config.camera, action_noise=config.action_noise,
                                               action_noise_fraction=config.action_noise_fraction))
    print(f"{collected['episodes']} episodes in {collected['out']} ({collected['new_episodes']} new, "
          f"{collected['new_successes']} of them successful)", file=sys.stderr)
    timings["collect_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(f"2/4 annotating embodied reasoning (template backend, offline) -> {annotations}")
    annotated = run_annotation(AnnotateRunConfig(dataset_dir=str(dataset), out_dir=str(annotations), workers=config.workers,
                                                 annotate=AnnotateConfig(moves_from=config.moves_from)))
    if annotated.features_path is None:
        raise EcotError(f"annotation did not finish ({annotated.done}/{annotated.total} episodes); see {annotations}/work/failed")
    print(f"annotated {annotated.annotated_now} episode(s) now; {annotated.done}/{annotated.total} done", file=sys.stderr)
    timings["annotate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(f"3/4 training a {config.model} ECoT policy for {config.train_steps} steps on {_device()} -> {run}")
    metrics = train_policy(dataset, annotations, run, recipe="ecot", model=config.model, steps=config.train_steps,
                           batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                           vision_pretrain_steps=config.vision_pretrain_steps, locator=config.locator,
                           action_loss_weight=DEMO_RECIPE["action_loss_weight"] if config.locator else 1.0,
                           locator_pretrain_steps=config.locator_pretrain_steps)
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(f"4/4 evaluating the policy closed-loop in {config.rollouts} new scene(s) -> {eval_dir}")
    results, rollouts = evaluate_policy(run / "final", eval_dir, config) if config.rollouts else (None, [])
    timings["rollouts_s"] = time.perf_counter() - t0

    summary = {
        "run_dir": str(out),
        "dataset": str(dataset),
        "features": str(annotations / "embodied_features.json"),
        "checkpoint": str(run / "final"),
        "held_out_metrics": metrics,
        "eval_dir": str(eval_dir),
        "episodes": results["episodes"] if results else 0,
        "success_rate": results["success_rate"] if results else None,
        "faithfulness": _faithfulness_brief(results),
        "rollouts": rollouts,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def train_policy(dataset: Path, annotations: Path, run: Path, recipe: str = "ecot", model: str = "tiny-siglip",
                 steps: int = 600, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                 vision_pretrain_steps: int = 0, locator: bool = False, action_loss_weight: float = 1.0,
                 locator_pretrain_steps: int = 300) -> dict:
    """Stage 3 through the training API (what `ecot train` runs for the same flags); resumable from the
    run's checkpoints. Returns the last held-out metrics, with the majority-token and zero-motion
    predictors' figures on the same steps.

    ``locator``: `ecot train --locator --locator-relations --locator-only --numeric-embeddings
    --tokenizer-numbers whole --locator-pretrain-steps N`, and `--move-head` for recipes that write reasoning."""
    from ecot.train.recipes import RunConfig, build_run
    from ecot.train.trainer import TrainConfig, Trainer

    if not (run / "final").exists():
        train_config = TrainConfig(out_dir=str(run), max_steps=steps, batch_size=batch_size, lr=lr, schedule="cosine",
                                   warmup_steps=20, log_every=50, seed=seed, save_every=100, keep_last=1,
                                   action_loss_weight=action_loss_weight)
        located = dict(locator=True, locator_relations=True, locator_only=True, numeric_embeddings=True,
                       tokenizer_numbers="whole", move_head=recipe != "no-reasoning",
                       locator_pretrain_steps=locator_pretrain_steps) if locator else {}
        run_config = RunConfig(data=str(dataset), out=str(run), recipe=recipe, model=model,
                               features=str(annotations), train=train_config,
                               vision_pretrain_steps=vision_pretrain_steps, **located)
        model_, processor, train_data, eval_data, action_stats = build_run(run_config)
        Trainer(run_config.train, model_, processor, train_data, eval_data=eval_data, action_stats=action_stats).fit()
    return _final_metrics(run)


def evaluate_policy(checkpoint: Path, eval_dir: Path, config: DemoConfig) -> tuple[dict, list[dict]]:
    """Stage 4 through ``ecot.eval``: seeded closed-loop episodes, each step's reasoning printed, GIFs."""
    from ecot.eval.sim import EvalConfig, evaluate

    def show(record: dict) -> None:
        print(f"\n[rollout seed {record['seed']}] instruction: {record['instruction']}", file=sys.stderr)
        for step in record["per_step"]:
            r = step["reasoning"] or {}
            print(f"  step {step['t']:2d} | SUBTASK: {r.get('subtask', '')} | MOVE: {r.get('move', '')} | "
                  f"action {[round(a, 3) for a in step['action']]}", file=sys.stderr)
        print(f"  -> {'success' if record['success'] else 'no success'} after {record['steps']} steps"
              + (f"; frames in {eval_dir / record['gif']}" if record.get("gif") else ""), file=sys.stderr)

    eval_config = EvalConfig(policy=str(checkpoint), out=str(eval_dir), task=config.task, episodes=config.rollouts,
                             seed=config.seed, max_steps=config.rollout_steps, image_size=config.image_size,
                             num_objects=config.num_objects, start=config.start, camera=config.camera,
                             gifs=config.rollouts, device=_device(),
                             workers=min(config.workers, max(config.rollouts, 1)))
    results = evaluate(eval_config, on_episode=show)
    rollouts = []
    with open(eval_dir / "episodes.jsonl", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            rollouts.append({"seed": record["seed"], "task": record["task"], "instruction": record["instruction"],
                             "success": record["success"], "steps": record["steps"],
                             "gif": str(eval_dir / record["gif"]) if record.get("gif") else None})
    return results, rollouts


def _faithfulness_brief(results: dict | None) -> dict | None:
    f = (results or {}).get("faithfulness")
    if not f:
        return None
    return {k: f[k] for k in ("box_iou", "box_iou_ok", "box_recall", "gripper_err_px", "move_agree", "subtask_correct", "plan_coverage")}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _final_metrics(run: Path) -> dict:
    """The last held-out evaluation the trainer logged (metrics.jsonl)."""
    path = run / "metrics.jsonl"
    last: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if any(str(k).startswith("eval") for k in record):
                last = record
    return {k: v for k, v in last.items() if str(k).startswith("eval") or k == "step"}
