"""What the pre-training stages before a VLA's training share (vision_pretrain, locator_pretrain): a short
AdamW loop with a cosine schedule and a progress bar, and a cache in the run directory so that a
restarted run does not pre-train again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ecot.train.schedule import make_scheduler


def optimize(params: Iterable[nn.Parameter], steps: int, lr: float, step_loss: Callable[[], torch.Tensor],
             desc: str, progress: bool = True) -> dict[str, float]:
    """``steps`` AdamW steps (cosine schedule, 20 warm-up steps) on ``step_loss()``; returns the mean of
    the first and of the last 10 losses (``loss_first``, ``loss_last``)."""
    from tqdm.auto import tqdm

    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = make_scheduler(optimizer, "cosine", min(20, steps), steps)
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for _ in bar:
        loss = step_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    for p in params:
        p.grad = None
    return {"loss_first": round(float(np.mean(losses[:10])), 4), "loss_last": round(float(np.mean(losses[-10:])), 4)}


def load_cached(cache: Path, module: nn.Module, key: str) -> dict[str, Any] | None:
    """The stage's figures, with ``module``'s weights loaded from ``cache``; None when it has not run yet."""
    if not cache.is_file():
        return None
    saved = torch.load(cache, map_location="cpu", weights_only=True)
    module.load_state_dict(saved[key])
    return {k: v for k, v in saved.items() if k != key}


def save_cached(cache: Path, module: nn.Module, key: str, figures: dict[str, Any]) -> None:
    """Write ``module``'s weights and the figures to ``cache`` (atomically) and the figures beside it as JSON."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({key: module.state_dict(), **figures}, tmp)
    tmp.replace(cache)
    cache.with_suffix(".json").write_text(json.dumps(figures, indent=2))
