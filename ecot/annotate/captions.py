"""Captions: a short scene description and the object phrases the box detector is queried with.

Backends:
- ``gt``: from the ground-truth object list ("a robot arm over a table with the red block, ...").
- ``transformers``: any image-text-to-text model (``AutoModelForImageTextToText``) asked to list
  the objects on the table, on the first frame.
- ``openai``: an OpenAI-compatible (or Gemini) chat model given the first frame as an image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecot.annotate.gripper import require_ground_truth
from ecot.annotate.sanitize import clean_text
from ecot.data.episode import Episode

QUESTION = (
    "List the objects on the table that a robot arm could interact with, as a comma-separated list of short "
    "noun phrases starting with 'the' (for example: the red block, the blue bowl). Answer with the list only."
)


def phrases_from_list(text: str) -> list[str]:
    """Noun phrases from a comma / 'and' separated list answer, deduplicated, order kept."""
    text = clean_text(text).strip(" .")
    parts = []
    for chunk in text.replace(" and ", ", ").replace(";", ",").replace("\n", ",").split(","):
        phrase = chunk.strip(" .-*").lower()
        if phrase and phrase not in parts and len(phrase) < 60:
            parts.append(phrase)
    return parts


def caption_from_phrases(phrases: list[str]) -> str:
    if not phrases:
        return "a robot arm over a table"
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"a robot arm over a table with {listed}"


class GroundTruthCaptioner:
    name = "gt"

    def caption(self, episode: Episode) -> tuple[str, list[str]]:
        gt = require_ground_truth(episode, "captions")
        visible = gt.object_visible[0] if len(episode) else np.zeros(len(gt.object_names), bool)
        phrases = [clean_text(n) for n, v in zip(gt.object_names, visible) if v] or [clean_text(n) for n in gt.object_names]
        return caption_from_phrases(phrases), phrases


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class TransformersCaptionerConfig:
    model: str = "HuggingFaceTB/SmolVLM-256M-Instruct"
    max_new_tokens: int = 64
    device: str = "cpu"


class TransformersCaptioner:
    """Any transformers image-text-to-text model with a chat template. Model/processor injectable."""

    name = "transformers"

    def __init__(self, config: TransformersCaptionerConfig | None = None, *, model=None, processor=None):
        self.config = config or TransformersCaptionerConfig()
        self.model, self.processor = model, processor

    def caption(self, episode: Episode) -> tuple[str, list[str]]:
        import torch
        from PIL import Image

        if self.model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.model = AutoModelForImageTextToText.from_pretrained(self.config.model).to(self.config.device).eval()
            self.processor = AutoProcessor.from_pretrained(self.config.model)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=prompt, images=[Image.fromarray(episode.images[0])], return_tensors="pt").to(self.config.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False)
        answer = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        phrases = phrases_from_list(answer)
        return caption_from_phrases(phrases), phrases


class ChatCaptioner:
    """A chat LLM client (OpenAI-compatible or Gemini) shown the first frame."""

    name = "openai"

    def __init__(self, client):
        self.client = client

    def caption(self, episode: Episode) -> tuple[str, list[str]]:
        messages = [{"role": "user", "content": [{"image_png": png_bytes(episode.images[0])}, {"text": QUESTION}]}]
        answer = self.client.complete(messages, 256).text
        phrases = phrases_from_list(answer)
        return caption_from_phrases(phrases), phrases


def make_caption_backend(name: str, client: Any = None, **kwargs: Any):
    if name == "gt":
        return GroundTruthCaptioner()
    if name == "transformers":
        return TransformersCaptioner(TransformersCaptionerConfig(**kwargs))
    if name in ("openai", "gemini"):
        if client is None:
            raise ValueError(f"the {name!r} caption backend needs an LLM client (--llm-model, --llm-base-url)")
        return ChatCaptioner(client)
    raise ValueError(f"unknown caption backend {name!r}; expected 'gt', 'transformers', 'openai' or 'gemini'")
