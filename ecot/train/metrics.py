"""Per-segment training metrics from a VLA's logits.

The VLA's logits are ``[B, num_patches + L, V]``: the image patches sit right after BOS, so the
prediction of text token ``j >= 1`` is read at position ``num_patches + j - 1``. Metrics are
kept as *sums and counts* so that micro-batches and ranks can be added before dividing.

Segment metrics are computed against the input ids (not the labels), so that e.g. the reasoning
loss of a model trained with the action-only mask is still reported.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ecot.actions import ACTION_DIM, ActionTokenizer
from ecot.train.samples import IGNORE_INDEX, SEG_ACTION, SEG_REASONING

SUM_KEYS = (
    "loss_sum",
    "loss_count",
    "reasoning_loss_sum",
    "reasoning_count",
    "action_loss_sum",
    "action_count",
    "action_correct",
    "action_l1_sum",
    "action_l1_count",
)


def text_logits(logits: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Logits predicting text tokens 1..L-1: ``[B, L - 1, V]``."""
    num_patches = logits.shape[1] - seq_len
    if num_patches < 0:
        raise ValueError(f"logits have {logits.shape[1]} positions, fewer than the {seq_len} text tokens")
    return logits[:, num_patches : num_patches + seq_len - 1]


@torch.no_grad()
def batch_sums(
    logits: torch.Tensor,
    batch: dict[str, Any],
    action_tokenizer: ActionTokenizer | None = None,
    action_stats: Any = None,
) -> dict[str, float]:
    """Sums and counts of the batch's metrics (see :data:`SUM_KEYS`)."""
    input_ids = batch["input_ids"].to(logits.device)
    labels = batch["labels"].to(logits.device)
    segments = batch["segments"].to(logits.device)
    seq_len = input_ids.shape[1]
    shifted = text_logits(logits, seq_len).float()
    targets = input_ids[:, 1:]
    seg = segments[:, 1:]
    lab = labels[:, 1:]
    token_loss = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), reduction="none").view_as(targets)
    predictions = shifted.argmax(-1)

    out: dict[str, float] = {}
    trained = lab != IGNORE_INDEX
    out["loss_sum"] = float(token_loss[trained].sum())
    out["loss_count"] = float(trained.sum())
    reasoning = seg == SEG_REASONING
    out["reasoning_loss_sum"] = float(token_loss[reasoning].sum())
    out["reasoning_count"] = float(reasoning.sum())
    action = seg == SEG_ACTION
    out["action_loss_sum"] = float(token_loss[action].sum())
    out["action_count"] = float(action.sum())
    out["action_correct"] = float((predictions[action] == targets[action]).sum())

    out["action_l1_sum"] = 0.0
    out["action_l1_count"] = 0.0
    if action_tokenizer is not None and action_stats is not None and "action" in batch:
        rows = action.sum(1) == ACTION_DIM  # sequences holding all 7 action ids
        if bool(rows.any()):
            pred_ids = predictions[rows][action[rows]].view(-1, ACTION_DIM).cpu().numpy()
            # A prediction outside the action range counts at the nearest action bin.
            pred_ids = pred_ids.clip(action_tokenizer.first_id, action_tokenizer.last_id)
            pred = action_stats.unnormalize(action_tokenizer.decode(pred_ids))
            truth = batch["action"][rows.cpu()].double().numpy()
            out["action_l1_sum"] = float(abs(pred - truth).sum())
            out["action_l1_count"] = float(truth.size)
    return out


def add_sums(total: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    for key in SUM_KEYS:
        total[key] = total.get(key, 0.0) + new.get(key, 0.0)
    return total


def reduce_sums(sums: dict[str, float]) -> dict[str, float]:
    """Add the sums over all ranks (no-op without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return sums
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    t = torch.tensor([sums.get(k, 0.0) for k in SUM_KEYS], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(SUM_KEYS, t.tolist()))


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Means from sums: loss, reasoning_loss, action_loss, action_accuracy, action_l1 (absent when no tokens)."""
    out: dict[str, float] = {}

    def ratio(name: str, num: str, den: str) -> None:
        if sums.get(den, 0.0) > 0:
            out[name] = sums[num] / sums[den]

    ratio("loss", "loss_sum", "loss_count")
    ratio("reasoning_loss", "reasoning_loss_sum", "reasoning_count")
    ratio("action_loss", "action_loss_sum", "action_count")
    ratio("action_accuracy", "action_correct", "action_count")
    ratio("action_l1", "action_l1_sum", "action_l1_count")
    return out
