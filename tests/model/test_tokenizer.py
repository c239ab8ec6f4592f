"""The tiny Llama-like tokenizer: specials, action ids at the end of the base vocabulary, round trips."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecot.model.tokenizer import ACTION_CHAR_BASE

ACTION_IDS = st.lists(st.integers(768, 1023), min_size=1, max_size=10)
# Ordinary text: anything but the private-use planes 15-16 that hold the action characters, and
# "▁" itself (the word-boundary marker decodes as a space, as with Llama's SentencePiece).
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581", max_codepoint=ACTION_CHAR_BASE - 1),
    max_size=60,
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_llama_like_specials(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.vocab_size == 1024 and len(tok) == 1025
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 1024)
    assert tok.pad_token == "<PAD>"
    ids = tok("In: go\nOut: TASK: x</s>")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2 and ids.count(1) == 1
    assert tok("In: go")["input_ids"][0] == 1 and 2 not in tok("In: go")["input_ids"]  # BOS added, no EOS added


@SETTINGS
@given(ids=ACTION_IDS)
def test_action_ids_round_trip_alone_and_in_training_text(tiny_tokenizer, ids):
    tok = tiny_tokenizer
    text = tok.decode(ids)
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    full = tok("TASK: move up. ACTION: " + text + "</s>")["input_ids"]
    assert full[-len(ids) - 1 :] == ids + [tok.eos_token_id]


@SETTINGS
@given(text=TEXT)
def test_ordinary_text_never_yields_action_ids_and_round_trips(tiny_tokenizer, text):
    tok = tiny_tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert all(i < 1024 - 256 for i in ids)
    # Like Llama's fast tokenizer, decoding drops one leading space (the word-boundary marker).
    assert tok.decode(ids) == (text[1:] if text.startswith(" ") else text)


def test_saved_tokenizer_reloads_identically(tiny_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tiny_tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    sample = "A chat. USER: What action should the robot take to pick? ASSISTANT: TASK: x ACTION: " + tiny_tokenizer.decode([800, 900])
    assert again(sample)["input_ids"] == tiny_tokenizer(sample)["input_ids"]
    assert again.vocab_size == 1024 and again.pad_token_id == 1024


def test_whole_numbers_make_each_coordinate_one_token_wherever_it_stands():
    """``numbers="whole"``: the same text, but a coordinate is one token, the same in every position
    (the default BPE merges digits with brackets and commas: "▁[48," vs "▁6" "5],")."""
    import pytest

    from ecot.model.tokenizer import train_tiny_tokenizer

    from .conftest import corpus

    texts = corpus() + ["VISIBLE OBJECTS: the red block [48, 53, 56, 65], the cup [85, 68, 98, 82] "
                        "GRIPPER POSITION: [40, 81, 41, 74, 41, 68]"]
    whole = train_tiny_tokenizer(texts, vocab_size=1024, numbers="whole")
    bpe = train_tiny_tokenizer(texts, vocab_size=1024)
    for n in range(99):  # every value up to the largest number in the corpus, even absent ones
        assert str(n) in whole.tokenize(f"[{n}, {n}]")
    sample = "GRIPPER POSITION: [65, 48, 7, 65] ACTION: " + whole.decode([800, 900])
    pieces = whole.tokenize(sample)
    assert pieces.count("65") == 2 and "48" in pieces and "7" in pieces
    assert whole.decode(whole(sample, add_special_tokens=False)["input_ids"]) == sample
    assert whole(sample)["input_ids"][-2:] == [800, 900]  # the action ids are untouched
    assert bpe.tokenize(sample).count("65") < 2  # what "whole" changes
    with pytest.raises(ValueError, match="numbers must be one of"):
        train_tiny_tokenizer(texts, numbers="digits")


def test_numeric_embeddings_say_which_number_a_token_is():
    import torch

    from ecot.model.config import VLAConfig
    from ecot.model.tokenizer import init_numeric_embeddings, number_token_ids_of, train_tiny_tokenizer
    from ecot.model.vla import VLA

    tok = train_tiny_tokenizer(["the red block [3, 40, 111, 7]"], vocab_size=1024, numbers="whole")
    torch.manual_seed(0)
    model = VLA(VLAConfig.preset("tiny-siglip"))
    emb_in = model.language_model.get_input_embeddings().weight
    other = tok.convert_tokens_to_ids("▁red")
    before = emb_in[other].clone()
    assert init_numeric_embeddings(model, tok, largest=111, features=64) == 112
    ids = number_token_ids_of(tok, 111)
    for table in (emb_in, model.language_model.get_output_embeddings().weight):
        feats = table[[ids[v] for v in range(112)], :64]
        near = torch.cosine_similarity(feats[40], feats[41], dim=0)
        far = torch.cosine_similarity(feats[40], feats[100], dim=0)
        assert near > 0.6 and far < 0.2
        assert torch.all(feats[1:, 0] > feats[:-1, 0])  # the ramp: larger numbers, larger first feature
        assert len({tuple(r.tolist()) for r in feats}) == 112  # every value distinct
        assert abs(float(feats.std()) / float(table.std()) - 1) < 0.5  # the scale of the other embeddings
    torch.testing.assert_close(emb_in[other], before)  # other tokens keep their random start
