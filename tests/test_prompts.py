"""ecot.prompts: the Vicuna and pure prompt formats, byte for byte."""

import pytest

from ecot.prompts import (
    VICUNA_SYSTEM_PROMPT,
    conditioning_prompt,
    inference_prompt,
    style_for_backbone,
    training_text,
    user_message,
)

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_system_prompt_exact():
    assert VICUNA_SYSTEM_PROMPT == SYSTEM


def test_inference_prompt_vicuna_exact():
    assert inference_prompt("Put the Carrot on the plate") == (
        f"{SYSTEM} USER: What action should the robot take to put the carrot on the plate? ASSISTANT: TASK:"
    )


def test_inference_prompt_pure_exact():
    assert inference_prompt("put the carrot on the plate", style="pure") == (
        "In: What action should the robot take to put the carrot on the plate?\nOut: TASK:"
    )


def test_conditioning_prompt_ends_before_task():
    assert conditioning_prompt("x", "pure") == "In: What action should the robot take to x?\nOut:"
    assert conditioning_prompt("x", "vicuna").endswith("? ASSISTANT:")


def test_training_text_pure_matches_formats_example():
    text = training_text("put the carrot on the plate", "TASK: t PLAN: p", "abc", style="pure")
    assert text == "In: What action should the robot take to put the carrot on the plate?\nOut: TASK: t PLAN: p ACTION: abc</s>"


def test_training_text_vicuna():
    text = training_text("Pick Up The Spoon", "TASK: pick up the spoon", "xyz", style="vicuna")
    assert text == (
        f"{SYSTEM} USER: What action should the robot take to pick up the spoon? "
        "ASSISTANT: TASK: pick up the spoon ACTION: xyz</s>"
    )


def test_instruction_is_lowercased_not_stripped_but_the_message_is():
    # The instruction's own spaces stay inside the question; the message as a whole is stripped.
    assert user_message(" Pick  Up ") == "What action should the robot take to  pick  up ?"
    assert training_text("a", "", "q", style="pure") == "In: What action should the robot take to a?\nOut: ACTION: q</s>"


def test_empty_assistant_message_becomes_a_space():
    # Only reachable through an empty answer: the original wraps '' as ' </s>', then nothing strips it.
    from ecot.prompts import _assistant_turn

    assert _assistant_turn("") == " </s>"


def test_style_for_backbone():
    assert style_for_backbone("vicuna-v15-7b") == "vicuna"
    assert style_for_backbone("llama2-7b-pure") == "pure"
    with pytest.raises(ValueError, match="cannot tell the prompt style"):
        style_for_backbone("mistral-v0.1-7b-instruct")


def test_unknown_style_and_bad_instruction():
    with pytest.raises(ValueError, match="unknown prompt style 'chatml'"):
        inference_prompt("x", style="chatml")
    with pytest.raises(TypeError, match="instruction must be a string"):
        inference_prompt(None)
