"""Move-head training (``ecot train --move-head``): the move head (ecot.model.move_head) learns, in
seconds, to choose each training frame's MOVE from the annotation's boxes, gripper point and
instruction -- the numbers the locator finds -- before the language model trains. It does not
change during the language model's training."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ecot.train.pretrain_stage import load_cached, optimize, save_cached

CACHE_NAME = "move_head.pt"  # in the run directory: a restarted run does not train it again


def _frames(data: Any, progress: bool) -> tuple[list, list, list, list]:
    """(items, gripper point, instruction, MOVE) of every frame of ``data`` that has a MOVE."""
    from tqdm.auto import tqdm

    from ecot.reasoning import Reasoning

    items, points, instructions, moves = [], [], [], []
    for i in tqdm(range(len(data.steps)), desc="move head: reading frames", disable=not progress):
        step = data.steps.get(i)
        move = Reasoning.parse(data.reasoning_text(step)).move if data.reasoning is not None else ""
        if not move:
            continue
        found, point = data.locator_targets.get(step)
        items.append(found)
        points.append(point)
        instructions.append(step.instruction)
        moves.append(move)
    return items, points, instructions, moves


def _features(head: Any, items: list, points: list, instructions: list) -> torch.Tensor:
    """The head's inputs from annotated frames (each object's name words as certain word probabilities)."""
    words = head.spec.object_words
    m = max([len(f) for f in items] + [1])
    boxes, present = torch.zeros(len(items), m, 4), torch.zeros(len(items), m, dtype=torch.bool)
    probs, gripper = torch.zeros(len(items), m, len(words)), torch.zeros(len(items), 2)
    for b, (found, point) in enumerate(zip(items, points)):
        for k, (name, box) in enumerate(found):
            boxes[b, k] = torch.tensor([float(v) for v in box])
            present[b, k] = True
            for w in str(name).lower().split():
                if w in words:
                    probs[b, k, words.index(w)] = 1.0
        if point is not None:
            gripper[b] = torch.tensor([float(v) for v in point])
    return head.features(boxes, present, probs, gripper, instructions)


def train_move_head(model: Any, train_data: Any, run_dir: str | Path, steps: int = 3000, batch_size: int = 64,
                    lr: float = 3e-3, seed: int = 0, eval_data: Any = None, progress: bool = True) -> dict:
    """Attach a move head to ``model`` (which has a locator) and train it on ``train_data``'s annotated
    frames; ``run_dir/move_head.pt`` caches it (and ``move_head.json`` its figures: loss, held-out accuracy
    beside always choosing the most common MOVE, seconds). Returns the figures."""
    from ecot.model.move_head import build_spec

    if model.locator is None:
        raise ValueError("the move head reads the locator's findings: train with --locator")
    start = time.perf_counter()
    items, points, instructions, moves = _frames(train_data, progress)
    if len(set(moves)) < 2:
        raise ValueError(f"the move head needs training frames with at least two different MOVEs, found {sorted(set(moves))}")
    spec = model.locator.spec
    model.attach_move_head(build_spec(moves, instructions, spec.words, spec.frame_size))
    head = model.move_head
    cached = load_cached(Path(run_dir) / CACHE_NAME, head, "move_head")
    if cached is not None:
        return cached
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = _features(head, items, points, instructions).to(head.net[0].weight.device)
    y = torch.tensor([head.spec.moves.index(m) for m in moves], device=x.device)

    def step_loss() -> torch.Tensor:
        idx = torch.as_tensor(rng.integers(0, len(y), batch_size), device=x.device)
        return F.cross_entropy(head(x[idx]), y[idx])

    head.train()
    figures: dict[str, Any] = {"steps": steps, "frames": len(moves), "moves": len(head.spec.moves),
                               **optimize(head.parameters(), steps, lr, step_loss, "move head", progress)}
    head.eval()
    if eval_data is not None and len(eval_data):
        e_items, e_points, e_instructions, e_moves = _frames(eval_data, progress=False)
        if e_moves:
            with torch.no_grad():
                chosen = head(_features(head, e_items, e_points, e_instructions).to(x.device)).argmax(-1).tolist()
            figures["eval_accuracy"] = round(float(np.mean([head.spec.moves[c] == m for c, m in zip(chosen, e_moves)])), 4)
            most_common = max(set(moves), key=moves.count)
            figures["eval_majority_accuracy"] = round(float(np.mean([m == most_common for m in e_moves])), 4)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    save_cached(Path(run_dir) / CACHE_NAME, head, "move_head", figures)
    print(f"move head: {figures}", file=sys.stderr)
    return figures
