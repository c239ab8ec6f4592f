"""Per-segment training metrics from a VLA's logits.

The VLA's logits are ``[B, num_patches + L, V]``: the image patches sit right after BOS, so the
prediction of text token ``j >= 1`` is read at position ``num_patches + j - 1``. Metrics are
kept as *sums and counts* so that micro-batches and ranks can be added before dividing.

Segment metrics are computed against the input ids (not the labels), so that e.g. the reasoning
loss of a model trained with the action-only mask is still reported.
"""

from __future__ import annotations

import math
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
    "locator_loss_sum",
    "locator_count",
)


def text_logits(logits: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Logits predicting text tokens 1..L-1: ``[B, L - 1, V]``."""
    num_patches = logits.shape[1] - seq_len
    if num_patches < 0:
        raise ValueError(f"logits have {logits.shape[1]} positions, fewer than the {seq_len} text tokens")
    return logits[:, num_patches : num_patches + seq_len - 1]


def shifted_text(logits: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """``(logits [B, L-1, V] float, target ids, segments, trained mask)``, each for text tokens 1..L-1."""
    input_ids = batch["input_ids"].to(logits.device)
    shifted = text_logits(logits, input_ids.shape[1]).float()
    trained = batch["labels"].to(logits.device)[:, 1:] != IGNORE_INDEX
    return shifted, input_ids[:, 1:], batch["segments"].to(logits.device)[:, 1:], trained


def action_label_targets(true_ids: torch.Tensor, first_id: int, n_bins: int, sigma: float) -> torch.Tensor:
    """Soft labels over the ``n_bins`` action ids (``[N, n_bins]``, rows sum to 1): a Gaussian of std ``sigma``
    bins around each true id, integrated over each bin (HL-Gauss). The bins are evenly spaced, so neighbouring
    ids stand for neighbouring values and a near miss is no longer as wrong as a far one."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 bins for soft labels, got {sigma}")
    centre = (true_ids - first_id).to(torch.float64)[:, None]
    edges = torch.arange(n_bins + 1, dtype=torch.float64, device=true_ids.device)[None] - 0.5
    cdf = 0.5 * (1 + torch.erf((edges - centre) / (sigma * math.sqrt(2.0))))
    mass = cdf[:, 1:] - cdf[:, :-1]
    return (mass / mass.sum(1, keepdim=True)).float()


def weighted_loss(out: Any, batch: dict[str, Any], action_weight: float, label_sigma: float = 0.0,
                  action_tokenizer: ActionTokenizer | None = None) -> torch.Tensor:
    """``out.loss`` with each action token's cross-entropy counted ``action_weight`` times (the mean still over
    all trained tokens, so weight 1 is the model's own loss; a locator's loss is kept as it is). With
    ``label_sigma`` > 0 (bins; needs ``action_tokenizer``) an action token's target is
    :func:`action_label_targets` instead of its one id."""
    shifted, targets, seg, trained = shifted_text(out.logits, batch)
    action = (seg == SEG_ACTION) & trained
    if not action.any():
        return out.loss
    logits, ids = shifted[action], targets[action]
    token_loss = F.cross_entropy(logits, ids, reduction="none")
    shaped = token_loss
    if label_sigma > 0:
        if action_tokenizer is None:
            raise ValueError("soft action labels (label_sigma > 0) need the processor's action tokenizer")
        first, n = action_tokenizer.first_id, action_tokenizer.n_bins
        is_action_id = (ids >= first) & (ids < first + n)
        if is_action_id.any():
            soft = action_label_targets(ids[is_action_id], first, n, label_sigma)
            log_p = logits[is_action_id].log_softmax(-1)[:, first : first + n]
            shaped = token_loss.clone()
            shaped[is_action_id] = -(soft * log_p).sum(-1)
    extra = action_weight * shaped.sum() - token_loss.sum()
    return out.loss + extra / trained.sum().clamp_min(1)


@torch.no_grad()
def batch_sums(
    logits: torch.Tensor,
    batch: dict[str, Any],
    action_tokenizer: ActionTokenizer | None = None,
    action_stats: Any = None,
    rows_out: list | None = None,
    locator_loss: torch.Tensor | None = None,
) -> dict[str, float]:
    """Sums and counts of the batch's metrics (see :data:`SUM_KEYS`); ``rows_out`` also collects the
    batch's :func:`action_rows` (from the same greedy predictions); ``locator_loss``: the model's
    locator loss on the batch, if it has a locator."""
    shifted, targets, seg, trained = shifted_text(logits, batch)
    token_loss = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), reduction="none").view_as(targets)
    predictions = shifted.argmax(-1)

    out: dict[str, float] = {}
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
        rows = action_rows(predictions, targets, action, batch)
        if rows_out is not None and rows is not None:
            rows_out.append(rows)
        if rows is not None:
            pred_ids, _, truth = rows
            pred = action_stats.unnormalize(action_tokenizer.decode(pred_ids.clip(action_tokenizer.first_id,
                                                                                  action_tokenizer.last_id)))
            out["action_l1_sum"] = float(abs(pred - truth).sum())
            out["action_l1_count"] = float(truth.size)
    if locator_loss is not None:
        out["locator_loss_sum"] = float(locator_loss)
        out["locator_count"] = 1.0
    return out


def action_rows(predictions: torch.Tensor, targets: torch.Tensor, action: torch.Tensor, batch: dict[str, Any]):
    """(predicted ids, true ids, true actions), each ``[N, 7]`` numpy, for the sequences holding all 7
    action ids; None when there is none. A prediction outside the action range is kept as it is."""
    rows = action.sum(1) == ACTION_DIM
    if not bool(rows.any()):
        return None
    pred_ids = predictions[rows][action[rows]].view(-1, ACTION_DIM).cpu().numpy()
    true_ids = targets[rows][action[rows]].view(-1, ACTION_DIM).cpu().numpy()
    truth = batch["action"][rows.cpu()].double().numpy()
    return pred_ids, true_ids, truth


ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


def action_baselines(pred_ids, true_ids, truth, action_tokenizer: ActionTokenizer, action_stats: Any) -> dict[str, float]:
    """The policy's action metrics per dimension, beside two trivial predictors on the same steps.

    * ``majority``: each dimension's most common token *on these very steps* (so it is, if anything,
      stronger than a majority learned from the training split);
    * ``zero_motion``: no translation or rotation, the gripper at the majority token's value.

    Accuracy is exact token match; L1 is in the action's own units (m, rad, gripper 0..1), after
    unnormalization. A predicted id outside the action range counts at the nearest action bin.
    """
    import numpy as np

    lo, hi = action_tokenizer.first_id, action_tokenizer.last_id
    pred_ids, true_ids, truth = np.asarray(pred_ids), np.asarray(true_ids), np.asarray(truth, dtype=np.float64)
    majority_ids = np.array([np.bincount(true_ids[:, d] - lo, minlength=hi - lo + 1).argmax() + lo
                             for d in range(true_ids.shape[1])])
    model = action_stats.unnormalize(action_tokenizer.decode(pred_ids.clip(lo, hi)))
    majority = action_stats.unnormalize(action_tokenizer.decode(np.broadcast_to(majority_ids, true_ids.shape)))
    zero = np.zeros_like(truth)
    zero[:, -1] = majority[:, -1]
    out: dict[str, float] = {"steps": float(len(truth))}
    for name, correct, guess in (("", pred_ids == true_ids, model), ("majority_", true_ids == majority_ids, majority),
                                 ("zero_motion_", None, zero)):
        if correct is not None:
            out[f"{name}action_accuracy"] = float(correct.mean())
        out[f"{name}action_l1"] = float(abs(guess - truth).mean())
        for d, dim in enumerate(ACTION_NAMES[: truth.shape[1]]):
            if correct is not None:
                out[f"{name}action_accuracy_{dim}"] = float(correct[:, d].mean())
            out[f"{name}action_l1_{dim}"] = float(abs(guess[:, d] - truth[:, d]).mean())
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
    ratio("locator_loss", "locator_loss_sum", "locator_count")
    return out
