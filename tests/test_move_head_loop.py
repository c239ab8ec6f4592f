"""benchmarks/move_head_loop.py runs a checkpoint's move head as the controller in the real sim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.move_head_loop import HeadPolicy, move_step, run, true_findings

CORPUS = ["push the red block to the left VISIBLE OBJECTS: the red block [10, 12, 20, 22], the blue bar [3, 40, 30, 50] "
          "GRIPPER POSITION: [5, 6, 111, 8]"]


def test_a_move_is_executed_as_the_sign_experts_step():
    assert move_step("move left").tolist() == pytest.approx([0, 0.02, 0, 0, 0, 0, 0])
    assert move_step("move forward right").tolist() == pytest.approx([0.02, -0.02, 0, 0, 0, 0, 0])
    assert move_step("move backward, close gripper").tolist() == pytest.approx([-0.02, 0, 0, 0, 0, 0, 0])
    assert not move_step("stop").any() and not move_step("not a move").any()


@pytest.fixture(scope="module")
def head_checkpoint(tmp_path_factory):
    """A tiny locator-only VLA whose move head always chooses "move right", saved like a trained one."""
    from tiny_policy import NORM_STATS

    from ecot.model.config import VLAConfig
    from ecot.model.locator import CONFIG_KEY, build_spec
    from ecot.model.move_head import build_spec as build_move_spec
    from ecot.model.processor import VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.model.vla import VLA

    tokenizer = train_tiny_tokenizer(CORPUS, vocab_size=1024, numbers="whole")
    names = ["the red block", "the blue bar", "the green ball", "the yellow cylinder", "the purple bowl",
             "the orange plate"]
    spec = build_spec(tokenizer, names, frame_size=112, image_patches=False)
    config = VLAConfig.preset("tiny-siglip", **{CONFIG_KEY: spec.to_dict()}, norm_stats=NORM_STATS)
    torch.manual_seed(0)
    model = VLA(config).eval()
    model.processor = VLAProcessor(config, tokenizer)
    model.attach_move_head(build_move_spec(["move left", "move right"], ["push the red block to the left"],
                                           spec.words, 112))
    with torch.no_grad():
        model.move_head.net[-1].bias.copy_(torch.tensor([-50.0, 50.0]))
    path = tmp_path_factory.mktemp("head") / "ckpt"
    model.save_pretrained(path)
    model.processor.save_pretrained(path)
    return path


def test_the_head_drives_the_sim_from_the_truth_or_the_locator(head_checkpoint):
    from ecot.sim.env import SimConfig, TabletopEnv

    with TabletopEnv(SimConfig(image_size=112, num_objects=2, start="table")) as env:
        obs, _ = env.reset(seed=5, task="push")
        instruction = env.task.instruction
        for variant in ("truth", "locator"):
            policy = HeadPolicy(str(head_checkpoint), variant, 112)
            policy.reset(env, 5)
            out = policy.act(obs, instruction)
            assert out.text == "move right" and out.action.tolist() == pytest.approx(move_step("move right").tolist())
        assert policy.named_steps <= 1 and policy.wrong_steps <= policy.named_steps  # the locator's choice was scored
        head = policy.policy.model.move_head
        boxes, scores, probs, gripper = true_findings(env, head, 112)
        gt = env.ground_truth()
        np.testing.assert_allclose(boxes[0].numpy(), gt["object_boxes"], atol=1e-4)
        np.testing.assert_allclose(gripper[0].numpy(), gt["gripper_point"], atol=1e-4)
        assert scores[0].tolist() == [float(v) for v in gt["object_visible"]]
        main = env.task.objects[env.task.main]
        named = [w for w, p in zip(head.spec.object_words, probs[0, env.task.main].tolist()) if p == 1.0]
        assert sorted(named) == sorted({main.color, main.kind} & set(head.spec.object_words))

    result = run(str(head_checkpoint), "locator", "seen", episodes=1, max_steps=3)
    assert result["episodes"][0]["steps"] == 3 and 0 <= result["wrong_object_steps"] <= 1


def test_the_expert_succeeds_and_standing_still_does_not():
    expert = run(None, "expert", "seen", episodes=2, image_size=64)
    still = run(None, "still", "seen", episodes=2, image_size=64, max_steps=5)
    assert expert["success"] in ("1/2", "2/2") and still["success"] == "0/2"
    assert [e["seed"] for e in expert["episodes"]] == [e["seed"] for e in still["episodes"]]  # the same scenes


def test_bad_settings_are_refused_by_name(trained_checkpoint):
    with pytest.raises(ValueError, match="unknown variant 'oracle'"):
        HeadPolicy(None, "oracle", 112)
    with pytest.raises(ValueError, match="has no move head"):
        HeadPolicy(str(trained_checkpoint), "locator", 64)
