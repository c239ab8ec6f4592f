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


def test_expert_move_is_the_annotators_label_of_the_experts_motion():
    from benchmarks.oracle_boxes import expert_move
    from ecot.eval.faithfulness import ground_truth_moves
    from ecot.sim.env import SimConfig, TabletopEnv
    from ecot.sim.expert import ExpertConfig, ScriptedExpert

    state = np.array([0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 1.0])
    assert expert_move(state, [0.04, 0, 0, 0, 0, 0, 1]) == "move forward"
    assert expert_move(state, [0, -0.04, 0, 0, 0, 0, 1]) == "move right"
    assert expert_move(state, [0, 0, 0, 0, 0, 0, 0]) == "close gripper"
    assert expert_move(state, [0, 0, 0, 0, 0, 0, 1]) == "stop"

    # Along a planar-push demonstration of the axis expert, the label from the expert's next action
    # mostly equals the annotator's label of the motion that followed (it differs where a phase ends
    # inside the annotator's 4-state window).
    with TabletopEnv(SimConfig(image_size=32, num_objects=2, start="table")) as env:
        obs, _ = env.reset(seed=4, task="push")
        expert = ScriptedExpert(env, 0, ExpertConfig(style="axis"))
        states, labels = [obs["state"]], []
        while not expert.done and len(states) < 30:
            action = expert.act()
            labels.append(expert_move(states[-1], action))
            obs, *_ = env.step(action)
            states.append(obs["state"])
    truth = ground_truth_moves(np.asarray(states))[: len(labels)]
    assert len(labels) >= 8
    assert np.mean([a == b for a, b in zip(labels, truth)]) >= 0.6, list(zip(labels, truth))


def test_move_reasoning_variant_makes_the_chain_say_the_experts_move_twice(trained_checkpoint):
    """The template's MOVE REASONING names the move ("so it should move left to ..."): the
    move+reasoning variant rewrites that phrase to the expert's move, so the chain does not contradict itself."""
    from benchmarks.oracle_boxes import expert_move, true_boxes_policy
    from ecot.annotate.template import restate_move as with_move
    from ecot.sim.env import SimConfig, TabletopEnv
    from ecot.sim.expert import ExpertConfig, ScriptedExpert

    text = "The gripper is closed and below the red block, so it should move forward to reach it."
    assert with_move(text, "move left") == "The gripper is closed and below the red block, so it should move left to reach it."
    assert with_move("no template here", "move left") == "no template here"

    policy = true_boxes_policy(str(trained_checkpoint), "move+reasoning", expert_style="sign")
    with TabletopEnv(SimConfig(image_size=64, num_objects=2, start="table")) as env:
        obs, _ = env.reset(seed=0, task="push")
        expected = expert_move(obs["state"], ScriptedExpert(env, np.random.default_rng([0, 7]), ExpertConfig(style="sign")).act())
        obs, _ = env.reset(seed=0, task="push")
        policy.reset(env, 0)
        written = policy.act(obs, env.task.instruction).reasoning
    assert expected.startswith("move") and written.move == expected
    # MOVE REASONING is the policy's own first pass with its move phrase rewritten (the tiny fixture's
    # own text need not be template-shaped; then it stays as written).
    own = policy.own_reasoning.move_reasoning
    assert written.move_reasoning == " ".join(with_move(own, expected).split()), (own, written.move_reasoning)
