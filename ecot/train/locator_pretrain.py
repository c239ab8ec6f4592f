"""Locator pre-training: the locator (ecot.model.locator) learns alone, briefly, before the VLA trains.

The language model learns to copy the locator's boxes and points into its chain only if they are
right when it sees them. Trained jointly from scratch, the locator's findings are noise for the
first few hundred steps, and the language model learns to write its chain without them. This
stage trains the locator alone on the run's training samples (its loss only: a few seconds per
hundred steps on a CPU); it keeps learning during the VLA's training afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecot.train.pretrain_stage import load_cached, optimize, save_cached
from ecot.train.samples import collate

CACHE_NAME = "locator_pretrain.pt"  # in the run directory: a restarted run does not pre-train again


@dataclass
class LocatorPretrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0


def pretrain_locator(model: Any, train_data: Any, run_dir: str | Path, config: LocatorPretrainConfig | None = None,
                     eval_data: Any = None, progress: bool = True) -> dict:
    """Train ``model.locator`` on ``train_data``'s locator targets; the weights stay in the model.

    Writes ``run_dir/locator_pretrain.pt`` (its weights and figures) and ``locator_pretrain.json``;
    when the ``.pt`` exists the locator is loaded from it instead. Returns the figures: first and
    last losses, the loss on ``eval_data`` (held-out episodes) if given, seconds."""
    cfg = config or LocatorPretrainConfig()
    locator = model.locator
    if locator is None:
        raise ValueError("the model has no locator to pre-train (train with --locator)")
    cache = Path(run_dir) / CACHE_NAME
    cached = load_cached(cache, locator, "locator")
    if cached is not None:
        return cached
    if len(train_data) == 0:
        raise ValueError("locator pre-training needs training samples")
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    pad = train_data.tokenizer.pad_token_id

    def batch(data: Any, keys: Any) -> dict:
        return collate([data[(int(k), int(k), 0)] for k in keys], pad)

    def loss_on(b: dict) -> torch.Tensor:
        return locator.loss(locator(b["pixel_values"]), b["locator_objects"], b["locator_gripper"])

    locator.train()
    size = min(cfg.batch_size, len(train_data))
    figures: dict[str, Any] = {"steps": cfg.steps, **optimize(
        locator.parameters(), cfg.steps, cfg.lr, lambda: loss_on(batch(train_data, rng.integers(0, len(train_data), size))),
        "locator pre-training", progress)}
    if eval_data is not None and len(eval_data):
        with torch.no_grad():
            keys = np.linspace(0, len(eval_data) - 1, num=min(64, len(eval_data))).astype(int)
            figures["eval_loss"] = round(float(loss_on(batch(eval_data, keys))), 4)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    save_cached(cache, locator, "locator", figures)
    return figures
