"""Validation report of a features file: coverage and consistency.

Coverage: steps with boxes, with a gripper point, with all six reasoning fields, and with a
reasoning string from the foundation reader (``iter_reasoning_strings``).
Consistency: the move primitive against the executed actions (the sign of the summed action over
the primitive's window agrees with each non-zero translation word; "close/open gripper" matches
the gripper action), boxes inside the image, and the gripper point against ground truth where
the dataset has it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ecot.data.features import REASONING_KEYS, iter_feature_episodes, iter_reasoning_strings

WINDOW = 3  # a primitive at t covers the actions t .. t+2 (states t .. t+3)


def primitive_action_agreement(vectors: np.ndarray, actions: np.ndarray) -> tuple[int, int]:
    """(agreeing, checked) over non-zero translation and gripper words of each step."""
    agree = checked = 0
    t = len(actions)
    for i in range(max(t - 1, 0)):
        window = actions[i : min(i + WINDOW, t - 1)]
        total = window[:, :3].sum(axis=0)
        for axis in range(3):
            if vectors[i][axis] != 0:
                checked += 1
                agree += int(np.sign(total[axis]) == vectors[i][axis])
        if vectors[i][6] != 0:
            checked += 1
            last = window[-1, 6]  # the gripper command at the window's end: open (1) or closed (0)
            agree += int(last > 0.5 if vectors[i][6] > 0 else last < 0.5)
    return agree, checked


def episode_checks(episode, entry: dict) -> dict[str, Any]:
    """The checks that need the episode itself (actions, ground truth), computed while it is in
    memory so that the report does not have to read the dataset again."""
    feats = entry["features"]
    vectors = np.asarray(feats["move_vector"], dtype=np.int64)
    agree, checked = primitive_action_agreement(vectors, episode.actions)
    out: dict[str, Any] = {"agree": agree, "checked": checked}
    gt = episode.ground_truth
    points = feats["gripper_position"]
    if gt is not None and len(points) == len(episode):
        vis = gt.gripper_visible
        err = np.linalg.norm(np.asarray(points, dtype=np.float64)[vis] - gt.gripper_points[vis], axis=1)
        out["gripper_errors_px"] = [round(float(e), 3) for e in err]
    return out


def validation_report(path, checks: Sequence[dict] | None = None) -> dict[str, Any]:
    """Report over every episode of the features file, plus the per-episode ``checks``
    (from :func:`episode_checks`) when given."""
    totals = dict(episodes=0, steps=0, with_boxes=0, with_gripper=0, with_reasoning=0)
    boxes_total = boxes_inside = 0
    agree = checked = 0
    gt_errors: list[float] = []
    problems: list[str] = []
    for file_path, episode_id, entry in iter_feature_episodes(path):
        feats = entry.get("features") or {}
        reasoning = entry.get("reasoning") or {}
        steps = len(feats.get("move_primitive") or [])
        w, h = (entry.get("metadata") or {}).get("image_size", [None, None])
        totals["episodes"] += 1
        totals["steps"] += steps
        points = feats.get("gripper_position") or []
        bboxes = feats.get("bboxes") or []
        for t in range(steps):
            if t < len(bboxes) and bboxes[t]:
                totals["with_boxes"] += 1
            if t < len(points) and points[t] is not None:
                totals["with_gripper"] += 1
            fields = reasoning.get(str(t)) or {}
            if all(isinstance(fields.get(k), str) and fields.get(k) for k in REASONING_KEYS):
                totals["with_reasoning"] += 1
            elif len(problems) < 20:
                problems.append(f"{file_path}/{episode_id} step {t}: reasoning incomplete")
        for step_boxes in bboxes:
            for _, _, (x0, y0, x1, y1) in step_boxes:
                boxes_total += 1
                if w is None or (0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1):
                    boxes_inside += 1
    for c in checks or ():
        agree, checked = agree + c.get("agree", 0), checked + c.get("checked", 0)
        gt_errors.extend(c.get("gripper_errors_px", []))
    strings = sum(1 for _ in iter_reasoning_strings(path))
    steps = max(totals["steps"], 1)
    report: dict[str, Any] = {
        "episodes": totals["episodes"],
        "steps": totals["steps"],
        "coverage": {
            "boxes": totals["with_boxes"] / steps,
            "gripper": totals["with_gripper"] / steps,
            "reasoning": totals["with_reasoning"] / steps,
            "reasoning_strings": strings / steps,
        },
        "consistency": {
            "boxes_inside_image": boxes_inside / boxes_total if boxes_total else None,
            "primitive_action_agreement": agree / checked if checked else None,
            "primitive_words_checked": checked,
            "gripper_error_px_mean": float(np.mean(gt_errors)) if gt_errors else None,
            "gripper_error_px_median": float(np.median(gt_errors)) if gt_errors else None,
        },
        "problems": problems,
    }
    report["complete"] = bool(
        totals["steps"] > 0 and totals["with_reasoning"] == totals["steps"] and strings == totals["steps"]
        and totals["with_gripper"] == totals["steps"]
    )
    return report
