"""One training step -> token ids, labels and a segment mask, exactly as the ECoT recipe builds them.

The text is ``training_text(instruction, reasoning, action_text, style)`` (docs/formats.md §2-3):
the prompt, the (possibly dropped-out) reasoning, ``ACTION:``, the 7 action tokens and ``</s>``,
tokenized with BOS. ``action_text`` is the tokenizer's decoding of the 7 action ids; after
tokenizing the whole text we check that exactly those ids sit right before EOS, because a
tokenizer whose decode -> encode round trip changes them would silently train on wrong actions.

Every position also gets a *segment* so that losses can be reported per part:

    SEG_PROMPT     BOS and the prompt up to ``Out:`` / ``ASSISTANT:``
    SEG_REASONING  the reasoning text (``TASK: ... GRIPPER POSITION: [...]``)
    SEG_ACTION_TAG ``ACTION:`` (and any space token before the action ids)
    SEG_ACTION     the 7 action ids
    SEG_EOS        the final ``</s>``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ecot.actions import ACTION_DIM, ActionTokenizer
from ecot.prompts import conditioning_prompt, training_text

IGNORE_INDEX = -100  # same value as ecot.model.IGNORE_INDEX (and transformers' CrossEntropy default)

SEG_PAD = -1
SEG_PROMPT = 0
SEG_REASONING = 1
SEG_ACTION_TAG = 2
SEG_ACTION = 3
SEG_EOS = 4
SEGMENT_NAMES = {SEG_PROMPT: "prompt", SEG_REASONING: "reasoning", SEG_ACTION_TAG: "action_tag", SEG_ACTION: "action", SEG_EOS: "eos"}

# Which segments carry labels in each loss-masking mode.
LOSS_MASKS = {
    "whole": (SEG_PROMPT, SEG_REASONING, SEG_ACTION_TAG, SEG_ACTION, SEG_EOS),  # the original ECoT recipe
    "reasoning+action": (SEG_REASONING, SEG_ACTION_TAG, SEG_ACTION, SEG_EOS),
    "action": (SEG_ACTION, SEG_EOS),  # OpenVLA's action-only recipe
}


def check_loss_mask(loss_mask: str) -> str:
    if loss_mask not in LOSS_MASKS:
        raise ValueError(f"unknown loss mask {loss_mask!r}; expected one of {sorted(LOSS_MASKS)}")
    return loss_mask


@dataclass
class TextSample:
    """Token ids, labels (IGNORE_INDEX where masked) and segments of one training sequence."""

    input_ids: torch.Tensor  # [L] int64
    labels: torch.Tensor  # [L] int64
    segments: torch.Tensor  # [L] int8
    text: str


def _tokenizer_name(tokenizer: Any) -> str:
    return f"{type(tokenizer).__name__}({getattr(tokenizer, 'name_or_path', '') or 'unnamed'})"


def action_text_for(tokenizer: Any, action_ids: Sequence[int]) -> str:
    """The text of the action ids, as the original recipe writes it (``tokenizer.decode``)."""
    return tokenizer.decode(list(int(i) for i in action_ids))


def build_text_sample(
    tokenizer: Any,
    action_tokenizer: ActionTokenizer,
    instruction: str,
    reasoning_text: str,
    normalized_action: Any,
    style: str,
    loss_mask: str = "whole",
    max_length: int | None = None,
) -> TextSample:
    """Token ids, labels and segments of one step (normalized action in [-1, 1] per dimension)."""
    check_loss_mask(loss_mask)
    action = np.asarray(normalized_action, dtype=np.float64)
    if action.shape != (ACTION_DIM,):
        raise ValueError(f"expected a normalized action of shape ({ACTION_DIM},), got {action.shape}")
    action_ids = [int(i) for i in action_tokenizer.encode(action)]
    text = training_text(instruction, reasoning_text, action_text_for(tokenizer, action_ids), style)

    encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    offsets = list(encoded["offset_mapping"])
    eos_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        raise ValueError(f"tokenizer {_tokenizer_name(tokenizer)} does not add BOS; the ECoT recipe tokenizes with BOS")
    if len(ids) < ACTION_DIM + 2 or ids[-1] != eos_id or ids[-1 - ACTION_DIM : -1] != action_ids:
        raise ValueError(
            f"tokenizer {_tokenizer_name(tokenizer)} does not round-trip the action tokens: expected the ids "
            f"{action_ids} followed by EOS ({eos_id}) at the end of the sequence, got {ids[-1 - ACTION_DIM:]}; "
            "the action ids must decode to text that encodes back to the same ids"
        )

    # Segments from character offsets: the prompt ends where the assistant's turn starts.
    prompt = conditioning_prompt(instruction, style)
    if not text.startswith(prompt):  # pragma: no cover - guaranteed by ecot.prompts
        raise AssertionError("training text does not start with the conditioning prompt")
    prompt_end = len(prompt)
    tag_start = text.rfind("ACTION:", prompt_end)
    if tag_start < 0:  # pragma: no cover - training_text always writes it
        raise AssertionError("training text has no ACTION: tag")
    n = len(ids)
    segments = np.empty(n, dtype=np.int8)
    for i, (start, end) in enumerate(offsets):
        if i == 0 or start < prompt_end:
            segments[i] = SEG_PROMPT
        elif end <= tag_start and text[start:end].strip() != "":
            segments[i] = SEG_REASONING
        else:
            # The space before ACTION: belongs to the tag; spaces inside the reasoning stay reasoning.
            segments[i] = SEG_ACTION_TAG if start >= tag_start - 1 else SEG_REASONING
    segments[n - 1 - ACTION_DIM : n - 1] = SEG_ACTION
    segments[n - 1] = SEG_EOS

    if max_length is not None and n > max_length:
        raise ValueError(
            f"sample has {n} tokens, more than max_length {max_length}; raise max_length or shorten the reasoning"
        )
    input_ids = torch.tensor(ids, dtype=torch.long)
    segments_t = torch.from_numpy(segments)
    keep = torch.zeros(n, dtype=torch.bool)
    for seg in LOSS_MASKS[loss_mask]:
        keep |= segments_t == seg
    labels = torch.where(keep, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return TextSample(input_ids=input_ids, labels=labels, segments=segments_t, text=text)


def collate(samples: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (pad id), ``labels`` (IGNORE_INDEX) and ``segments`` (SEG_PAD); stack the rest.

    Each sample is a dict with ``input_ids``, ``labels``, ``segments`` and optionally
    ``pixel_values`` [C, H, W], ``action`` (unnormalized, float [7]) and the locator's targets
    ``locator_objects`` / ``locator_gripper`` (:func:`ecot.model.locator.frame_targets`).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    longest = max(int(s["input_ids"].shape[0]) for s in samples)
    b = len(samples)
    input_ids = torch.full((b, longest), int(pad_token_id), dtype=torch.long)
    labels = torch.full((b, longest), IGNORE_INDEX, dtype=torch.long)
    segments = torch.full((b, longest), SEG_PAD, dtype=torch.int8)
    attention_mask = torch.zeros((b, longest), dtype=torch.bool)
    for i, s in enumerate(samples):
        n = int(s["input_ids"].shape[0])
        input_ids[i, :n] = s["input_ids"]
        labels[i, :n] = s["labels"]
        segments[i, :n] = s["segments"]
        attention_mask[i, :n] = True
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "segments": segments,
    }
    for key in ("pixel_values", "action", "locator_objects", "locator_gripper"):
        if key in samples[0]:
            batch[key] = torch.stack([torch.as_tensor(s[key]) for s in samples])
    if "dataset_key" in samples[0]:
        batch["dataset_key"] = [s["dataset_key"] for s in samples]
    return batch
