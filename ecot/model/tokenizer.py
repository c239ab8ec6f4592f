"""A tiny Llama-like tokenizer for CPU models, trained with the ``tokenizers`` library.

It behaves like the Llama SentencePiece tokenizer of the released checkpoints where it matters:

* ids 0, 1, 2 are ``<unk>``, ``<s>`` (BOS, added automatically), ``</s>`` (EOS, recognized in text);
* SentencePiece-style ``▁`` word boundaries with byte fallback (any text encodes, no ``<unk>``);
* ``<PAD>`` is added after the base vocabulary (id == ``vocab_size``, like Llama's 32000);
* the last ``n_action_bins`` ids of the base vocabulary are the action tokens (docs/formats.md §5).

Unlike Llama (whose action ids are ordinary rare characters that do not always re-encode to
themselves), each action id here is one private-use character registered as an added token:
ordinary text never produces one, and ``decode(action_ids)`` re-encodes to the same ids, also
inside ``"... ACTION: " + decode(ids) + "</s>"``.
"""

from __future__ import annotations

from typing import Iterable

# Action id (vocab_size - n_bins + k) is the character ACTION_CHAR_BASE + k (Supplementary
# Private Use Area-A, which ordinary text does not use).
ACTION_CHAR_BASE = 0xF0000
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
PAD_TOKEN = "<PAD>"


def action_char(k: int) -> str:
    return chr(ACTION_CHAR_BASE + k)


NUMBER_STYLES = ("bpe", "whole")


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024, n_action_bins: int = 256,
                         numbers: str = "bpe"):
    """Train a BPE tokenizer on ``texts``; returns a ``transformers.PreTrainedTokenizerFast``.

    The base vocabulary has exactly ``vocab_size`` ids: 3 specials, 256 byte-fallback tokens,
    the learned characters and merges, unused filler if the corpus is small, and the
    ``n_action_bins`` action tokens at the end.

    ``numbers``: "bpe" lets digits merge with their neighbours like any other characters, so one
    coordinate is written with different tokens in different places ("▁[48," but "▁6" "5],").
    "whole" splits every run of digits off into a pre-token of its own, and the merges of every
    integer from 0 to the largest one in ``texts`` come first, so a pixel coordinate is one token
    and the same token wherever it stands (the text, and so the format, is unchanged; only its
    tokenization differs).
    """
    if numbers not in NUMBER_STYLES:
        raise ValueError(f"numbers must be one of {NUMBER_STYLES}, got {numbers!r}")
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    n_bytes = 256
    learnable = vocab_size - n_action_bins
    if learnable < len(SPECIAL_TOKENS) + n_bytes + 16:
        raise ValueError(
            f"vocab_size {vocab_size} leaves too little room: it must hold 3 specials, 256 byte tokens, "
            f"at least 16 learned tokens and the {n_action_bins} action tokens"
        )
    byte_tokens = [f"<0x{b:02X}>" for b in range(n_bytes)]
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    if numbers == "whole":
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizer, pre_tokenizers.Digits(individual_digits=False)])

    # 1) learn merges on the corpus (action characters are never part of it)
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=learnable,
        special_tokens=list(SPECIAL_TOKENS) + byte_tokens,
        show_progress=False,
        limit_alphabet=learnable - len(SPECIAL_TOKENS) - n_bytes,
    )
    corpus = [t for t in texts if t]
    if not corpus:
        raise ValueError("train_tiny_tokenizer needs at least one non-empty text")
    if numbers == "whole":  # every coordinate value gets its merges, also values the corpus lacks
        import re

        largest = max((int(m) for t in corpus for m in re.findall(r"[0-9]{1,4}", t)), default=0)
        corpus += [" ".join(str(n) for n in range(largest + 1))] * 1000  # frequent: merged before words
    trainer_tok.train_from_iterator(corpus, trainer=trainer)
    vocab = dict(sorted(trainer_tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1]))
    merges = _merges_of(trainer_tok)

    # 2) the final vocabulary: learned ids, unused filler, then the action tokens at the end
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise RuntimeError("trained vocabulary ids are not contiguous")
    for k in range(len(vocab), learnable):
        vocab[f"<unused_{k}>"] = k  # no merge produces these: never emitted
    for k in range(n_action_bins):
        vocab[action_char(k)] = learnable + k

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    # Action characters as (non-special) added tokens: matched whole in any text, ids unchanged.
    tokenizer.add_tokens([AddedToken(action_char(k), normalized=False, special=False) for k in range(n_action_bins)])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tokenizer.add_special_tokens([AddedToken(PAD_TOKEN, normalized=False, special=True)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    if tokenizer.token_to_id(PAD_TOKEN) != vocab_size or tokenizer.get_vocab_size(with_added_tokens=False) != vocab_size:
        raise RuntimeError("tiny tokenizer layout is wrong: <PAD> must follow the base vocabulary")

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token=PAD_TOKEN,
        padding_side="right",
        model_max_length=2048,
        add_bos_token=True,
        add_eos_token=False,
    )
    return fast


def _merges_of(tokenizer) -> list[tuple[str, str]]:
    import json

    model = json.loads(tokenizer.to_str())["model"]
    merges = model.get("merges", [])
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def number_token_ids_of(tokenizer, largest: int) -> dict[int, int]:
    """``{value: token id}`` for the values 0..largest that are one token of their own (``numbers="whole"``)."""
    out = {}
    for v in range(largest + 1):
        token = tokenizer.convert_tokens_to_ids(str(v))
        if token is not None and token != tokenizer.unk_token_id:
            out[v] = int(token)
    return out


def largest_whole_number(tokenizer) -> int:
    """The largest integer that is one token of the tokenizer (its "whole" number tokens are 0..this)."""
    vocab = tokenizer.get_vocab()
    v = 0
    while str(v + 1) in vocab:
        v += 1
    return v


def init_numeric_embeddings(model, tokenizer, largest: int | None = None, features: int = 64) -> int:
    """Give the number tokens 0..largest embeddings that say which number they are.

    A tiny model from scratch starts with unrelated random vectors for "57" and "58", and in a CPU
    budget never learns their order, so it cannot compare a gripper coordinate with a box edge
    (docs/quality.md, tenth round). Here the first ``features`` dimensions of each number token's
    input and output embedding hold a ramp and sines and cosines of the value (low to high
    frequency, so near values are near and every value is distinct), at the scale of the other
    embeddings; the other dimensions keep their random start. ``largest``: by default the tokenizer's
    largest one-token number. Returns how many tokens it set."""
    import math

    import torch

    if largest is None:
        largest = largest_whole_number(tokenizer)
    ids = number_token_ids_of(tokenizer, largest)
    if not ids:
        return 0
    tables = [model.language_model.get_input_embeddings().weight]
    out = model.language_model.get_output_embeddings()
    if out is not None and out.weight is not tables[0]:
        tables.append(out.weight)
    # Frequencies up to largest / 4 half-turns over the range: neighbours stay alike (a quarter turn apart at most).
    top = max(1, largest // 4)
    k = min(features, tables[0].shape[1], 1 + 2 * top)
    with torch.no_grad():
        values = torch.tensor(sorted(ids), dtype=torch.float32)
        x = values / max(largest, 1)
        cols = [2 * x - 1]
        f = 1
        while len(cols) < k:
            cols.append(torch.sin(math.pi * f * x))
            if len(cols) < k:
                cols.append(torch.cos(math.pi * f * x))
            f += 1
        feats = torch.stack(cols[:k], dim=1)
        rows = torch.tensor([ids[int(v)] for v in values.tolist()], dtype=torch.long)
        for table in tables:
            scale = float(table.std())
            block = feats * scale * math.sqrt(2.0)
            table[rows, :k] = block.to(table.dtype)
    return len(ids)
