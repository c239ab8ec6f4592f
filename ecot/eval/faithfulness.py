"""Reasoning faithfulness: is what the policy *wrote* true of the scene it was in?

The sim knows the truth at every step, so each field of the policy's reasoning at step ``t`` is
scored against the ground truth of the executed episode (definitions in docs/eval.md):

* VISIBLE OBJECTS -- objects are matched by name (case, spacing and trailing punctuation ignored)
  to the objects visible at ``t``; ``box_iou`` is the mean IoU of the matched boxes,
  ``box_precision`` the share of written names that are visible objects (a repeated name counts
  once, its repeats as wrong), ``box_recall`` the share of visible objects that were named, and
  ``box_iou_ok`` the share of written objects whose box has IoU >= 0.5 with the visible object of
  that name (a name that is no visible object, or a repeat, counts as a miss).
* GRIPPER POSITION -- ``gripper_err_px``: pixel distance of the first (current) point to the
  projected fingertip centre at ``t``.
* MOVE -- ``move_agree``: the MOVE text equals the primitive computed from the motion that
  actually followed (``ecot.annotate.primitives`` over the executed states ``t .. t+3``).
* SUBTASK -- ``subtask_correct``: the SUBTASK text equals the plan step the episode was really
  in at ``t`` (the template annotator's stage from the executed gripper close/open events and,
  for pushes, from when the object started to move).
* PLAN -- ``plan_coverage``: share of the task's ground-truth plan steps that appear in the PLAN.

Each is computed per step, averaged per episode, pooled over all steps of a run, and related to
success (:func:`failure_analysis`).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from ecot.annotate.primitives import describe_all, move_vectors
from ecot.annotate.template import gripper_open_track, phases, plan_steps, push_start, task_spec
from ecot.data.episode import Episode, GroundTruth
from ecot.reasoning import Reasoning

BOX_IOU_OK = 0.5  # a written box "finds" its object at this IoU or more
STEP_METRICS = ("box_iou", "box_iou_ok", "box_precision", "box_recall", "gripper_err_px", "move_agree", "subtask_correct",
                "plan_coverage")


def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: the form names and phrases are compared in."""
    text = re.sub(r"\s+", " ", str(text).strip().lower())
    return text.strip(" .,;:!")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` boxes (pixels; a malformed box has IoU 0)."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    if ax1 <= ax0 or ay1 <= ay0 or bx1 <= bx0 or by1 <= by0:
        return 0.0
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def ground_truth_stages(episode: Episode) -> tuple[list[str], list[str]]:
    """(plan steps of the task, the plan step the episode was in at every step), as the template annotator defines them."""
    spec = task_spec(episode)
    steps = plan_steps(spec)
    grasp_family = spec.family.lower() not in ("push", "slide")
    stage = phases(gripper_open_track(episode), len(steps), grasp_family,
                   push_start(episode, spec) if not grasp_family else 0)
    return steps, [steps[int(k)] for k in stage]


def ground_truth_moves(states: np.ndarray) -> list[str]:
    """The primitive of the motion that followed each state (the annotator's labels)."""
    return describe_all(move_vectors(np.asarray(states, dtype=np.float32)))


def step_metrics(reasoning: Reasoning, gt: GroundTruth, t: int, move_gt: str, subtask_gt: str,
                 plan_gt: Sequence[str]) -> dict[str, Any]:
    """Every faithfulness metric of one step (None where a metric is undefined, e.g. no object visible)."""
    visible = {normalize(gt.object_names[k]): gt.object_boxes[t, k] for k in range(len(gt.object_names))
               if gt.object_visible[t, k]}
    written: dict[str, list] = {}
    wrong = 0
    for name, box in reasoning.visible_objects:
        key = normalize(name)
        if key in written or key not in visible:
            wrong += 1
        if key not in written:
            written[key] = box
    matched = [k for k in written if k in visible]
    ious = [box_iou(written[k], visible[k]) for k in matched]
    n_written = len(reasoning.visible_objects)
    out: dict[str, Any] = {
        "box_iou": float(np.mean(ious)) if ious else None,
        "box_iou_ok": sum(iou >= BOX_IOU_OK for iou in ious) / n_written if n_written else None,
        "box_precision": (n_written - wrong) / n_written if n_written else None,
        "box_recall": len(matched) / len(visible) if visible else None,
        "gripper_err_px": None,
        "move_gt": move_gt,
        "move_agree": normalize(reasoning.move) == normalize(move_gt),
        "subtask_gt": subtask_gt,
        "subtask_correct": normalize(reasoning.subtask) == normalize(subtask_gt),
        "plan_coverage": (sum(normalize(s) in normalize(reasoning.plan) for s in plan_gt) / len(plan_gt)
                          if plan_gt else None),
    }
    if reasoning.gripper_positions:
        x, y = reasoning.gripper_positions[0]
        gx, gy = gt.gripper_points[t]
        out["gripper_err_px"] = float(np.hypot(float(x) - gx, float(y) - gy))
    return out


def episode_metrics(episode: Episode, reasonings: Sequence[Reasoning | None]) -> list[dict | None]:
    """Per-step metrics of an executed episode.

    ``episode`` holds the T+1 observed images/states/ground truth of an episode of T actions
    (the last observation closes it); ``reasonings[t]`` is what the policy wrote before action t
    (None: it wrote nothing, e.g. the no-reasoning mode).
    """
    gt = episode.ground_truth
    if gt is None:
        raise ValueError("faithfulness needs an episode with ground truth (a sim episode)")
    if len(reasonings) > len(episode):
        raise ValueError(f"{len(reasonings)} reasonings for an episode of {len(episode)} observations")
    moves = ground_truth_moves(episode.states)
    plan, stages = ground_truth_stages(episode)
    return [None if r is None else step_metrics(r, gt, t, moves[t], stages[t], plan)
            for t, r in enumerate(reasonings)]


def _mean(values: Sequence[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(float(np.mean(vals)), 6) if vals else None


def summarize_steps(steps: Sequence[dict | None]) -> dict[str, Any] | None:
    """Means over the steps that have each metric (booleans as rates); None when no step has reasoning."""
    scored = [s for s in steps if s is not None]
    if not scored:
        return None
    out = {name: _mean([s[name] for s in scored]) for name in STEP_METRICS}
    out["steps"] = len(scored)
    return out


def failure_analysis(records: Sequence[dict]) -> dict[str, Any]:
    """Success rate of episodes grouped by whether a reasoning error happened, and which error came first in failures.

    ``records`` are episode records with ``success`` and ``per_step`` (each step's ``metrics``).
    """
    def rate(group: list[dict]) -> dict[str, Any]:
        return {"episodes": len(group),
                "success_rate": round(sum(bool(r["success"]) for r in group) / len(group), 6) if group else None}

    def metrics_of(r: dict) -> list[dict]:
        return [s["metrics"] for s in r.get("per_step", []) if s.get("metrics")]

    errors = {
        "subtask_wrong": lambda m: not m["subtask_correct"],
        "move_disagrees": lambda m: not m["move_agree"],
        "box_recall_below_0.5": lambda m: m["box_recall"] is not None and m["box_recall"] < 0.5,
        "gripper_err_over_10px": lambda m: m["gripper_err_px"] is None or m["gripper_err_px"] > 10,
    }
    scored = [r for r in records if metrics_of(r)]
    out: dict[str, Any] = {}
    for name, is_error in errors.items():
        with_error = [r for r in scored if any(is_error(m) for m in metrics_of(r))]
        without = [r for r in scored if not any(is_error(m) for m in metrics_of(r))]
        out[name] = {"at_some_step": rate(with_error), "never": rate(without)}
    failures = [r for r in scored if not r["success"]]
    first: dict[str, int] = {}
    for r in failures:
        for m in metrics_of(r):
            hit = [name for name, is_error in errors.items() if is_error(m)]
            if hit:
                first[hit[0]] = first.get(hit[0], 0) + 1
                break
        else:
            first["none"] = first.get("none", 0) + 1
    out["first_error_in_failed_episodes"] = dict(sorted(first.items()))
    return out


def aggregate(records: Sequence[dict]) -> dict[str, Any] | None:
    """Run-level faithfulness: metrics pooled over every scored step, plus the failure analysis."""
    steps = [s.get("metrics") for r in records for s in r.get("per_step", [])]
    pooled = summarize_steps(steps)
    if pooled is None:
        return None
    pooled["per_episode_mean"] = {name: _mean([(r.get("faithfulness") or {}).get(name) for r in records])
                                  for name in STEP_METRICS}
    pooled["failure_analysis"] = failure_analysis(records)
    return pooled
