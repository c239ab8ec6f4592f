"""Image preprocessing reproduces the documented numbers (docs/formats.md §7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ecot.model import VLAConfig, VLAProcessor
from ecot.model.processor import letterbox_pad

DINO_MEAN = (0.484375, 0.455078125, 0.40625)
DINO_STD = (0.228515625, 0.2236328125, 0.224609375)


def _processor(preset, tokenizer, **overrides):
    return VLAProcessor(VLAConfig.preset(preset, **overrides), tokenizer)


def test_letterbox_pads_with_127_and_normalizes_with_half(tiny_tokenizer):
    proc = _processor("ecot-7b-bridge", tiny_tokenizer, text_config={"vocab_size": 32064})
    image = np.full((120, 200, 3), 10, dtype=np.uint8)  # wide: 40 rows of padding top and bottom
    out = proc.image_transform(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    pad_value = (127 / 255 - 0.5) / 0.5
    image_value = (10 / 255 - 0.5) / 0.5
    # 200x200 after padding, resized to 224: the pad band is 40 * 224/200 = 44.8 rows
    assert torch.allclose(out[:, :40], torch.full((3, 40, 224), pad_value))
    assert torch.allclose(out[:, -40:], torch.full((3, 40, 224), pad_value))
    assert torch.allclose(out[:, 60:160], torch.full((3, 100, 224), image_value))


def test_letterbox_geometry_follows_the_original():
    img = Image.new("RGB", (100, 61), (0, 0, 0))
    padded = letterbox_pad(img)
    assert padded.size == (100, 99)  # int((100 - 61) / 2) = 19 on each side: one short of square
    assert padded.getpixel((0, 0)) == (127, 127, 127) and padded.getpixel((50, 19)) == (0, 0, 0)
    assert padded.getpixel((50, 18)) == (127, 127, 127) and padded.getpixel((50, 80)) == (127, 127, 127)
    assert letterbox_pad(Image.new("RGB", (64, 64))).size == (64, 64)


def test_fused_resize_naive_stacks_dino_and_siglip_channels(tiny_tokenizer):
    proc = _processor("openvla-7b", tiny_tokenizer, text_config={"vocab_size": 32064})
    colour = (200, 100, 50)
    image = np.zeros((60, 300, 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
    out = proc.image_transform(image)
    assert out.shape == (6, 224, 224)
    for c in range(3):
        x = colour[c] / 255
        assert torch.allclose(out[c], torch.full((224, 224), (x - DINO_MEAN[c]) / DINO_STD[c]), atol=1e-6)
        assert torch.allclose(out[3 + c], torch.full((224, 224), (x - 0.5) / 0.5), atol=1e-6)


def test_resize_is_pil_bicubic_and_pil_equals_numpy(tiny_tokenizer, scene_image):
    proc = _processor("tiny-dinosiglip", tiny_tokenizer)
    pil = Image.fromarray(scene_image)
    a, b = proc.image_transform(pil), proc.image_transform(scene_image)
    assert torch.equal(a, b)
    expected = np.asarray(pil.resize((112, 112), Image.BICUBIC), dtype=np.float32) / 255
    torch.testing.assert_close(b[3:], torch.from_numpy((expected - 0.5) / 0.5).permute(2, 0, 1))


def test_batch_call_and_bad_images(tiny_tokenizer, scene_image):
    proc = _processor("tiny-siglip", tiny_tokenizer)
    batch = proc([scene_image, scene_image], text=["In: a", "In: a b c"])
    assert batch["pixel_values"].shape == (2, 3, 112, 112)
    assert batch["input_ids"].shape[0] == 2 and batch["input_ids"][0, 0] == tiny_tokenizer.bos_token_id
    with pytest.raises(ValueError, match="uint8"):
        proc.image_transform(scene_image.astype(np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        proc.image_transform(scene_image[..., 0])


def test_processor_facts_and_files(tiny_tokenizer, tmp_path):
    from .conftest import NORM_STATS

    proc = _processor("tiny-siglip", tiny_tokenizer, norm_stats=NORM_STATS)
    assert proc.prompt_style == "vicuna"
    assert proc.action_tokenizer.vocab_size == tiny_tokenizer.vocab_size == 1024
    assert proc.norm_stats.keys() == ["sim_tabletop"]
    proc.save_pretrained(tmp_path)
    again = VLAProcessor.from_pretrained(tmp_path)
    assert again.prompt_style == "vicuna" and again.norm_stats.keys() == ["sim_tabletop"]
    assert again.tokenizer("TASK: go")["input_ids"] == tiny_tokenizer("TASK: go")["input_ids"]
    assert _processor("tiny-dinosiglip", tiny_tokenizer).prompt_style == "pure"
    with pytest.raises(ValueError, match="does not belong to this model"):
        _processor("tiny-siglip", tiny_tokenizer, text_config={"vocab_size": 1000}, pad_token_id=999)
