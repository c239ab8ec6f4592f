"""Learning-rate schedules: linear warmup, then constant or cosine decay."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "cosine")


def lr_lambda(schedule: str, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0):
    """The multiplier of the base learning rate at each optimizer step."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    if warmup_steps < 0 or max_steps <= 0:
        raise ValueError(f"need warmup_steps >= 0 and max_steps > 0, got {warmup_steps} and {max_steps}")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(1, max_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, warmup_steps, max_steps, min_lr_ratio))
