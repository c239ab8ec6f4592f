"""Vision pre-training on the sim's ground truth (ecot.train.vision_pretrain)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecot.data.episode import GroundTruth
from ecot.train.vision_pretrain import CACHE_NAME, VisionPretrainConfig, name_words, patch_targets, pretrain_vision


def _gt(boxes, visible, names, gripper=(0.0, 0.0), gripper_visible=False) -> GroundTruth:
    k = len(names)
    return GroundTruth(object_names=names, object_boxes=np.array([boxes], np.float32),
                       object_visible=np.array([visible]), object_poses=np.zeros((1, k, 7)),
                       gripper_points=np.array([gripper], np.float32), gripper_visible=np.array([gripper_visible]),
                       gripper_open=np.array([True]))


def test_name_words_are_the_attribute_words():
    assert name_words(["the red block", "The blue block", "a green bar"]) == ["bar", "block", "blue", "green", "red"]


def test_patch_targets_are_the_covered_area_of_each_cell_per_word():
    # 4x4 grid over a 40-px image (10-px cells); the model sees 80 px, so targets scale by 2.
    words = name_words(["the red block", "the blue bar"])  # bar, block, blue, red
    gt = _gt([[10, 0, 20, 10], [0, 30, 15, 40]], [True, True], ["the red block", "the blue bar"],
             gripper=(35, 5), gripper_visible=True)
    t = patch_targets(gt, 0, words, (40, 40), model_size=80, grid=4).reshape(4, 4, len(words) + 1)
    red, block, blue, bar = (t[..., words.index(w)] for w in ("red", "block", "blue", "bar"))
    grip = t[..., -1]
    assert red[0, 1] == pytest.approx(1.0) and red.sum() == pytest.approx(1.0)  # exactly cell (row 0, col 1)
    np.testing.assert_allclose(block, red)
    assert blue[3, 0] == pytest.approx(1.0) and blue[3, 1] == pytest.approx(0.5) and blue.sum() == pytest.approx(1.5)
    np.testing.assert_allclose(bar, blue)
    assert grip[0, 3] == pytest.approx(1.0) and grip.sum() == pytest.approx(1.0)  # the point's cell only


def test_invisible_objects_and_grippers_have_no_targets():
    words = ["block", "red"]
    gt = _gt([[0, 0, 40, 40]], [False], ["the red block"], gripper=(5, 5), gripper_visible=False)
    assert not patch_targets(gt, 0, words, (40, 40), 40, 4).any()


def test_pretraining_teaches_the_tower_and_resumes_from_its_cache(tmp_path, sim_collection):
    from ecot.data import open_dataset
    from ecot.model.config import VLAConfig
    from ecot.model.processor import VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.model.vla import VLA

    dataset = open_dataset(sim_collection[0])
    config = VLAConfig.preset("tiny-siglip", image_sizes=[56])
    torch.manual_seed(0)
    model = VLA(config)
    processor = VLAProcessor(config, train_tiny_tokenizer(["push the red block to the left"], vocab_size=1024))
    before = {k: v.clone() for k, v in model.vision_backbone.state_dict().items()}
    cfg = VisionPretrainConfig(steps=40, batch_size=16, lr=3e-3)
    figures = pretrain_vision(model, processor, dataset, [0, 1, 2, 3], tmp_path, cfg, progress=False)

    assert figures["loss_last"] < figures["loss_first"], figures
    names = {n for i in range(4) for n in dataset.episode(i).ground_truth.object_names}
    assert figures["words"] == name_words(names)
    assert 0 <= figures["check_false_rate"] <= 1 and figures["frames"] > 0
    after = model.vision_backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((tmp_path / "vision_pretrain.json").read_text())["steps"] == 40

    # A restarted run loads the tower from the cache instead of training again.
    torch.manual_seed(1)
    fresh = VLA(config)
    again = pretrain_vision(fresh, processor, dataset, [0, 1, 2, 3], tmp_path, cfg, progress=False)
    assert again == figures and (tmp_path / CACHE_NAME).is_file()
    for k, v in fresh.vision_backbone.state_dict().items():
        assert torch.equal(v, after[k]), k


def test_pretraining_needs_ground_truth(tmp_path, sim_collection):
    from ecot.data import open_dataset
    from ecot.model.config import VLAConfig
    from ecot.model.vla import VLA

    class NoTruth:  # a real dataset whose episodes lost their ground truth (as real robot data has none)
        def __init__(self, inner):
            self.inner = inner

        def episode_length(self, i):
            return self.inner.episode_length(i)

        def episode(self, i):
            ep = self.inner.episode(i)
            ep.ground_truth = None
            return ep

    config = VLAConfig.preset("tiny-siglip", image_sizes=[56])
    with pytest.raises(ValueError, match="ground truth"):
        pretrain_vision(VLA(config), None, NoTruth(open_dataset(sim_collection[0])), [0], tmp_path,
                        VisionPretrainConfig(steps=1), progress=False)


def test_run_config_refuses_pretraining_a_checkpoint(tmp_path):
    from ecot.errors import UsageError
    from ecot.train.recipes import RunConfig

    with pytest.raises(UsageError, match="preset"):
        RunConfig(data=str(tmp_path), out=str(tmp_path / "run"), model=str(tmp_path), vision_pretrain_steps=10)
    with pytest.raises(UsageError, match=">= 0"):
        RunConfig(data=str(tmp_path), out=str(tmp_path / "run"), vision_pretrain_steps=-1)
