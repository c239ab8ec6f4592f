"""predict_action end to end on CPU: a checkpoint directory, real tokenizer, generate, parse, unnormalize.

A random tiny model does not write ECoT text, so the generated ids are fixed with a transformers
logits processor (:class:`ForcedContinuation`) while everything else runs for real.
"""

from __future__ import annotations

import numpy as np
import pytest
from transformers import LogitsProcessorList

from ecot.actions import ActionTokenizer, NormStats
from ecot.model import VLA, ActionDecodeError, VLAConfig, VLAProcessor
from ecot.prompts import inference_prompt
from ecot.reasoning import Reasoning

from .conftest import INSTRUCTION, NORM_STATS, REASONING, TARGET_NORMALIZED, ForcedContinuation


@pytest.fixture(scope="module")
def vla(tiny_checkpoint):
    return VLA.from_pretrained(tiny_checkpoint, progress=False)


SHORT_REASONING = "TASK: Put the red block in the bowl. MOVE: move down"


def _continuation(processor, action_text: str, eos: bool = True, reasoning: str = SHORT_REASONING) -> list[int]:
    tok = processor.tokenizer
    prompt = inference_prompt(INSTRUCTION, processor.prompt_style)
    body = reasoning.removeprefix("TASK:") + " ACTION: " + action_text + ("</s>" if eos else "")
    prompt_ids = tok(prompt)["input_ids"]
    full = tok(prompt + body)["input_ids"]
    assert full[: len(prompt_ids)] == prompt_ids
    return full[len(prompt_ids) :]


def _forced(ids):
    return LogitsProcessorList([ForcedContinuation(ids)])


def test_predict_action_end_to_end(vla, scene_image):
    proc = vla.processor
    action_ids = proc.action_tokenizer.encode(TARGET_NORMALIZED).tolist()
    forced = _continuation(proc, proc.tokenizer.decode(action_ids), reasoning=REASONING)
    result = vla.predict_action(scene_image, INSTRUCTION, max_new_tokens=len(forced) + 5, logits_processor=_forced(forced))

    assert result.generated_ids == forced  # generation stopped at EOS
    assert result.action_ids == action_ids
    stats = NormStats.from_dict(NORM_STATS).get("sim_tabletop").action
    expected_normalized = ActionTokenizer(1024).decode(action_ids)
    np.testing.assert_allclose(result.normalized_action, expected_normalized)
    np.testing.assert_allclose(result.action, stats.unnormalize(expected_normalized))
    assert result.action.shape == (7,) and result.action[6] == expected_normalized[6]  # gripper not rescaled
    assert result.unnorm_key == "sim_tabletop"  # the only key is chosen when none is given
    assert result.text.startswith("TASK: Put the red block in the bowl.")
    assert result.reasoning == Reasoning.parse(REASONING)
    assert result.reasoning.task == "Put the red block in the bowl."
    assert result.reasoning.action_text == proc.tokenizer.decode(action_ids)


def test_action_ids_do_not_include_eos_or_trailing_text(vla, scene_image):
    """The original "last 7 ids" rule would be off by one here (EOS is the last id)."""
    proc = vla.processor
    action_ids = [1023, 1000, 900, 800, 768, 850, 1023]
    forced = _continuation(proc, proc.tokenizer.decode(action_ids))
    assert forced[-1] == proc.tokenizer.eos_token_id and forced[-8:-1] == action_ids
    result = vla.predict_action(scene_image, INSTRUCTION, logits_processor=_forced(forced))
    assert result.action_ids == action_ids


@pytest.mark.parametrize(
    "action_ids,expected",
    [([1000] * 6, "exactly 7 action token ids"), ([1000] * 8, "got 8 ids"), ([1000] * 3 + [500] + [1000] * 3, "not action tokens")],
)
def test_bad_action_tokens_raise_a_typed_error_with_the_text(vla, scene_image, action_ids, expected):
    proc = vla.processor
    forced = _continuation(proc, proc.tokenizer.decode(action_ids))
    with pytest.raises(ActionDecodeError, match=expected) as err:
        vla.predict_action(scene_image, INSTRUCTION, logits_processor=_forced(forced))
    assert "ACTION:" in err.value.text and err.value.text.startswith("TASK:")


def test_no_action_tag_and_unknown_unnorm_key(vla, scene_image):
    with pytest.raises(ActionDecodeError, match="no 'ACTION:' tag"):
        vla.predict_action(scene_image, INSTRUCTION, max_new_tokens=4)  # untrained: no ACTION: in 4 tokens
    with pytest.raises(KeyError, match="valid keys: \\['sim_tabletop'\\]"):
        vla.predict_action(scene_image, INSTRUCTION, unnorm_key="bridge_orig", max_new_tokens=2)


def test_fused_model_with_pure_prompt_in_memory(tiny_tokenizer, scene_image):
    config = VLAConfig.preset("tiny-dinosiglip", norm_stats=NORM_STATS)
    proc = VLAProcessor(config, tiny_tokenizer)
    model = VLA(config).eval()
    assert proc.prompt_style == "pure"
    action_ids = proc.action_tokenizer.encode(TARGET_NORMALIZED).tolist()
    forced = _continuation(proc, tiny_tokenizer.decode(action_ids))
    result = model.predict_action(scene_image, INSTRUCTION, processor=proc, logits_processor=_forced(forced))
    assert result.action_ids == action_ids
    with pytest.raises(ValueError, match="needs a processor"):
        model.predict_action(scene_image, INSTRUCTION)
