"""benchmarks/grounding_probe.py scores written boxes by name on real sim scenes."""

import numpy as np
import pytest

from benchmarks.grounding_probe import make_scenes, score, trivial_predictors


@pytest.fixture(scope="module")
def scenes():
    return make_scenes("push", 2, 64, 6, seed=500)


def test_the_truth_scores_perfectly_and_swapped_names_are_caught(scenes):
    truth = score(lambda sc: ([(n, b) for n, b, v in zip(sc.names, sc.boxes, sc.visible) if v], sc.gripper), scenes)
    assert truth["box_iou"] == 1.0 and truth["centre_within_5px"] == 1.0 and truth["named_fraction"] == 1.0
    assert truth["box_of_another_object"] == 0.0 and truth["gripper_err_median_px"] == 0.0
    assert truth["objects"] == sum(int(sc.visible.sum()) for sc in scenes)

    # The right boxes under each other's names: what the trained policies do at the first frame.
    def swapped(sc):
        names = list(reversed(sc.names))
        return [(n, b) for n, b in zip(names, sc.boxes)], sc.gripper + 3.0

    s = score(swapped, [sc for sc in scenes if sc.visible.all()])
    assert s["box_of_another_object"] > 0.8 and s["box_iou"] < 0.3
    assert s["gripper_err_median_px"] == pytest.approx(np.hypot(3, 3), abs=0.05)  # rounded to 0.1 px

    missing = score(lambda sc: ([("the invisible unicorn", [0, 0, 5, 5])], None), scenes)
    assert missing["named_fraction"] == 0.0 and missing["box_iou"] == 0.0 and missing["gripper_err_median_px"] is None


def test_trivial_predictors_come_from_other_scenes_and_stay_far_below_the_truth(scenes):
    reference = make_scenes("push", 2, 64, 20, seed=900, render=False)
    trivial = trivial_predictors(reference)
    for name, predict in trivial.items():
        s = score(predict, scenes)
        assert s["named_fraction"] == 1.0 and s["box_iou"] < 0.5, (name, s)
    # The box on the gripper is centred exactly on the true gripper point.
    objects, point = trivial["box_at_gripper"](scenes[0])
    np.testing.assert_allclose((np.asarray(objects[0][1][:2]) + objects[0][1][2:]) / 2, scenes[0].gripper)
