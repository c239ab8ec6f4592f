"""Grounding at the first frame: does a policy's VISIBLE OBJECTS / GRIPPER POSITION match the scene?

Figure, per checkpoint: on the first frame of N fresh sim scenes (the gripper at home, as
``ecot eval`` starts), the policy writes its reasoning (full mode, grammar on) and each visible
object is scored by *name*: IoU with its true box (0 when the name is missing), the box-centre
error in pixels (median, and the share within 5 px) and how often the written box is the other
object's (the best IoU with any object is above the IoU with the named one). The gripper point
is scored by its pixel error. Closed-loop control needs the centres within a few pixels.

Baselines, same scenes: the trivial predictors a learned box must beat -- the mean object box and
the mean gripper point of 200 *other* scenes, and a mean-size box centred on the true gripper
point (what a policy that only tracks the gripper would write). ``ratio`` is each checkpoint's
named IoU over the best trivial IoU.

Usage: python benchmarks/grounding_probe.py --checkpoint NAME=DIR [--checkpoint ...] [--scenes 30]
       [--task push] [--num-objects 2] [--image-size 112]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_result  # noqa: E402

BASE_SEED = 10_000  # probe scenes; the trivial predictors use 200 scenes from BASE_SEED + 100_000 on
NEAR_PX = 5.0


class Scene(NamedTuple):
    image: np.ndarray | None  # None where made without rendering
    instruction: str
    names: list
    boxes: np.ndarray  # [K, 4] true boxes
    visible: np.ndarray  # [K] bool
    gripper: np.ndarray  # [2] true gripper point


def _centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def make_scenes(task: str, num_objects: int, image_size: int, n: int, seed: int, render: bool = True) -> list[Scene]:
    """The first frames of ``n`` scenes (seeds ``seed ..``), gripper at home; ``render=False``: truth only."""
    from ecot.sim.env import SimConfig, TabletopEnv

    out = []
    with TabletopEnv(SimConfig(image_size=image_size, num_objects=num_objects, render=render)) as env:
        for s in range(n):
            obs, _ = env.reset(seed=seed + s, task=task)
            gt = env.ground_truth()
            out.append(Scene(obs.get("image"), env.task.instruction, list(env.task.object_names),
                             np.asarray(gt["object_boxes"]), np.asarray(gt["object_visible"]),
                             np.asarray(gt["gripper_point"])))
    return out


def score(predict: Callable[[Scene], tuple], scenes: list[Scene]) -> dict:
    """Score ``predict(scene) -> (objects [(name, box)], gripper point or None)`` on the scenes."""
    from ecot.eval.faithfulness import box_iou, normalize

    ious, centre_errs, swapped, grip_errs, named = [], [], [], [], []
    for scene in scenes:
        objects, point = predict(scene)
        written = {}
        for name, box in objects:
            written.setdefault(normalize(name), box)  # a repeated name: its first box counts
        truth = {normalize(n): b for n, b, v in zip(scene.names, scene.boxes, scene.visible) if v}
        for name, true_box in truth.items():
            box = written.get(name)
            named.append(box is not None)
            if box is None:
                ious.append(0.0)
                continue
            iou = box_iou(box, true_box)
            ious.append(iou)
            centre_errs.append(float(np.linalg.norm(_centre(box) - _centre(true_box))))
            others = [box_iou(box, b) for n, b in truth.items() if n != name]
            swapped.append(bool(others) and max(others) > iou)
        if point is not None:
            grip_errs.append(float(np.linalg.norm(np.asarray(point, float) - scene.gripper)))
    errs = np.array(centre_errs)
    return {
        "objects": len(ious),
        "named_fraction": round(float(np.mean(named)), 3) if named else None,
        "box_iou": round(float(np.mean(ious)), 3) if ious else None,
        "centre_err_median_px": round(float(np.median(errs)), 1) if len(errs) else None,
        "centre_within_5px": round(float(np.mean(errs < NEAR_PX)), 3) if len(errs) else None,
        "box_of_another_object": round(float(np.mean(swapped)), 3) if swapped else None,
        "gripper_err_median_px": round(float(np.median(grip_errs)), 1) if grip_errs else None,
    }


def trivial_predictors(reference: list[Scene]) -> dict[str, Callable[[Scene], tuple]]:
    """From other scenes: the mean object box with the mean gripper point, and a mean-size box on the true gripper point."""
    mean_box = np.mean([b for sc in reference for b, v in zip(sc.boxes, sc.visible) if v], axis=0)
    mean_point = np.mean([sc.gripper for sc in reference], axis=0)
    half = (mean_box[2:] - mean_box[:2]) / 2.0
    return {
        "mean_box": lambda sc: ([(n, mean_box) for n in sc.names], mean_point),
        "box_at_gripper": lambda sc: ([(n, np.concatenate([sc.gripper - half, sc.gripper + half])) for n in sc.names],
                                      sc.gripper),
    }


def probe(checkpoints: dict[str, str], task: str, num_objects: int, image_size: int, n: int) -> dict:
    from ecot.policy import ECoTPolicy

    scenes = make_scenes(task, num_objects, image_size, n, BASE_SEED)
    reference = make_scenes(task, num_objects, image_size, 200, BASE_SEED + 100_000, render=False)  # boxes only
    baseline = {name: score(predict, scenes) for name, predict in trivial_predictors(reference).items()}
    value = {}
    for name, path in checkpoints.items():
        policy = ECoTPolicy.from_pretrained(path, mode="full")

        def predict(scene: Scene, policy=policy) -> tuple:
            policy.reset()
            r = policy.step(scene.image, scene.instruction).reasoning
            return list(r.visible_objects), (r.gripper_positions[0] if r.gripper_positions else None)

        value[name] = score(predict, scenes)
    best = max(b["box_iou"] for b in baseline.values())
    ratio = {name: round(v["box_iou"] / best, 2) if best else None for name, v in value.items()}
    return {"value": value, "baseline": baseline, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="NAME=DIR or DIR (repeatable)")
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--task", default="push")
    parser.add_argument("--num-objects", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--out-name", default="grounding_probe", help="result file name (without .json)")
    args = parser.parse_args()
    checkpoints = {}
    for item in args.checkpoint:
        name, _, path = item.rpartition("=")
        if not Path(path).is_dir():
            parser.error(f"--checkpoint {item}: {path} is not a checkpoint directory")
        checkpoints[name or Path(path).name] = path
    import torch

    torch.set_num_threads(1)
    result = probe(checkpoints, args.task, args.num_objects, args.image_size, args.scenes)
    write_result(args.out_name, {
        "what": "first-frame grounding of fresh sim scenes (gripper at home): the policy's boxes and gripper point "
                "vs the truth, beside trivial predictors",
        "scenes": args.scenes, "task": args.task, "num_objects": args.num_objects, "image_size": args.image_size,
        "checkpoints": checkpoints, **result,
    })


if __name__ == "__main__":
    main()
