"""Training steps of a dataset joined with their reasoning, as model-ready samples.

``StepDataset[key]`` (key from :class:`ecot.train.sampler.ResumableSampler`) returns one sample:
``input_ids``, ``labels``, ``segments`` (see :mod:`ecot.train.samples`), ``pixel_values`` from
the processor's image transform and the unnormalized ``action`` (for the L1 metric). All its
randomness (reasoning dropout, image augmentation) comes from the key's per-sample seed, so a
resumed run sees exactly the same samples.

Reasoning is joined by the original key ``f"{file_path}_{episode_id}_{step}"`` with the step
from :func:`ecot.data.bridge.reasoning_step`: ``"aligned"`` (default) gives each frame the
reasoning of its own raw step; ``"original"`` reproduces the released training data's one-step
offset on Bridge-transformed episodes (docs/formats.md §8). For our own datasets both are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ecot.actions import ActionTokenizer, DatasetStats
from ecot.data.bridge import JOIN_MODES, RAW_OFFSET_KEY, reasoning_step
from ecot.data.source import EpisodeSource, Step
from ecot.io import LRUCache
from ecot.reasoning import pairs_text, reasoning_dropout, split_pairs
from ecot.train.augment import AugmentConfig, augment_image
from ecot.train.samples import IGNORE_INDEX, SEG_ACTION, build_text_sample, check_loss_mask


@dataclass
class SampleConfig:
    """How a step becomes a sample."""

    loss_mask: str = "whole"  # "whole" (original ECoT) | "reasoning+action" | "action" (OpenVLA)
    tag_dropout: float = 0.0  # original reasoning_dropout: each (tag, value) pair dropped with this probability
    exclude_tags: tuple[str, ...] = ()  # tags always removed
    reasoning_dropout: float = 0.0  # ECoT-Lite: probability that the whole reasoning is dropped
    reasoning_until: int | None = None  # ECoT-Lite pre-training: reasoning only for positions < this, none after
    # With this probability a sample shows the image of another random step and trains only its action
    # tokens: the image then says nothing about the action, so the action must be read from the chain
    # (an experiment of docs/quality.md, round thirteen; it did not change how closely the action follows it).
    action_image_shuffle: float = 0.0
    # With the shuffle: the samples that show their own image train no action token either, so the
    # action is learnt only where the image cannot tell it (an action read from the chain alone).
    action_only_shuffled: bool = False
    augment: bool = False
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    join: str = "aligned"
    max_length: int | None = None

    def __post_init__(self) -> None:
        check_loss_mask(self.loss_mask)
        if self.action_only_shuffled and not self.action_image_shuffle > 0:
            raise ValueError("action_only_shuffled needs action_image_shuffle > 0 (else no sample trains the action)")
        for name in ("tag_dropout", "reasoning_dropout", "action_image_shuffle"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if self.join not in JOIN_MODES:
            raise ValueError(f"unknown reasoning join mode {self.join!r}; expected one of {JOIN_MODES}")
        self.exclude_tags = tuple(self.exclude_tags)


def apply_dropout(text: str, config: SampleConfig, rng: np.random.Generator, position: int) -> str:
    """The reasoning text a sample trains on, after the recipe's dropout."""
    if config.reasoning_until is not None and position >= config.reasoning_until:
        return ""
    if config.reasoning_dropout > 0 and rng.random() < config.reasoning_dropout:
        return ""
    if config.tag_dropout > 0 or config.exclude_tags:
        return pairs_text(reasoning_dropout(split_pairs(text), config.tag_dropout, config.exclude_tags, rng))
    return text


class EpisodeSteps:
    """The (episode, frame) pairs of a dataset, read one frame at a time.

    ``episodes`` is an :class:`ecot.data.source.EpisodeSource` (frames read with its cheap
    ``step(i, t)``, typed :class:`~ecot.data.source.Step`) or any indexable of
    :class:`ecot.data.episode.Episode` (kept in a small cache).
    """

    def __init__(self, episodes: Any, episode_indices: Sequence[int] | None = None, cache_size: int = 8):
        self.episodes = episodes
        self.per_step = isinstance(episodes, EpisodeSource)
        indices = range(len(episodes)) if episode_indices is None else episode_indices
        self.steps: list[tuple[int, int]] = []
        self._cache: LRUCache[int, Any] = LRUCache(cache_size)
        self.cache_size = cache_size
        for e in indices:
            length = self.episodes.episode_length(int(e)) if self.per_step else len(self.episode(int(e)))
            self.steps.extend((int(e), t) for t in range(length))

    def episode(self, e: int) -> Any:
        return self._cache.get(e, lambda: self.episodes[e])

    def get(self, index: int) -> Step:
        e, t = self.steps[index]
        if self.per_step:
            return self.episodes.step(e, t)
        ep = self.episode(e)
        return Step(
            image=ep.images[t],
            state=ep.states[t],
            action=ep.actions[t],
            instruction=ep.instruction,
            episode_index=e,
            frame_index=t,
            file_path=ep.file_path,
            episode_id=ep.episode_id,
            raw_step_offset=int(ep.metadata.get(RAW_OFFSET_KEY, 0)),
        )

    def __len__(self) -> int:
        return len(self.steps)


class LocatorTargets:
    """Each frame's boxes (with names) and gripper point from an embodied-features file: what the
    locator (:mod:`ecot.model.locator`) learns to find. Frames without an entry get no targets."""

    def __init__(self, features_file: Any):
        from ecot.data.features import GRIPPER_KEY, iter_feature_episodes

        self.frames: dict[tuple[str, str], tuple[list, list]] = {}
        self.frame_sizes: set[int] = set()
        for file_path, episode_id, entry in iter_feature_episodes(features_file):
            features = entry.get("features") or {}
            boxes = features.get("bboxes") or []
            points = features.get(GRIPPER_KEY) or []
            self.frames[(str(file_path), str(episode_id))] = (boxes, points)
            size = (entry.get("metadata") or {}).get("image_size")
            if isinstance(size, list) and size:
                self.frame_sizes.add(int(max(size)))

    def names(self) -> list[str]:
        return sorted({str(item[1]) for boxes, _ in self.frames.values() for frame in boxes if frame for item in frame})

    def get(self, step: Step) -> tuple[list[tuple[str, list]], list | None]:
        """``([(name, box), ...], [x, y] or None)`` of a frame, in the annotation's pixels."""
        boxes, points = self.frames.get((str(step.file_path), str(step.episode_id)), ([], []))
        t = reasoning_step(step.frame_index, step.raw_step_offset, "aligned")
        items = [(str(i[1]), list(i[2])) for i in (boxes[t] if 0 <= t < len(boxes) and boxes[t] else [])]
        point = points[t] if 0 <= t < len(points) and isinstance(points[t], list) else None
        return items, point


def lookup_reasoning(reasoning: Any, step: Step, join: str) -> str:
    """The full reasoning text of a frame ("" without reasoning or without an entry)."""
    if reasoning is None:
        return ""
    key = reasoning_step(step.frame_index, step.raw_step_offset, join)
    return reasoning.get(step.file_path, step.episode_id, key)


class StepDataset(torch.utils.data.Dataset):
    """Model-ready samples of a dataset's steps (see the module docstring)."""

    def __init__(
        self,
        steps: EpisodeSteps,
        reasoning: Any,
        processor: Any,
        stats: DatasetStats,
        config: SampleConfig | None = None,
        dataset_key: str = "",
        locator_targets: LocatorTargets | None = None,
        locator: Any = None,
    ):
        self.steps = steps
        self.reasoning = reasoning  # ReasoningIndex-like: .get(file_path, episode_id, step) -> str; None = no reasoning
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.action_tokenizer: ActionTokenizer = processor.action_tokenizer
        self.style = processor.prompt_style
        self.stats = stats
        self.config = config or SampleConfig()
        self.dataset_key = dataset_key
        # With a locator (its LocatorSpec), every sample carries its targets.
        self.locator_targets = locator_targets
        self.locator = locator
        if locator is not None and locator_targets is None:
            raise ValueError("a model with a locator trains on its targets: pass locator_targets (the features file)")

    def __len__(self) -> int:
        return len(self.steps)

    def reasoning_text(self, step: Step) -> str:
        return lookup_reasoning(self.reasoning, step, self.config.join)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed, position = key if isinstance(key, tuple) else (int(key), int(key), 0)
        step = self.steps.get(index)
        rng = np.random.default_rng(seed)
        reasoning = apply_dropout(self.reasoning_text(step), self.config, rng, position)
        action = np.asarray(step.action, dtype=np.float64)
        shown = step  # the step whose image the sample shows
        # (not without reasoning: then nothing but the image says what the action is; with the shuffle off
        # no random number is drawn, so other runs' augmentation draws stay as they were)
        shuffled = bool(reasoning) and self.config.action_image_shuffle > 0 and rng.random() < self.config.action_image_shuffle
        if shuffled and len(self.steps) > 1:
            other = int(rng.integers(len(self.steps) - 1))
            shown = self.steps.get(other + (other >= index))  # any step but this one
        sample = build_text_sample(
            self.tokenizer,
            self.action_tokenizer,
            step.instruction,
            reasoning,
            self.stats.action.normalize(action),
            self.style,
            "action" if shown is not step else self.config.loss_mask,  # the chain does not describe that image
            self.config.max_length,
        )
        if self.config.action_only_shuffled and shown is step:
            sample.labels[sample.segments == SEG_ACTION] = IGNORE_INDEX
        image = Image.fromarray(np.asarray(shown.image))
        if self.config.augment:
            image = augment_image(image, rng, self.config.augment_config)
        out = {
            "input_ids": sample.input_ids,
            "labels": sample.labels,
            "segments": sample.segments,
            "pixel_values": self.processor.image_transform(image),
            "action": torch.as_tensor(action, dtype=torch.float32),
        }
        if self.locator is not None:
            from ecot.model.locator import frame_targets

            items, point = self.locator_targets.get(shown)
            out["locator_objects"], out["locator_gripper"] = frame_targets(items, point, self.locator,
                                                                           self.processor.config.image_size)
        return out
