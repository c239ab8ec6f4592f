"""Shared fixtures of the model tests: a real tiny tokenizer file and a tiny model that has
memorized one ECoT episode step, saved as a real checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "released"
INSTRUCTION = "Put the red block in the bowl"
REASONING = (
    "TASK: Put the red block in the bowl. PLAN: reach the block, grasp it, move to the bowl, release. "
    "VISIBLE OBJECTS: the red block [40, 52, 60, 70], the bowl [80, 30, 110, 60] "
    "SUBTASK REASONING: the gripper is open above the block. SUBTASK: grasp the red block. "
    "MOVE REASONING: the block is below the gripper. MOVE: move down "
    "GRIPPER POSITION: [50, 40, 50, 44, 50, 48, 50, 52, 50, 56]"
)
# A normalized action (bridge-like: gripper absolute) and its stats (the fixture config's placeholders).
TARGET_NORMALIZED = np.array([0.1, -0.2, -0.9, 0.0, 0.05, 0.3, 1.0])
NORM_STATS = {
    "sim_tabletop": {
        "action": {
            "mask": [True] * 6 + [False],
            "max": [1.0] * 7,
            "mean": [0.0] * 7,
            "min": [-1.0] * 7,
            "q01": [-0.5] * 6 + [0.0],
            "q99": [0.5] * 6 + [1.0],
            "std": [1.0] * 7,
        },
        "num_trajectories": 1,
        "num_transitions": 1,
    }
}


def corpus() -> list[str]:
    from ecot.prompts import training_text

    texts = []
    for style in ("vicuna", "pure"):
        texts.append(training_text(INSTRUCTION, REASONING, "", style))
        texts.append(training_text("pick up the green cup", REASONING.replace("red block", "green cup"), "", style))
    return texts


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from ecot.model.tokenizer import train_tiny_tokenizer

    return train_tiny_tokenizer(corpus(), vocab_size=1024)


@pytest.fixture(scope="session")
def scene_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((96, 128, 3), 200, dtype=np.uint8)
    img[40:70, 40:60] = (220, 30, 30)
    img += rng.integers(0, 20, size=img.shape, dtype=np.uint8)
    return img


class ForcedContinuation:
    """A transformers logits processor that makes generation emit ``ids`` (a real, model-driven
    generate loop whose choices are fixed, so predict_action can be checked end to end)."""

    def __init__(self, ids: list[int]):
        self.ids = list(ids)

    def __call__(self, input_ids, scores):
        import torch

        step = input_ids.shape[1]  # generation from inputs_embeds: input_ids holds only new tokens
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[min(step, len(self.ids) - 1)]] = 0.0
        return forced


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_tokenizer) -> Path:
    """A random tiny-siglip model with bridge-like norm stats and the tiny tokenizer, saved in shards."""
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor

    torch.manual_seed(0)
    config = VLAConfig.preset("tiny-siglip", norm_stats=NORM_STATS)
    model = VLA(config).eval()
    model.processor = VLAProcessor(config, tiny_tokenizer)
    out = tmp_path_factory.mktemp("tiny_ckpt")
    model.save_pretrained(out, max_shard_size="4MB")  # several shards, as released checkpoints have
    return out
