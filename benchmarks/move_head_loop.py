"""The move head as the controller: do its choices fail, or its inputs (the locator's findings)?

A checkpoint trained with the locator and the move head (the demo's recipe) chooses MOVE from the
locator's findings and binds its action to that MOVE. Here each MOVE is executed directly as the sign
expert's step (2 cm along each axis it names, the gripper closed), without the language model: the
policy's own closed loop less the action's magnitude, at a fraction of its cost (about a minute for 60
episodes on 2 CPU cores). Variants, on the same episodes (``ecot eval``'s seeds):

* ``locator``: the head reads the locator's findings, as in the policy (the instruction's object tracked
  from step to step, as ``PolicyConfig.track_object``; ``--no-track``: chosen anew at every step);
* ``truth``: the same head reads the scene's true boxes, object names and gripper point;
* ``expert``: the sign expert itself (the upper bound);
* ``still``: no motion (the trivial floor).

For ``locator`` it also reports the share of steps whose object taken as the instruction's is another
one (its box's centre nearer another object's true centre; docs/quality.md, round sixteen).

Usage: python benchmarks/move_head_loop.py --checkpoint DIR [--episodes 30] [--splits seen,heldout]
       [--variants locator,truth,expert,still] [--max-steps 40] [--image-size 112] [--no-track]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import closed_loop, comma_choices, write_result  # noqa: E402
from ecot.eval.policies import EvalPolicy, StepOutput, hold_action  # noqa: E402
from ecot.sim.expert import ExpertConfig  # noqa: E402

VARIANTS = ("locator", "truth", "expert", "still")
STEP = ExpertConfig().sign_step  # the sign expert's step (m), what the demo's policies learn as each axis' action


def move_step(move: str) -> np.ndarray:
    """The action a MOVE names as the sign expert's step: 2 cm along each named axis, gripper closed."""
    from ecot.policy.move_action import move_signs

    signs = move_signs(move) or (0, 0, 0)
    return np.array([STEP * signs[0], STEP * signs[1], STEP * signs[2], 0, 0, 0, 0.0], dtype=np.float32)


def true_findings(env: Any, head: Any, image_size: int) -> tuple:
    """The head's inputs from the scene's truth: (boxes, scores, word probabilities, gripper point)."""
    import torch

    gt = env.ground_truth()
    words = head.spec.object_words
    scale = head.spec.frame_size / image_size
    objects = env.task.objects
    probs = torch.zeros(1, len(objects), len(words))
    for k, o in enumerate(objects):
        for w in (o.color, o.kind):
            if w in words:
                probs[0, k, words.index(w)] = 1.0
    boxes = torch.tensor(np.asarray(gt["object_boxes"]) * scale, dtype=torch.float32)[None]
    scores = torch.tensor(np.asarray(gt["object_visible"]), dtype=torch.float32)[None]
    gripper = torch.tensor(np.asarray(gt["gripper_point"]) * scale, dtype=torch.float32)[None]
    return boxes, scores, probs, gripper


class HeadPolicy(EvalPolicy):
    """A checkpoint's move head executing its MOVE as the sign expert's step (or the expert, or no motion)."""

    def __init__(self, checkpoint: str | None, variant: str, image_size: int, track: bool = True):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        self.variant, self.image_size, self.track = variant, image_size, track
        self.tracked = None  # the instruction object's box centre at the previous step
        self.name = variant
        self.wrong_steps = self.named_steps = 0
        self.policy = None
        if variant in ("locator", "truth"):
            from ecot.policy.policy import ECoTPolicy

            self.policy = ECoTPolicy.from_pretrained(checkpoint, device="cpu")
            if getattr(self.policy.model, "move_head", None) is None:
                raise ValueError(f"{checkpoint} has no move head: train it with `ecot train --locator --move-head`")

    def reset(self, env: Any, seed: int) -> None:
        super().reset(env, seed)
        self.env = env
        self.tracked = None
        if self.variant == "expert":
            from ecot.sim.expert import ExpertConfig, ScriptedExpert

            self.expert = ScriptedExpert(env, np.random.default_rng([seed, 7]), ExpertConfig(style="sign"))

    def act(self, obs: dict, instruction: str) -> StepOutput:
        import torch

        from ecot.model.locator import box_centres, instruction_object

        t0 = time.perf_counter()
        if self.variant == "still":
            return StepOutput(action=hold_action(obs))
        if self.variant == "expert":
            action = self.expert.act()
            self.done = self.expert.done
            return StepOutput(action=action, latency_ms=(time.perf_counter() - t0) * 1000)
        model, head = self.policy.model, self.policy.model.move_head
        named = None
        if self.variant == "truth":
            boxes, scores, probs, gripper = true_findings(self.env, head, self.image_size)
        else:
            pixels = self.policy.processor.image_transform(obs["image"])[None]
            with torch.no_grad():
                f = model.locator.find(model.locator(pixels.to(dtype=model.projector.fc1.weight.dtype)))
            boxes, scores, probs, gripper = f.boxes.float(), f.scores.float(), f.word_probs.float(), f.gripper.float()
            named = instruction_object(probs[0], scores[0], head.spec.object_words, instruction, boxes=boxes[0],
                                       previous=self.tracked if self.track else None)
            if named is not None:
                self.tracked = box_centres(boxes[0, named]).tolist()
            self._count_wrong_object(boxes[0], named)
        with torch.no_grad():
            x = head.features(boxes, scores, probs, gripper, [instruction], None if named is None else [named])
            move = head.spec.moves[int(head(x).argmax(-1))]
        return StepOutput(action=move_step(move), text=move, latency_ms=(time.perf_counter() - t0) * 1000)

    def _count_wrong_object(self, boxes: Any, named: int | None) -> None:
        if named is None:
            return
        scale = self.image_size / self.policy.model.move_head.spec.frame_size
        truth = np.asarray(self.env.ground_truth()["object_boxes"], dtype=np.float64)
        centres = np.stack([(truth[:, 0] + truth[:, 2]) / 2, (truth[:, 1] + truth[:, 3]) / 2], axis=1)
        b = boxes[named].numpy().astype(np.float64) * scale
        found = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        self.named_steps += 1
        self.wrong_steps += int(np.argmin(np.linalg.norm(centres - found, axis=1)) != self.env.task.main)


def run(checkpoint: str | None, variant: str, split: str, episodes: int, seed: int = 0, max_steps: int = 40,
        image_size: int = 112, num_objects: int = 2, track: bool = True) -> dict:
    """One variant's closed loop on ``ecot eval``'s planar push episodes (start: table)."""
    policy = HeadPolicy(checkpoint, variant, image_size, track)
    result = closed_loop(policy, variant, task="push", split=split, episodes=episodes, seed=seed, max_steps=max_steps,
                         num_objects=num_objects, image_size=image_size, start="table")
    if variant == "locator":
        result["wrong_object_steps"] = round(policy.wrong_steps / max(policy.named_steps, 1), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint with a locator and a move head")
    parser.add_argument("--episodes", type=int, default=30, help="episodes per split and variant")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the episodes (ecot eval's --seed)")
    parser.add_argument("--splits", default="seen,heldout")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=112, help="the checkpoint's training resolution")
    parser.add_argument("--num-objects", type=int, default=2)
    parser.add_argument("--out-name", default="move_head_loop", help="result file name (without .json)")
    parser.add_argument("--no-track", action="store_true",
                        help="locator variant: choose the instruction's object anew at every step (no tracking)")
    args = parser.parse_args()
    splits = comma_choices(parser, "--splits", args.splits, ("seen", "heldout"))
    variants = comma_choices(parser, "--variants", args.variants, VARIANTS)
    if not (Path(args.checkpoint) / "config.json").is_file():
        parser.error(f"--checkpoint: {args.checkpoint} is not a checkpoint directory (no config.json)")
    if args.episodes < 1 or args.max_steps < 1:
        parser.error("--episodes and --max-steps must be at least 1")
    import torch

    torch.set_num_threads(2)
    value = {split: {v: run(args.checkpoint, v, split, args.episodes, args.seed, args.max_steps, args.image_size,
                            args.num_objects, not args.no_track) for v in variants} for split in splits}
    ratio = {split: {f"{v}_vs_expert": round(value[split][v]["success_rate"] / value[split]["expert"]["success_rate"], 3)
                     for v in ("locator", "truth") if v in value[split] and value[split].get("expert", {}).get("success_rate")}
             for split in splits}
    write_result(args.out_name, {
        "what": "planar push, the move head's MOVE executed as the sign expert's 2-cm step (no language model): "
                "reading the locator's findings vs the scene's truth, beside the sign expert and no motion; same episodes",
        "checkpoint": args.checkpoint, "episodes": args.episodes, "seed": args.seed, "max_steps": args.max_steps,
        "image_size": args.image_size, "num_objects": args.num_objects, "track_object": not args.no_track,
        "value": value, "baseline": {split: value[split].get("expert", {}).get("success_rate") for split in splits},
        "ratio": ratio,
    })


if __name__ == "__main__":
    main()
