"""Sequence layout, loss alignment and KV-cache generation of the VLA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ecot.model import IGNORE_INDEX, VLA, VLAConfig


@pytest.fixture(scope="module", params=["tiny-siglip", "tiny-dinosiglip"])
def model(request):
    torch.manual_seed(0)
    return VLA(VLAConfig.preset(request.param)).eval()


def _inputs(model, batch=2, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 700, (batch, length), generator=g)
    ids[:, 0] = 1
    pixels = torch.randn(batch, model.config.in_channels, 112, 112, generator=g)
    return ids, pixels


def test_patches_follow_bos(model):
    ids, pixels = _inputs(model)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
        embeds = model.language_model.get_input_embeddings()(ids)
        patches = model.projector(model.vision_backbone(pixels))
        manual = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)
        ref = model.language_model(inputs_embeds=manual)
    p = model.num_patches
    assert out.logits.shape == (2, ids.shape[1] + p, model.language_model.config.vocab_size)
    torch.testing.assert_close(out.logits, ref.logits)


def test_loss_covers_text_positions_only(model):
    ids, pixels = _inputs(model)
    labels = ids.clone()
    labels[0, 3:6] = IGNORE_INDEX
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    p = model.num_patches
    # OpenVLA alignment: logits at position 0 (BOS) predict the first patch slot (ignored); the
    # last patch slot predicts labels[1]; text position j (>=1) predicts labels[j+1].
    full = torch.cat([labels[:, :1], torch.full((2, p), IGNORE_INDEX), labels[:, 1:]], dim=1)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), full[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert int((full[:, 1:] != IGNORE_INDEX).sum()) == 2 * (ids.shape[1] - 1) - 3


def test_generate_with_kv_cache_equals_greedy_without_cache(model):
    ids, pixels = _inputs(model, batch=1, length=9, seed=1)
    with torch.no_grad():
        cached = model.generate(ids, pixels, max_new_tokens=6, do_sample=False, pad_token_id=1024)[0].tolist()
        seq = ids
        plain = []
        for _ in range(6):
            logits = model(input_ids=seq, pixel_values=pixels, use_cache=False).logits
            nxt = int(logits[0, -1].argmax())
            plain.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    assert cached == plain


def test_forward_continues_a_cache_with_text_only(model):
    ids, pixels = _inputs(model, batch=1, length=10, seed=2)
    with torch.no_grad():
        full = model(input_ids=ids, pixel_values=pixels).logits
        prefill = model(input_ids=ids[:, :-1], pixel_values=pixels, use_cache=True)
        step = model(input_ids=ids[:, -1:], past_key_values=prefill.past_key_values, use_cache=True)
        with pytest.raises(ValueError, match="prefill"):
            model(input_ids=ids[:, -1:], pixel_values=pixels, past_key_values=prefill.past_key_values)
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)


def test_bad_pixel_values_are_named(model):
    ids, _ = _inputs(model)
    with pytest.raises(ValueError, match="pixel_values must be"):
        model(input_ids=ids, pixel_values=torch.randn(2, 5, 112, 112))
    with pytest.raises(ValueError, match="112x112"):
        model(input_ids=ids, pixel_values=torch.randn(2, model.config.in_channels, 224, 224))
