"""Presets and released configs build exactly the released checkpoints' tensors."""

from __future__ import annotations

import json

import pytest
import torch

from ecot.model import VLA, VLAConfig

from .conftest import FIXTURES

CASES = [
    ("ecot-7b-bridge", "ecot7b_siglip_vicuna"),
    ("openvla-7b", "ecot7b_dinosiglip_llama2"),
]


def _manifest(stem: str) -> list[tuple[str, tuple[int, ...], str]]:
    return [(n, tuple(s), d) for n, s, d in json.loads((FIXTURES / f"{stem}_state_dict_manifest.json").read_text())["state_dict"]]


def _meta_state(config: VLAConfig) -> list[tuple[str, tuple[int, ...], str]]:
    model = VLA(config, device="meta", dtype=torch.bfloat16)
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("preset,stem", CASES)
def test_preset_on_meta_has_exactly_the_manifest_tensors(preset, stem):
    ours, ref = _meta_state(VLAConfig.preset(preset)), _manifest(stem)
    assert set(ours) - set(ref) == set(), "extra or differently shaped tensors"
    assert set(ref) - set(ours) == set(), "missing tensors"
    assert ours == ref  # same order as the original state_dict, too


@pytest.mark.parametrize("preset,stem", CASES)
def test_released_config_reads_and_builds_the_same_model(preset, stem):
    file = FIXTURES / f"{stem}_config.json"
    config = VLAConfig.from_pretrained(file)
    assert _meta_state(config) == _manifest(stem)
    preset_cfg = VLAConfig.preset(preset)
    for name in ("vision_backbone_id", "llm_backbone_id", "arch_specifier", "use_fused_vision_backbone",
                 "image_resize_strategy", "image_sizes", "timm_model_ids", "text_config", "pad_token_id"):
        assert getattr(config, name) == getattr(preset_cfg, name), name
    # Unknown keys (auto_map, transformers_version) survive: the file round-trips exactly.
    assert config.to_dict() == json.loads(file.read_text())
    manifest = json.loads((FIXTURES / f"{stem}_state_dict_manifest.json").read_text())
    assert sum(p.numel() for p in VLA(config, device="meta").parameters()) == manifest["total_params"]


@pytest.mark.parametrize("stem", [s for _, s in CASES])
def test_text_config_is_completed_with_llama_defaults(stem):
    llama = VLAConfig.from_pretrained(FIXTURES / f"{stem}_config.json").llama_config()
    assert llama.rms_norm_eps == 1e-6
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads) == (4096, 32, 32)
    assert llama.intermediate_size == 11008 and llama.vocab_size == 32064 and llama.pad_token_id == 32000
    assert llama.max_position_embeddings == 2048 and not llama.tie_word_embeddings


def test_index_fixture_names_the_same_tensors():
    index = json.loads((FIXTURES / "ecot7b_siglip_vicuna.model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == {n for n, _, _ in _manifest("ecot7b_siglip_vicuna")}


@pytest.mark.parametrize("preset,style,channels", [("tiny-siglip", "vicuna", 3), ("tiny-dinosiglip", "pure", 6)])
def test_tiny_presets(preset, style, channels, tmp_path):
    config = VLAConfig.preset(preset)
    assert config.prompt_style == style and config.in_channels == channels
    assert config.num_patches == 64  # 112 px / 14 px patches = 8 x 8
    model = VLA(config)
    assert 3e6 < sum(p.numel() for p in model.parameters()) < 6e6
    config.save_pretrained(tmp_path)
    assert VLAConfig.from_pretrained(tmp_path) == config


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="unknown vision tower 'vit_nope'"):
        VLAConfig.preset("tiny-siglip", timm_model_ids=["vit_nope"])
    with pytest.raises(ValueError, match="use_fused_vision_backbone"):
        VLAConfig.preset("tiny-siglip", use_fused_vision_backbone=True)
    with pytest.raises(ValueError, match="unknown preset"):
        VLAConfig.preset("nope")
    with pytest.raises(ValueError, match="image_resize_strategy"):
        VLAConfig.preset("tiny-siglip", image_resize_strategy="stretch")
