"""Closed loop with the true object boxes: is perception what a policy's reasoning lacks?

At every control step the scene's true VISIBLE OBJECTS (names and pixel boxes, exactly as the
ground-truth annotator writes them) are written in place of the policy's own
(``ECoTPolicy.edit(visible_objects=...)``), and the policy writes the rest of its chain (SUBTASK
REASONING ... GRIPPER POSITION) and its action conditioned on them. The same episodes are run
without the edit. If success rises with the true boxes, localization is the bottleneck; if it
does not, the reasoning after the boxes (where to move) is.

Figures per variant: closed-loop success with a 95 % Wilson interval, and the faithfulness
measures of ``ecot eval`` (box IoU confirms the edit was applied; MOVE agreement is the share of
steps whose MOVE matches the primitive of the executed motion).

Variant ``move`` writes the scripted expert's MOVE instead (what the annotator would label its next
motion: the expert's next action held for the annotator's window), and ``boxes+move`` both;
``move+reasoning`` also makes MOVE REASONING say that move (the template's MOVE REASONING ends "so it
should <move> to ...", so a MOVE edited alone contradicts the chain before it). If
success rises with the true MOVE, the policy's action follows a right MOVE and what is missing is
deciding the MOVE; if not, the step from MOVE to action is also missing.

Usage: python benchmarks/oracle_boxes.py --checkpoint DIR [--episodes 10] [--seed 0] [--split seen]
       [--variants boxes,move,boxes+move,none] [--task push] [--num-objects 2] [--max-steps 30] [--start home|anywhere|table]
       [--camera main|top] [--expert-style smooth|axis|grid|sign] [--out-name oracle_boxes]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import closed_loop, comma_choices, write_result  # noqa: E402
from ecot.annotate.template import restate_move  # noqa: E402
from ecot.sim import EXPERT_STYLES  # noqa: E402
from ecot.sim.scene import CAMERAS, START_REGIONS  # noqa: E402

VARIANTS = ("boxes", "move", "boxes+move", "move+reasoning", "none")
DEFAULT_VARIANTS = ("boxes", "none")


def true_visible_objects(env: Any, image_shape: tuple[int, ...]) -> list[tuple[str, list[int]]]:
    """The scene's visible objects as the ground-truth annotator writes them: cleaned names, clipped boxes."""
    from ecot.annotate.boxes import clip_box
    from ecot.annotate.sanitize import clean_text

    gt = env.ground_truth()
    h, w = image_shape[:2]
    objects = []
    for k, name in enumerate(env.task.object_names):
        if not gt["object_visible"][k]:
            continue
        box = clip_box(np.asarray(gt["object_boxes"][k]), w, h)
        if box is not None:
            objects.append((clean_text(name), [int(v) for v in box]))
    return objects


def expert_move(state: np.ndarray, action: np.ndarray) -> str:
    """The annotator's MOVE label for ``action`` held over its window from ``state`` (gripper: the
    action's target opening, reached at once): ``ecot annotate --moves-from actions``' label."""
    from ecot.annotate.primitives import commanded_move_vectors, describe_all

    return describe_all(commanded_move_vectors(np.asarray(state)[None], np.asarray(action)[None]))[0]


def true_boxes_policy(checkpoint: str, variant: str, expert_style: str = "smooth"):
    from ecot.eval.policies import CheckpointPolicy

    class TrueBoxesPolicy(CheckpointPolicy):
        """A checkpoint policy whose VISIBLE OBJECTS (variant "boxes") and/or MOVE ("move") is the truth."""

        def reset(self, env: Any, seed: int) -> None:
            super().reset(env, seed)
            self.env = env
            if "move" in variant:
                from ecot.sim.expert import ExpertConfig, ScriptedExpert

                self.expert = ScriptedExpert(env, np.random.default_rng([seed, 7]), ExpertConfig(style=expert_style))

        def act(self, obs: dict, instruction: str):
            edits: dict[str, Any] = {}
            if "boxes" in variant:
                edits["visible_objects"] = true_visible_objects(self.env, obs["image"].shape)
            if "move" in variant:
                edits["move"] = expert_move(obs["state"], self.expert.act())
            if variant == "move+reasoning":
                # The template's MOVE REASONING names the move too ("so it should move left to ..."): a
                # first pass writes the policy's own, which then says the expert's move (a second pass).
                self.policy.edit(None)
                own = self.own_reasoning = super().act(obs, instruction).reasoning  # kept for inspection
                edits["move_reasoning"] = restate_move((own.move_reasoning if own else "") or "", edits["move"])
                if not edits["move_reasoning"]:
                    del edits["move_reasoning"]
            if edits:
                self.policy.edit(**edits)
            return super().act(obs, instruction)

    return TrueBoxesPolicy(checkpoint)


def run(checkpoint: str, variant: str, task: str, split: str, episodes: int, seed: int, max_steps: int,
        num_objects: int, image_size: int, start: str = "home", camera: str = "main", expert_style: str = "smooth") -> dict:
    return closed_loop(true_boxes_policy(checkpoint, variant, expert_style), variant, task=task, split=split, episodes=episodes,
                       seed=seed, max_steps=max_steps, num_objects=num_objects, image_size=image_size, start=start,
                       camera=camera)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="base seed of the episodes (ecot eval's --seed)")
    parser.add_argument("--split", default="seen", choices=("seen", "heldout"))
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated: boxes (true boxes), move (the expert's MOVE), boxes+move, "
                        "move+reasoning (the expert's MOVE, also in MOVE REASONING), none")
    parser.add_argument("--task", default="push")
    parser.add_argument("--num-objects", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--start", default="home", choices=START_REGIONS,
                        help="where the gripper starts: the checkpoint's training setting (planar-push data: table)")
    parser.add_argument("--camera", default="main", choices=CAMERAS)
    parser.add_argument("--expert-style", default="smooth", choices=EXPERT_STYLES,
                        help="the scripted expert whose MOVE is written in: the style the checkpoint's data was collected with")
    parser.add_argument("--out-name", default="oracle_boxes", help="result file name (without .json)")
    args = parser.parse_args()
    variants = comma_choices(parser, "--variants", args.variants, VARIANTS)
    if not Path(args.checkpoint).is_dir():
        parser.error(f"--checkpoint: {args.checkpoint} is not a checkpoint directory")
    import torch

    torch.set_num_threads(1)
    value = {v: run(args.checkpoint, v, args.task, args.split, args.episodes, args.seed, args.max_steps,
                    args.num_objects, args.image_size, args.start, args.camera, args.expert_style) for v in variants}
    write_result(args.out_name, {
        "what": "closed loop with the true VISIBLE OBJECTS (boxes), the scripted expert's MOVE (move) or both "
                "written into the policy's chain at every step, vs the policy's own (none); same episodes",
        "checkpoint": args.checkpoint, "task": args.task, "split": args.split, "episodes": args.episodes,
        "seed": args.seed, "max_steps": args.max_steps, "num_objects": args.num_objects,
        "start": args.start, "camera": args.camera, "expert_style": args.expert_style,
        "value": value,
        **({"baseline": {"none": value["none"]["success_rate"]}} if "none" in value else {}),
    })


if __name__ == "__main__":
    main()
