"""Samples: token ids, labels and segments exactly as the ECoT recipe builds them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ecot.actions import ActionTokenizer
from ecot.prompts import training_text
from ecot.reasoning import REASONING_TAGS, pairs_text, split_pairs
from ecot.train.data import SampleConfig, apply_dropout
from ecot.train.samples import (
    IGNORE_INDEX,
    SEG_ACTION,
    SEG_ACTION_TAG,
    SEG_EOS,
    SEG_PAD,
    SEG_PROMPT,
    SEG_REASONING,
    build_text_sample,
    collate,
)

REASONING = (
    "TASK: Put the red block in the bowl. PLAN: Move to the block, grasp it, move to the bowl, release. "
    "VISIBLE OBJECTS: the red block [10, 20, 30, 40], the bowl [50, 60, 70, 80] SUBTASK REASONING: The block "
    "is not grasped yet. SUBTASK: Grasp the red block. MOVE REASONING: The block is ahead. MOVE: move forward "
    "GRIPPER POSITION: [12, 34, 13, 35, 14, 36, 14, 36, 14, 36]"
)
INSTRUCTION = "Put the red block in the bowl"


@pytest.fixture(scope="module")
def tokenizer():
    from ecot.model.tokenizer import train_tiny_tokenizer

    texts = [training_text(INSTRUCTION, REASONING, "", s) for s in ("pure", "vicuna")] * 20
    return train_tiny_tokenizer(texts, vocab_size=1024)


@pytest.fixture(scope="module")
def action_tokenizer(tokenizer):
    return ActionTokenizer(tokenizer.vocab_size, 256)


ACTION = np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 0.99, 1.0])


@pytest.mark.parametrize("style", ["pure", "vicuna"])
def test_ids_follow_the_recipe(tokenizer, action_tokenizer, style):
    sample = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, style, "whole")
    action_ids = action_tokenizer.encode(ACTION).tolist()
    ids = sample.input_ids.tolist()
    assert sample.text == training_text(INSTRUCTION, REASONING, tokenizer.decode(action_ids), style)
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    assert ids[-8:-1] == action_ids
    assert ids == tokenizer(sample.text)["input_ids"]
    # The original recipe: labels are the input ids.
    assert torch.equal(sample.labels, sample.input_ids)


def test_label_masks(tokenizer, action_tokenizer):
    whole = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, "pure", "whole")
    ra = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, "pure", "reasoning+action")
    act = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, "pure", "action")
    assert torch.equal(whole.input_ids, ra.input_ids) and torch.equal(whole.input_ids, act.input_ids)

    # action: only the 7 action ids and EOS carry labels
    labeled = (act.labels != IGNORE_INDEX).nonzero().flatten().tolist()
    n = len(act.input_ids)
    assert labeled == list(range(n - 8, n))
    assert act.labels[-8:].tolist() == act.input_ids[-8:].tolist()

    # reasoning+action: everything from the first reasoning token on, nothing of the prompt
    labeled = (ra.labels != IGNORE_INDEX).nonzero().flatten()
    first = int(labeled[0])
    assert labeled.tolist() == list(range(first, n))
    assert tokenizer.decode(ra.input_ids[first:]).lstrip().startswith("TASK:")
    assert tokenizer.decode(ra.input_ids[:first]).rstrip().endswith("Out:")


def test_segments(tokenizer, action_tokenizer):
    s = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, "vicuna", "whole")
    seg = s.segments.tolist()
    assert seg == sorted(seg)  # prompt, reasoning, tag, action, eos in this order
    assert seg[-1] == SEG_EOS and seg[-8:-1] == [SEG_ACTION] * 7
    text_of = lambda code: tokenizer.decode([i for i, g in zip(s.input_ids.tolist(), seg) if g == code])
    assert text_of(SEG_PROMPT).rstrip().endswith("ASSISTANT:")
    assert text_of(SEG_REASONING).strip() == REASONING
    assert text_of(SEG_ACTION_TAG).strip() == "ACTION:"


def test_empty_reasoning(tokenizer, action_tokenizer):
    s = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, "", ACTION, "pure", "reasoning+action")
    assert "Out: ACTION: " in s.text
    assert SEG_REASONING not in s.segments.tolist()
    assert (s.labels != IGNORE_INDEX).sum() == (s.segments >= SEG_ACTION_TAG).sum()


@settings(max_examples=25, deadline=None)
@given(
    action=st.lists(st.floats(-1.5, 1.5, allow_nan=False), min_size=7, max_size=7),
    words=st.lists(st.sampled_from(["move", "left", "grasp", "the", "block", "[1, 2]", "ÿ", "é", "  "]), max_size=12),
    instruction=st.text(alphabet="abcdefgh XYZ", min_size=1, max_size=30),
)
def test_any_action_round_trips(tokenizer, action_tokenizer, action, words, instruction):
    reasoning = "TASK: " + " ".join(words)
    s = build_text_sample(tokenizer, action_tokenizer, instruction, reasoning, action, "pure", "action")
    # The 7 ids before </s> are the OpenVLA action tokens, computed here from the bin definition.
    vocab = action_tokenizer.vocab_size
    expected = vocab - np.digitize(np.clip(action, -1, 1), np.linspace(-1, 1, 256))
    np.testing.assert_array_equal(s.input_ids[-8:-1].numpy(), expected)
    assert s.segments.tolist() == sorted(s.segments.tolist())


def test_broken_round_trip_names_the_tokenizer(tokenizer):
    # Pretend the action ids were ordinary ids: their text does not re-encode to the same ids.
    # (ids 44..299 are byte-fallback and character tokens of the tiny tokenizer.)
    wrong = ActionTokenizer(300, 256)
    with pytest.raises(ValueError, match=type(tokenizer).__name__ + ".*round-trip"):
        build_text_sample(tokenizer, wrong, INSTRUCTION, REASONING, ACTION, "pure")


def test_bad_inputs(tokenizer, action_tokenizer):
    with pytest.raises(ValueError, match="loss mask"):
        build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, "pure", "everything")
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION[:6], "pure")
    with pytest.raises(ValueError, match="max_length"):
        build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, "pure", max_length=10)


def test_collate_pads_right(tokenizer, action_tokenizer):
    a = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, REASONING, ACTION, "pure")
    b = build_text_sample(tokenizer, action_tokenizer, INSTRUCTION, "", ACTION, "pure")
    items = [
        {"input_ids": s.input_ids, "labels": s.labels, "segments": s.segments, "pixel_values": torch.zeros(3, 4, 4), "action": torch.ones(7)}
        for s in (a, b)
    ]
    batch = collate(items, pad_token_id=tokenizer.pad_token_id)
    la, lb = len(a.input_ids), len(b.input_ids)
    assert batch["input_ids"].shape == (2, la) and la > lb
    assert torch.equal(batch["input_ids"][1, :lb], b.input_ids)
    assert (batch["input_ids"][1, lb:] == tokenizer.pad_token_id).all()
    assert (batch["labels"][1, lb:] == IGNORE_INDEX).all()
    assert (batch["segments"][1, lb:] == SEG_PAD).all()
    assert batch["attention_mask"].sum(1).tolist() == [la, lb]
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and batch["action"].shape == (2, 7)


# ----------------------------------------------------------------------------- dropout statistics


def test_tag_dropout_statistics():
    config = SampleConfig(tag_dropout=0.3)
    kept, per_tag = [], {t: 0 for t in REASONING_TAGS}
    n = 2000
    for seed in range(n):
        pairs = split_pairs(apply_dropout(REASONING, config, np.random.default_rng(seed), position=0))
        kept.append(len(pairs))
        for tag, _ in pairs:
            per_tag[tag] += 1
    # 8 tags kept independently with probability 0.7: mean 5.6/8, std of the mean ~0.004
    assert abs(np.mean(kept) / 8 - 0.7) < 0.02
    assert all(abs(c / n - 0.7) < 0.05 for c in per_tag.values()), per_tag  # std ~0.01 per tag
    assert 8 in kept and min(kept) <= 3


def test_tag_dropout_keeps_order_and_values():
    config = SampleConfig(tag_dropout=0.5, exclude_tags=("GRIPPER POSITION:",))
    full = dict(split_pairs(REASONING))
    for seed in range(50):
        pairs = split_pairs(apply_dropout(REASONING, config, np.random.default_rng(seed), 0))
        tags = [t for t, _ in pairs]
        assert "GRIPPER POSITION:" not in tags
        assert tags == [t for t in REASONING_TAGS if t in tags]
        assert all(full[t] == v for t, v in pairs)


def test_no_dropout_is_identity():
    assert apply_dropout(REASONING, SampleConfig(), np.random.default_rng(0), 0) == REASONING
    assert pairs_text(split_pairs(REASONING)) == REASONING


def test_whole_reasoning_dropout_statistics():
    config = SampleConfig(reasoning_dropout=0.5)
    empty = [apply_dropout(REASONING, config, np.random.default_rng(s), 0) == "" for s in range(2000)]
    assert abs(np.mean(empty) - 0.5) < 0.04
    always = SampleConfig(reasoning_dropout=1.0)
    assert apply_dropout(REASONING, always, np.random.default_rng(0), 0) == ""


def test_reasoning_pretraining_switch():
    config = SampleConfig(reasoning_until=10)
    rng = np.random.default_rng(0)
    assert apply_dropout(REASONING, config, rng, 9) == REASONING
    assert apply_dropout(REASONING, config, rng, 10) == ""


def test_sample_config_rejects_bad_values():
    with pytest.raises(ValueError, match="tag_dropout"):
        SampleConfig(tag_dropout=1.5)
    with pytest.raises(ValueError, match="join"):
        SampleConfig(join="shifted")


def test_ignore_index_matches_the_model():
    from ecot.model import IGNORE_INDEX as MODEL_IGNORE_INDEX

    assert IGNORE_INDEX == MODEL_IGNORE_INDEX
