"""Faithfulness metrics on hand-made reasoning: each metric detects the error it is about."""

import numpy as np
import pytest

from ecot.data.episode import GroundTruth
from ecot.eval.faithfulness import box_iou, failure_analysis, normalize, step_metrics, summarize_steps
from ecot.eval.results import wilson_interval
from ecot.reasoning import Reasoning


def _gt():
    return GroundTruth(
        object_names=["the red block", "the blue bowl", "the green plate"],
        object_boxes=np.array([[[10, 10, 20, 20], [30, 30, 50, 50], [0, 0, 5, 5]]], np.float32),
        object_visible=np.array([[True, True, False]]),
        object_poses=np.zeros((1, 3, 7), np.float32),
        gripper_points=np.array([[40, 12]], np.float32),
        gripper_visible=np.array([True]),
        gripper_open=np.array([True]),
    )


PLAN = ["move to the red block", "grasp the red block"]


def test_a_faithful_step_scores_perfectly():
    r = Reasoning(plan="move to the red block, grasp the red block", subtask="move to the red block", move="move down",
                  visible_objects=[("The Red Block", [10, 10, 20, 20]), ("the blue bowl", [30, 30, 50, 50])],
                  gripper_positions=[(43, 16), (0, 0)])
    m = step_metrics(r, _gt(), 0, "move down", "move to the red block", PLAN)
    assert m["box_iou"] == 1.0 and m["box_precision"] == 1.0 and m["box_recall"] == 1.0 and m["box_iou_ok"] == 1.0
    assert m["gripper_err_px"] == pytest.approx(5.0)
    assert m["move_agree"] and m["subtask_correct"] and m["plan_coverage"] == 1.0


def test_each_error_is_caught():
    r = Reasoning(plan="grasp the red block", subtask="grasp the red block", move="move up",
                  visible_objects=[("the red block", [15, 10, 25, 20]), ("the red block", [10, 10, 20, 20]),
                                   ("the green plate", [0, 0, 5, 5]), ("a unicorn", [1, 1, 2, 2])])
    m = step_metrics(r, _gt(), 0, "move down", "move to the red block", PLAN)
    assert m["box_iou"] == pytest.approx(50 / 150)  # the first red block box counts: half overlap
    assert m["box_iou_ok"] == 0.0  # IoU 1/3 < 0.5, and the repeat, the plate and the unicorn are misses
    assert m["box_precision"] == pytest.approx(1 / 4)  # repeat, invisible plate, unknown name are wrong
    assert m["box_recall"] == pytest.approx(1 / 2)  # the bowl was not named
    assert m["gripper_err_px"] is None
    assert not m["move_agree"] and not m["subtask_correct"] and m["plan_coverage"] == 0.5
    half = step_metrics(Reasoning(visible_objects=[("the red block", [10, 10, 20, 20]), ("the blue bowl", [45, 30, 65, 50])]),
                        _gt(), 0, "move down", "move to the red block", PLAN)
    assert half["box_iou_ok"] == 0.5  # the bowl's box overlaps by a quarter (IoU 1/7)
    summary = summarize_steps([m, None])
    assert summary["steps"] == 1 and summary["move_agree"] == 0.0


def test_iou_and_normalization_and_intervals():
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    assert box_iou([0, 0, 10, 10], [10, 10, 0, 0]) == 0.0
    assert normalize("  Move   Down. ") == "move down"
    lo, hi = wilson_interval(19, 20)
    assert lo == pytest.approx(0.7639, abs=1e-4) and hi == pytest.approx(0.9911, abs=1e-4)  # textbook values
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_failure_analysis_relates_errors_to_success():
    good = {"subtask_correct": True, "move_agree": True, "box_recall": 1.0, "gripper_err_px": 1.0}
    bad = {**good, "subtask_correct": False}
    records = [{"success": True, "per_step": [{"metrics": good}]},
               {"success": False, "per_step": [{"metrics": good}, {"metrics": bad}]},
               {"success": False, "per_step": [{"metrics": good}]}]
    fa = failure_analysis(records)
    assert fa["subtask_wrong"]["at_some_step"] == {"episodes": 1, "success_rate": 0.0}
    assert fa["subtask_wrong"]["never"] == {"episodes": 2, "success_rate": 0.5}
    assert fa["first_error_in_failed_episodes"] == {"none": 1, "subtask_wrong": 1}
