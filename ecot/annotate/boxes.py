"""Object boxes per step: ``[[score, name, [x0, y0, x1, y1]], ...]`` in image pixels.

Backends:
- ``gt``: the simulator's visible objects (score 1.0), names as the task uses them.
- ``grounding-dino``: transformers Grounding DINO queried with the caption's object phrases,
  keeping every detection above both thresholds (the original kept one box per frame).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ecot.annotate.gripper import require_ground_truth
from ecot.annotate.sanitize import clean_text
from ecot.data.episode import Episode

StepBoxes = list  # [[score, name, [x0, y0, x1, y1]], ...]


def clip_box(box: Sequence[float], width: int, height: int) -> list[int] | None:
    """Integer box inside the image, or None when nothing of it is left."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 0), width - 1)))
    y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 0), height - 1)))
    box = [int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))]
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


class GroundTruthBoxes:
    name = "gt"

    def boxes(self, episode: Episode, phrases: Sequence[str] = ()) -> list[StepBoxes]:
        gt = require_ground_truth(episode, "boxes")
        h, w = episode.images.shape[1:3]
        names = [clean_text(n) for n in gt.object_names]
        out = []
        for t in range(len(episode)):
            step = []
            for k, name in enumerate(names):
                if not gt.object_visible[t, k]:
                    continue
                box = clip_box(gt.object_boxes[t, k], w, h)
                if box is not None:
                    step.append([1.0, name, box])
            out.append(step)
        return out


@dataclass
class GroundingDinoConfig:
    model: str = "IDEA-Research/grounding-dino-tiny"
    box_threshold: float = 0.3
    text_threshold: float = 0.25
    batch_size: int = 8
    device: str = "cpu"


_SPECIAL = re.compile(r"\[(?:CLS|SEP|PAD|UNK|MASK)\]")


def phrase_for_label(label: str, phrases: Sequence[str]) -> str:
    """The queried phrase a detected label stands for ("red block" -> "the red block"), else the label.

    Grounding DINO labels are the query tokens above the text threshold, so they can be a part
    of a phrase or span several; the one phrase that contains the label, or that the label
    contains, is used as the object's name.
    """
    label = clean_text(_SPECIAL.sub(" ", label)).strip(" .").lower()
    if not label:
        return ""
    matches = [p for p in phrases if label in p.lower() or p.lower().strip(" .") in label]
    if len(matches) == 1:
        return clean_text(matches[0])
    exact = [p for p in matches if p.lower().strip(" .") == label]
    return clean_text(exact[0]) if exact else label


class GroundingDinoBoxes:
    """Grounding DINO over every frame. Model and processor may be injected."""

    name = "grounding-dino"

    def __init__(self, config: GroundingDinoConfig | None = None, *, model=None, processor=None):
        self.config = config or GroundingDinoConfig()
        self.model, self.processor = model, processor

    def _load(self) -> None:
        if self.model is None:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(self.config.model).to(self.config.device).eval()
            self.processor = AutoProcessor.from_pretrained(self.config.model)

    def detect(self, image: np.ndarray, phrases: Sequence[str]) -> StepBoxes:
        return self.detect_batch(image[None], phrases)[0]

    def detect_batch(self, images: np.ndarray, phrases: Sequence[str]) -> list[StepBoxes]:
        """Boxes of a batch of same-sized images, all queried with the same phrases."""
        import torch
        from PIL import Image

        self._load()
        h, w = images.shape[1:3]
        # Grounding DINO reads one lower-case prompt with phrases separated by " . ".
        text = " . ".join(p.lower().strip(" .") for p in phrases if p.strip()) + " ."
        inputs = self.processor(images=[Image.fromarray(img) for img in images], text=[text] * len(images),
                                return_tensors="pt").to(self.config.device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        results = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.config.box_threshold,
            text_threshold=self.config.text_threshold, target_sizes=[(h, w)] * len(images),
        )
        out = []
        for result in results:
            labels = result.get("text_labels") or result.get("labels") or []
            step = []
            for score, label, box in zip(result["scores"].tolist(), labels, result["boxes"].tolist()):
                name = phrase_for_label(str(label), phrases)
                clipped = clip_box(box, w, h)
                if name and clipped is not None:
                    step.append([round(float(score), 4), name, clipped])
            step.sort(key=lambda item: (-item[0], item[1], item[2]))
            out.append(step)
        return out

    def boxes(self, episode: Episode, phrases: Sequence[str] = ()) -> list[StepBoxes]:
        if not phrases:
            raise ValueError("grounding-dino boxes need object phrases (from the caption stage); got none")
        b = max(1, self.config.batch_size)
        return [step for i in range(0, len(episode), b) for step in self.detect_batch(episode.images[i : i + b], phrases)]


def make_boxes_backend(name: str, **kwargs: Any):
    if name == "gt":
        return GroundTruthBoxes()
    if name in ("grounding-dino", "grounding_dino", "gdino"):
        return GroundingDinoBoxes(GroundingDinoConfig(**kwargs))
    raise ValueError(f"unknown boxes backend {name!r}; expected 'gt' or 'grounding-dino'")
