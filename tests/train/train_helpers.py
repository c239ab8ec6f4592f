"""Small real components for the training tests: synthetic episodes, a tiny VLA and its processor."""

from __future__ import annotations

import numpy as np
import torch

from ecot.actions import ArrayStats, DatasetStats, NormStats, eef_delta_mask
from ecot.data.episode import Episode
from ecot.data.features import ReasoningIndex
from ecot.prompts import training_text

TINY_TEXT = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "pad_token_id": 1024,
    "vocab_size": 1088,
    "torch_dtype": "float32",
}
COLORS = ["red", "green", "blue", "yellow"]


def make_episodes(n_episodes: int = 2, steps: int = 3, size: int = 28, seed: int = 0) -> list[Episode]:
    """Episodes whose image colour tells the instruction and whose actions differ per step."""
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(n_episodes):
        images = np.zeros((steps, size, size, 3), dtype=np.uint8)
        images[..., e % 3] = 200
        for t in range(steps):
            images[t, : 4 * (t + 1), :4] = 255  # a per-step marker
        actions = rng.uniform(-0.05, 0.05, (steps, 7)).astype(np.float32)
        actions[:, 6] = rng.integers(0, 2, steps)
        episodes.append(
            Episode(
                images=images,
                states=np.zeros((steps, 7), dtype=np.float32),
                actions=actions,
                instruction=f"pick up the {COLORS[e % len(COLORS)]} block",
                metadata={"file_path": f"/data/ep{e}.npz", "episode_id": str(e)},
            )
        )
    return episodes


def reasoning_for(episodes: list[Episode]) -> ReasoningIndex:
    texts = {}
    for e, ep in enumerate(episodes):
        for t in range(len(ep)):
            texts[f"{ep.file_path}_{ep.episode_id}_{t}"] = (
                f"TASK: {ep.instruction}. PLAN: reach, grasp. VISIBLE OBJECTS: SUBTASK REASONING: step {t}. "
                f"SUBTASK: reach. MOVE REASONING: ahead. MOVE: move forward GRIPPER POSITION: [{t}, {e}]"
            )
    return ReasoningIndex(texts)


def stats_for(episodes: list[Episode]) -> DatasetStats:
    actions = np.concatenate([ep.actions for ep in episodes])
    return DatasetStats(action=ArrayStats.from_array(actions, mask=eef_delta_mask()), num_transitions=len(actions))


def tiny_model_and_processor(episodes, reasoning, style_preset="tiny-dinosiglip", seed=0, image_size=28):
    from ecot.model.config import VLAConfig
    from ecot.model.processor import VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.model.vla import VLA

    style = "pure" if style_preset == "tiny-dinosiglip" else "vicuna"
    texts = [training_text(ep.instruction, reasoning.get(ep.file_path, ep.episode_id, t), "", style) for ep in episodes for t in range(len(ep))]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=1024)
    stats = stats_for(episodes)
    n_towers = 2 if style_preset == "tiny-dinosiglip" else 1
    config = VLAConfig.preset(
        style_preset,
        norm_stats=NormStats({"sim": stats}).to_dict(),
        image_sizes=[image_size] * n_towers,
        text_config=dict(TINY_TEXT),
    )
    torch.manual_seed(seed)
    return VLA(config), VLAProcessor(config, tokenizer), stats
