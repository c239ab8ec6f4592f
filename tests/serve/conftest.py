"""Fixtures of the serve tests: a real tiny policy checkpoint, real ECoTPolicy objects and real
uvicorn servers on 127.0.0.1 (each server owns its policy: step/step_batch are not thread-safe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

INSTRUCTION = "put the red block in the bowl"
_STATS = {"sim_tabletop": {"action": {"mask": [True] * 6 + [False], "max": [1.0] * 7, "mean": [0.0] * 7,
          "min": [-1.0] * 7, "q01": [-0.5] * 6 + [0.0], "q99": [0.5] * 6 + [1.0], "std": [1.0] * 7},
          "num_trajectories": 1, "num_transitions": 1}}  # fmt: skip


@pytest.fixture(scope="session")
def serve_checkpoint(request, tmp_path_factory) -> Path:
    """The shared trained tiny checkpoint when the suite has one, else a random tiny-siglip one."""
    try:
        return Path(request.getfixturevalue("trained_checkpoint"))
    except pytest.FixtureLookupError:
        pass
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text

    reasoning = (
        "TASK: put the red block in the bowl. PLAN: reach the block, grasp it, move to the bowl, release. "
        "VISIBLE OBJECTS: the red block [40, 52, 60, 70], the bowl [80, 30, 110, 60] SUBTASK REASONING: open. "
        "SUBTASK: grasp the red block. MOVE REASONING: below. MOVE: move down GRIPPER POSITION: [50, 40, 50, 44]"
    )
    torch.manual_seed(0)
    config = VLAConfig.preset("tiny-siglip", norm_stats=_STATS)
    model = VLA(config).eval()
    texts = [training_text(INSTRUCTION, reasoning, "", s) for s in ("vicuna", "pure")]
    model.processor = VLAProcessor(config, train_tiny_tokenizer(texts, vocab_size=1024))
    return model.save_pretrained(tmp_path_factory.mktemp("serve_ckpt"))


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory) -> Path:
    """A random, deliberately minute VLA (28 px images -> 4 patches, one 64-wide Llama layer), for the
    tests that need many fast steps rather than sensible ones (mode no-reasoning: 7 action tokens)."""
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text

    config = VLAConfig.preset("tiny-siglip", image_sizes=[28], norm_stats=_STATS)
    config.text_config = {**config.text_config, "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}  # fmt: skip
    torch.manual_seed(0)
    model = VLA(config).eval()
    texts = [training_text(INSTRUCTION, "TASK: put the red block in the bowl. PLAN: grasp it.", "", s) for s in ("vicuna", "pure")]
    model.processor = VLAProcessor(config, train_tiny_tokenizer(texts, vocab_size=1024))
    return model.save_pretrained(tmp_path_factory.mktemp("micro_ckpt"))


def load(checkpoint: Path, mode: str):
    from ecot.policy import ECoTPolicy

    return ECoTPolicy.from_pretrained(str(checkpoint), mode=mode, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def scene_image() -> np.ndarray:
    """The trained checkpoint's first scene (its instruction is INSTRUCTION) when the suite has it."""
    try:
        from tiny_policy import SCENES
        from tiny_policy import scene_image as trained_scene  # tests/tiny_policy.py, put on sys.path by tests/conftest.py

        assert SCENES[0]["instruction"] == INSTRUCTION
        return trained_scene(0)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    img = np.full((224, 224, 3), 200, dtype=np.uint8)
    img[80:140, 80:120] = (220, 30, 30)
    img[40:100, 150:200] = (30, 30, 220)
    return img + rng.integers(0, 20, size=img.shape, dtype=np.uint8)


def start(policy, **kwargs):
    from ecot.serve.app import create_app
    from ecot.serve.server import ServerThread

    limits = kwargs.pop("limits", None)
    app = create_app(policy, **({"limits": limits} if limits else {}), **kwargs)
    return ServerThread(app, **({"limits": limits} if limits else {})).start()


@pytest.fixture(scope="session")
def server(serve_checkpoint):
    """Mode full (the reasoning is written and streamed)."""
    srv = start(load(serve_checkpoint, "full"), max_batch=4, max_wait_ms=5)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def fast_server(micro_checkpoint):
    """The minute model in mode no-reasoning: for the many-clients, malformed-input and fuzzing tests."""
    srv = start(load(micro_checkpoint, "no-reasoning"), max_batch=8, max_wait_ms=5)
    yield srv
    srv.stop()
