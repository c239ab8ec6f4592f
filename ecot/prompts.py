"""Chat prompts of the OpenVLA / ECoT family (docs/formats.md §3).

Two styles, chosen by the checkpoint's language backbone:

* ``"vicuna"`` — Vicuna v1.5 chat, used by the released ``ecot-openvla-7b-bridge``::

      {SYSTEM} USER: What action should the robot take to {instruction}? ASSISTANT: {answer}</s>

* ``"pure"`` — the ``In:/Out:`` format of Llama-2 ("pure") checkpoints such as ``openvla-7b``::

      In: What action should the robot take to {instruction}?\\nOut: {answer}</s>

Like the original prompt builders, each turn's message has ``<image>`` removed and is stripped
before it is wrapped, an empty answer becomes a single space, and the finished text has the
leading ``<s>`` removed and trailing whitespace stripped (the tokenizer adds BOS).
"""

from __future__ import annotations

VICUNA_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
EOS = "</s>"
BOS = "<s>"
STYLES = ("vicuna", "pure")
# The tag the policy's continuation starts with; inference prompts end with it.
REASONING_START = "TASK:"


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {STYLES}")


def style_for_backbone(llm_backbone_id: str) -> str:
    """Prompt style of a checkpoint from its ``llm_backbone_id`` (e.g. ``vicuna-v15-7b``, ``llama2-7b-pure``)."""
    backbone = llm_backbone_id.lower()
    if backbone.startswith("vicuna"):
        return "vicuna"
    if backbone.endswith("-pure") or backbone.startswith("llama2"):
        return "pure"
    raise ValueError(
        f"cannot tell the prompt style of LLM backbone {llm_backbone_id!r}: "
        "expected a 'vicuna-*' backbone (Vicuna chat) or a '*-pure' Llama backbone ('In:/Out:')"
    )


def user_message(instruction: str) -> str:
    """The user's turn: the instruction lower-cased (not stripped) inside the fixed question."""
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a string, got {type(instruction).__name__}")
    return f"What action should the robot take to {instruction.lower()}?"


def _clean(message: str) -> str:
    return message.replace("<image>", "").strip()


def _human_turn(message: str, style: str) -> str:
    if style == "vicuna":
        return f"{VICUNA_SYSTEM_PROMPT} USER: {_clean(message)} ASSISTANT: "
    return f"In: {_clean(message)}\nOut: "


def _assistant_turn(message: str) -> str:
    message = _clean(message)
    return f"{message if message != '' else ' '}{EOS}"


def _finish(prompt: str) -> str:
    return prompt.removeprefix(BOS).rstrip()


def conditioning_prompt(instruction: str, style: str = "vicuna") -> str:
    """The prompt up to the assistant's turn, without ``TASK:`` (ends in ``ASSISTANT:`` / ``Out:``)."""
    _check_style(style)
    return _finish(_human_turn(user_message(instruction), style))


def inference_prompt(instruction: str, style: str = "vicuna") -> str:
    """The text an ECoT policy is conditioned on, ending in ``TASK:``."""
    return f"{conditioning_prompt(instruction, style)} {REASONING_START}"


def assistant_answer(reasoning_text: str, action_text: str) -> str:
    """The assistant's message before wrapping: ``"{reasoning} ACTION: {action_text}"``."""
    return f"{reasoning_text} ACTION: {action_text}"


def training_text(instruction: str, reasoning_text: str, action_text: str, style: str = "vicuna") -> str:
    """The full training sequence (without BOS, ending in ``</s>``)."""
    _check_style(style)
    prompt = _human_turn(user_message(instruction), style)
    prompt += _assistant_turn(assistant_answer(reasoning_text, action_text))
    return _finish(prompt)
