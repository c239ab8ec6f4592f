"""Free generation, as the original ECoT release decodes: ``VLA.predict_action``'s implementation.

The prompt ends in ``TASK:``; transformers' ``generate`` writes the reasoning and the action tokens
greedily (by default) until EOS; the action is read from the ids that follow ``ACTION:`` (checked
to be exactly ``action_dim`` action tokens) instead of "the last 7 generated ids".
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ecot.prompts import REASONING_START, inference_prompt
from ecot.reasoning import Reasoning
from ecot.model.vla import ACTION_TAG, ActionDecodeError, ActionPrediction


@torch.no_grad()
def predict_action(
    model: Any,
    image: Any,
    instruction: str,
    unnorm_key: str | None = None,
    max_new_tokens: int = 1024,
    processor: Any = None,
    do_sample: bool = False,
    **generate_kwargs: Any,
) -> ActionPrediction:
    """Reason about ``image`` and ``instruction``, then act: the seed's call, greedy by default."""
    processor = processor if processor is not None else model.processor
    if processor is None:
        raise ValueError(
            "predict_action needs a processor (tokenizer + image transform): load the model with "
            "VLA.from_pretrained(dir) from a directory holding tokenizer files, or pass processor=VLAProcessor(...)"
        )
    tokenizer = processor.tokenizer
    action_tokenizer = processor.action_tokenizer
    stats = None
    if len(processor.norm_stats.keys()) or unnorm_key is not None:
        unnorm_key = processor.norm_stats.resolve_key(unnorm_key)  # KeyError lists the valid keys
        stats = processor.norm_stats.get(unnorm_key).action
    action_dim = stats.dim if stats is not None else 7

    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"the instruction must be a non-empty string, got {instruction!r:.80}")
    pixel_values = processor.image_transform(image).unsqueeze(0).to(model.device)  # refuses tiny images
    prompt = inference_prompt(instruction, processor.prompt_style)
    input_ids = processor.encode_prompt(prompt).to(model.device)
    model._check_context(input_ids.shape[1], len(tokenizer(instruction, add_special_tokens=False)["input_ids"]))
    generate_kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    generate_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    new_ids = model.generate(
        input_ids, pixel_values, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs
    )[0].tolist()

    text = _continuation_text(tokenizer, input_ids[0].tolist(), new_ids, REASONING_START)
    reasoning = Reasoning.parse(text)
    action_ids = _action_ids_after_tag(tokenizer, action_tokenizer, new_ids, action_dim, text)
    normalized = action_tokenizer.decode(action_ids)
    if stats is None:
        warnings.warn("this model has no norm_stats: returning the normalized action in [-1, 1]", stacklevel=2)
        action = normalized.copy()
    else:
        action = stats.unnormalize(normalized)
    return ActionPrediction(
        action=action,
        reasoning=reasoning,
        text=text,
        action_ids=action_ids,
        normalized_action=normalized,
        generated_ids=new_ids,
        unnorm_key=unnorm_key,
    )


def _continuation_text(tokenizer: Any, prompt_ids: list[int], new_ids: list[int], start: str) -> str:
    """The generated text, beginning with the prompt's trailing ``TASK:``.

    SentencePiece drops a leading space when a continuation is decoded alone, so decode the
    prompt and the continuation together and cut at the prompt's last ``TASK:``.
    """
    prompt_text = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    cut = prompt_text.rfind(start)
    if cut >= 0 and full.startswith(prompt_text[: cut + len(start)]):
        return full[cut:]
    return start + tokenizer.decode(new_ids, skip_special_tokens=True)


def _action_ids_after_tag(tokenizer: Any, action_tokenizer: Any, ids: list[int], action_dim: int, text: str) -> list[int]:
    """The ids after ``ACTION:`` up to EOS, checked to be exactly ``action_dim`` action tokens."""

    def has_tag(k: int) -> bool:
        return ACTION_TAG in tokenizer.decode(ids[:k], skip_special_tokens=False)

    if not ids or not has_tag(len(ids)):
        raise ActionDecodeError(text, f"no {ACTION_TAG!r} tag in the generated text", ids)
    lo, hi = 1, len(ids)  # smallest prefix length whose decoding holds the tag
    while lo < hi:
        mid = (lo + hi) // 2
        if has_tag(mid):
            hi = mid
        else:
            lo = mid + 1
    rest = ids[lo:]
    eos = tokenizer.eos_token_id
    if eos is not None and eos in rest:
        rest = rest[: rest.index(eos)]
    # SentencePiece writes the space after "ACTION:" as a lone "▁" token before the action ids.
    while rest and not action_tokenizer.is_action_id(rest[0]) and tokenizer.decode([rest[0]]).strip() == "":
        rest = rest[1:]
    bad = [i for i in rest if not action_tokenizer.is_action_id(i)]
    if bad or len(rest) != action_dim:
        reason = (
            f"expected exactly {action_dim} action token ids in [{action_tokenizer.first_id}, "
            f"{action_tokenizer.last_id}] after {ACTION_TAG!r}, got {len(rest)} ids {rest}"
            + (f" of which {bad} are not action tokens" if bad else "")
        )
        raise ActionDecodeError(text, reason, ids, rest)
    return rest
