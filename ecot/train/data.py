"""Training steps of a dataset joined with their reasoning, as model-ready samples.

``StepDataset[key]`` (key from :class:`ecot.train.sampler.ResumableSampler`) returns one sample:
``input_ids``, ``labels``, ``segments`` (see :mod:`ecot.train.samples`), ``pixel_values`` from
the processor's image transform and the unnormalized ``action`` (for the L1 metric). All its
randomness (reasoning dropout, image augmentation) comes from the key's per-sample seed, so a
resumed run sees exactly the same samples.

Reasoning is joined by the original key ``f"{file_path}_{episode_id}_{step}"``:

* ``"aligned"`` (default, our datasets): frame ``t`` gets reasoning entry ``t``;
* ``"original"``: the released ECoT training data's one-step offset (FORMATS.md §8) for raw
  RLDS Bridge episodes: the original pipeline dropped the first raw step before numbering, so
  raw frame ``t`` got entry ``t - 1`` (and frame 0 had no training sample at all).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ecot.actions import ActionTokenizer, DatasetStats
from ecot.reasoning import pairs_text, reasoning_dropout, split_pairs
from ecot.train.augment import AugmentConfig, augment_image
from ecot.train.samples import build_text_sample, check_loss_mask

JOIN_MODES = ("aligned", "original")


@dataclass
class SampleConfig:
    """How a step becomes a sample."""

    loss_mask: str = "whole"  # "whole" (original ECoT) | "reasoning+action" | "action" (OpenVLA)
    tag_dropout: float = 0.0  # original reasoning_dropout: each (tag, value) pair dropped with this probability
    exclude_tags: tuple[str, ...] = ()  # tags always removed
    reasoning_dropout: float = 0.0  # ECoT-Lite: probability that the whole reasoning is dropped
    reasoning_until: int | None = None  # ECoT-Lite pre-training: reasoning only for positions < this, none after
    augment: bool = False
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    join: str = "aligned"
    max_length: int | None = None

    def __post_init__(self) -> None:
        check_loss_mask(self.loss_mask)
        for name in ("tag_dropout", "reasoning_dropout"):
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
    """The (episode, step) pairs of a sequence of episodes, with a small cache of decoded episodes.

    ``episodes`` is anything indexable returning :class:`ecot.data.episode.Episode` (a list, or a
    dataset from ``ecot.data.open_dataset``).
    """

    def __init__(self, episodes: Any, episode_indices: Sequence[int] | None = None, cache_size: int = 8):
        self.episodes = episodes
        indices = range(len(episodes)) if episode_indices is None else episode_indices
        self.steps: list[tuple[int, int]] = []
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self.cache_size = cache_size
        for e in indices:
            self.steps.extend((int(e), t) for t in range(self._length(int(e))))

    def _length(self, e: int) -> int:
        lengths = getattr(self.episodes, "episode_lengths", None)
        if lengths is not None:
            return int(lengths[e])
        return len(self.episode(e))

    def episode(self, e: int) -> Any:
        if e in self._cache:
            self._cache.move_to_end(e)
            return self._cache[e]
        ep = self.episodes[e]
        self._cache[e] = ep
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return ep

    def __len__(self) -> int:
        return len(self.steps)

    def __getstate__(self) -> dict:  # DataLoader workers get an empty cache
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state


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

    def __len__(self) -> int:
        return len(self.steps)

    def reasoning_text(self, episode: Any, t: int) -> str:
        if self.reasoning is None:
            return ""
        step = t if self.config.join == "aligned" else t - 1
        if step < 0:
            return ""
        return self.reasoning.get(episode.file_path, episode.episode_id, step)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, seed, position = key if isinstance(key, tuple) else (int(key), int(key), 0)
        e, t = self.steps.steps[index]
        episode = self.steps.episode(e)
        rng = np.random.default_rng(seed)
        reasoning = apply_dropout(self.reasoning_text(episode, t), self.config, rng, position)
        action = np.asarray(episode.actions[t], dtype=np.float64)
        sample = build_text_sample(
            self.tokenizer,
            self.action_tokenizer,
            episode.instruction,
            reasoning,
            self.stats.action.normalize(action),
            self.style,
            self.config.loss_mask,
            self.config.max_length,
        )
        image = Image.fromarray(np.asarray(episode.images[t]))
        if self.config.augment:
            image = augment_image(image, rng, self.config.augment_config)
        return {
            "input_ids": sample.input_ids,
            "labels": sample.labels,
            "segments": sample.segments,
            "pixel_values": self.processor.image_transform(image),
            "action": torch.as_tensor(action, dtype=torch.float32),
        }
