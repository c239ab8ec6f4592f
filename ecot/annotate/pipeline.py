"""One episode through every stage: primitives, gripper points, captions, boxes, reasoning.

:class:`AnnotateConfig` names a backend per stage; :func:`build_stages` makes them (model
backends load lazily, on the first episode); :func:`annotate_episode` returns the episode's
entry of the embodied-features file (docs/formats.md §4) — deterministic for deterministic backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecot.annotate.primitives import commanded_move_vectors, describe_all, move_vectors
from ecot.annotate.sanitize import clean_text
from ecot.annotate.template import template_reasoning
from ecot.data.episode import Episode
from ecot.options import option

REASONING_BACKENDS = ("template", "openai", "gemini")
MOVE_SOURCES = ("states", "actions")  # AnnotateConfig.moves_from
GRIPPER_BACKENDS = ("gt", "detector")
BOXES_BACKENDS = ("gt", "grounding-dino")
CAPTION_BACKENDS = ("gt", "transformers", "openai", "gemini")


@dataclass
class AnnotateConfig:
    """The annotation backends (also ``ecot annotate``'s flags, see :mod:`ecot.options`)."""

    reasoning: str = option("template", choices=REASONING_BACKENDS)
    gripper: str = option("gt", choices=GRIPPER_BACKENDS)
    boxes: str = option("gt", choices=BOXES_BACKENDS)
    captions: str = option("gt", choices=CAPTION_BACKENDS)
    llm_model: str = option("gpt-4o-mini", "model name for the openai/gemini backends")
    llm_base_url: str | None = option(
        None, "OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)")
    llm_api_key_env: str | None = option(
        None, "environment variable holding the API key (default: OPENAI_API_KEY / GEMINI_API_KEY)")
    llm_cache: str | None = option(None, "response cache directory (default OUT/llm_cache)")
    moves_from: str = option(
        "states", "what MOVE describes: the executed motion (states: proprioception, as the paper) or the commanded "
        "actions (actions: for recovery data, whose executed steps carry noise the expert did not intend)",
        choices=MOVE_SOURCES)
    # Backend constructor options (ecot annotate sets the torch device from --device).
    gripper_options: dict[str, Any] = option(default_factory=dict, cli=False)
    boxes_options: dict[str, Any] = option(default_factory=dict, cli=False)
    caption_options: dict[str, Any] = option(default_factory=dict, cli=False)

    def __post_init__(self) -> None:
        for name, allowed in (("reasoning", REASONING_BACKENDS), ("gripper", GRIPPER_BACKENDS),
                              ("boxes", BOXES_BACKENDS), ("captions", CAPTION_BACKENDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} backend {getattr(self, name)!r}; expected one of {list(allowed)}")
        if self.moves_from not in MOVE_SOURCES:
            raise ValueError(f"unknown moves_from {self.moves_from!r}; expected one of {list(MOVE_SOURCES)}")

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Stages:
    gripper: Any
    boxes: Any
    captions: Any
    reasoner: Any | None  # None: template
    moves_from: str = "states"  # AnnotateConfig.moves_from


def _client(config: AnnotateConfig, kind: str):
    import os

    from ecot.annotate.llm_clients import make_client

    key = os.environ.get(config.llm_api_key_env) if config.llm_api_key_env else None
    return make_client(kind, config.llm_model, config.llm_base_url, key)


def build_stages(config: AnnotateConfig, cache_dir: str | None = None) -> Stages:
    from ecot.annotate.boxes import make_boxes_backend
    from ecot.annotate.captions import make_caption_backend
    from ecot.annotate.gripper import make_gripper_backend

    reasoner = None
    if config.reasoning in ("openai", "gemini"):
        from ecot.annotate.llm_reasoning import LLMReasoner, ResponseCache

        cache = ResponseCache(config.llm_cache or cache_dir) if (config.llm_cache or cache_dir) else None
        reasoner = LLMReasoner(_client(config, config.reasoning), cache)
    caption_client = _client(config, config.captions) if config.captions in ("openai", "gemini") else None
    return Stages(
        gripper=make_gripper_backend(config.gripper, **config.gripper_options),
        boxes=make_boxes_backend(config.boxes, **config.boxes_options),
        captions=make_caption_backend(config.captions, caption_client, **config.caption_options),
        reasoner=reasoner,
        moves_from=config.moves_from,
    )


def _int_points(points: np.ndarray, width: int, height: int) -> list[list[int]]:
    """Pixels as ints, clipped into the image (NaN points, which a fit could not fill, become the centre)."""
    pts = np.asarray(points, dtype=np.float64).copy()
    bad = ~np.isfinite(pts).all(axis=1)
    pts[bad] = [width / 2, height / 2]
    pts[:, 0] = np.clip(np.round(pts[:, 0]), 0, width - 1)
    pts[:, 1] = np.clip(np.round(pts[:, 1]), 0, height - 1)
    return pts.astype(np.int64).tolist()


def annotate_episode(episode: Episode, stages: Stages) -> dict:
    """The features-file entry of one episode: reasoning, features and metadata."""
    t = len(episode)
    if t == 0:
        raise ValueError(f"episode {episode.file_path!r}/{episode.episode_id!r} has no steps")
    h, w = episode.images.shape[1:3]
    if stages.moves_from == "actions":
        vectors = commanded_move_vectors(episode.states, episode.actions)
    else:
        vectors = move_vectors(episode.states)
    primitives = describe_all(vectors)
    caption, phrases = stages.captions.caption(episode)
    raw_points = stages.gripper.points(episode)
    points = _int_points(raw_points, w, h)
    bboxes = stages.boxes.boxes(episode, phrases)
    if stages.reasoner is None:
        reasoning = template_reasoning(episode, primitives, np.asarray(points, dtype=np.float64), bboxes)
    else:
        from ecot.annotate.llm_reasoning import features_summary

        summary = features_summary(clean_text(episode.instruction), caption, primitives, points, bboxes[0])
        reasoning = stages.reasoner.reason(summary, primitives)
    metadata = {
        "episode_id": episode.episode_id,
        "file_path": episode.file_path,
        "n_steps": t,
        "language_instruction": clean_text(episode.instruction),
        "caption": clean_text(caption),
        "image_size": [int(w), int(h)],
        "backends": {
            "reasoning": "template" if stages.reasoner is None else stages.reasoner.client.kind,
            "gripper": stages.gripper.name,
            "boxes": stages.boxes.name,
            "captions": stages.captions.name,
        },
    }
    for key in ("task_family", "split", "success"):
        if key in episode.metadata:
            value = episode.metadata[key]
            metadata[key] = value.item() if isinstance(value, np.generic) else value
    return {
        "reasoning": reasoning,
        "features": {
            "gripper_position": points,
            "bboxes": bboxes,
            "move_primitive": primitives,
            "move_vector": vectors.tolist(),
            "caption": clean_text(caption),
            "state_3d": np.round(episode.states[:, :3].astype(np.float64), 5).tolist(),
        },
        "metadata": metadata,
    }
