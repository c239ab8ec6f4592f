"""benchmarks/oracle_boxes.py writes the true boxes into a real policy's chain in a real sim scene."""

from __future__ import annotations

import numpy as np

from benchmarks.oracle_boxes import run, true_visible_objects


def test_true_boxes_are_the_annotators_and_the_edit_reaches_the_chain(trained_checkpoint):
    from ecot.sim.env import SimConfig, TabletopEnv

    with TabletopEnv(SimConfig(image_size=64, num_objects=2)) as env:
        obs, _ = env.reset(seed=3, task="push")
        objects = true_visible_objects(env, obs["image"].shape)
        gt = env.ground_truth()
    assert [name for name, _ in objects] == [n for n, v in zip(env.task.object_names, gt["object_visible"]) if v]
    assert all(0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64 for _, box in objects)
    for (_, box), true in zip(objects, np.asarray(gt["object_boxes"])[np.asarray(gt["object_visible"])]):
        assert np.abs(np.asarray(box) - np.clip(true, 0, 64)).max() <= 1

    kwargs = dict(task="push", split="seen", episodes=1, seed=0, max_steps=3, num_objects=2, image_size=64)
    with_boxes = run(str(trained_checkpoint), "boxes", **kwargs)
    own = run(str(trained_checkpoint), "none", **kwargs)
    # ecot eval's faithfulness scores the written boxes against the truth: the edit is what was written.
    assert with_boxes["box_iou"] > 0.9, with_boxes
    assert own["box_iou"] is None or own["box_iou"] < with_boxes["box_iou"]
    assert with_boxes["episodes"][0]["seed"] == own["episodes"][0]["seed"]  # the same scene for both
    assert with_boxes["success"] in ("0/1", "1/1") and 0 <= with_boxes["success_ci95"][0] <= with_boxes["success_ci95"][1] <= 1
