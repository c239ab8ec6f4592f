"""Fixtures of the evaluation tests: a tiny random ECoT checkpoint (plumbing, not skill)."""

from __future__ import annotations

from pathlib import Path

import pytest

SIM_NORM_STATS = {
    "ecot_sim": {
        "action": {
            "mask": [True] * 6 + [False],
            "max": [0.05, 0.05, 0.05, 0.0, 0.0, 0.5, 1.0],
            "min": [-0.05, -0.05, -0.05, 0.0, 0.0, -0.5, 0.0],
            "mean": [0.0] * 7,
            "std": [0.02] * 6 + [0.5],
            "q01": [-0.045, -0.045, -0.045, 0.0, 0.0, -0.3, 0.0],
            "q99": [0.045, 0.045, 0.045, 0.0, 0.0, 0.3, 1.0],
        },
        "num_trajectories": 1,
        "num_transitions": 1,
    }
}


@pytest.fixture(scope="session")
def tiny_random_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny-siglip VLA with a tiny tokenizer trained on sim instructions and reasoning."""
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text

    reasoning = ("TASK: put the red block in the blue bowl. PLAN: move to the red block, grasp the red block. "
                 "VISIBLE OBJECTS: the red block [10, 12, 20, 22] SUBTASK REASONING: not grasped. "
                 "SUBTASK: move to the red block MOVE REASONING: it is below. MOVE: move down "
                 "GRIPPER POSITION: [30, 40, 31, 41]")
    texts = [training_text(f"{verb} the red block in the blue bowl", reasoning, "", style)
             for verb in ("put", "place", "move", "stack", "push") for style in ("vicuna", "pure")]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=1024)
    torch.manual_seed(0)
    config = VLAConfig.preset("tiny-siglip", norm_stats=SIM_NORM_STATS)
    model = VLA(config).eval()
    model.processor = VLAProcessor(config, tokenizer)
    out = tmp_path_factory.mktemp("tiny_random_ckpt")
    model.save_pretrained(out)
    return out
