"""Checkpoint directories: exact round trip, strict loading with named errors, dtype, quantization guard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ecot.model import VLA, CheckpointError, VLAConfig, VLAProcessor
from ecot.model.checkpoint import INDEX_FILE


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _shard_of(directory: Path, name: str) -> Path:
    return directory / json.loads((directory / INDEX_FILE).read_text())["weight_map"][name]


def _logits(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 700, (1, 10), generator=g)
    ids[:, 0] = 1
    pixels = torch.randn(1, model.config.in_channels, 112, 112, generator=g)
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits


@pytest.mark.parametrize("preset", ["tiny-siglip", "tiny-dinosiglip"])
def test_save_and_reload_gives_identical_logits(preset, tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    model = VLA(VLAConfig.preset(preset)).eval()
    model.processor = VLAProcessor(model.config, tiny_tokenizer)
    model.save_pretrained(tmp_path, max_shard_size="3MB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and not (tmp_path / ".saving").exists()
    assert (tmp_path / "config.json").is_file() and (tmp_path / "tokenizer.json").is_file()

    loaded = VLA.from_pretrained(tmp_path, progress=False)
    assert torch.equal(_logits(model), _logits(loaded))
    assert loaded.config == model.config
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))
    assert loaded.processor is not None and loaded.processor.tokenizer("ACTION:")["input_ids"] == tiny_tokenizer("ACTION:")["input_ids"]
    # saving the loaded model again writes the same tensors
    again = tmp_path / "again"
    loaded.save_pretrained(again, max_shard_size="3MB")
    a = {k: v for s in shards for k, v in load_file(tmp_path / s).items()}
    b = {k: v for s in sorted(again.glob("model-*.safetensors")) for k, v in load_file(s).items()}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dtype_and_device_options(tiny_checkpoint):
    model = VLA.from_pretrained(tiny_checkpoint, dtype="bfloat16", device="cpu", progress=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.device.type == "cpu"
    with pytest.raises(ValueError, match="unknown dtype"):
        VLA.from_pretrained(tiny_checkpoint, dtype="float7", progress=False)


def test_missing_key_is_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    name = "projector.fc2.bias"
    shard = _shard_of(ckpt, name)
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard)
    index = json.loads((ckpt / INDEX_FILE).read_text())
    del index["weight_map"][name]
    (ckpt / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\):\s+projector\.fc2\.bias"):
        VLA.from_pretrained(ckpt, progress=False)


def test_key_listed_in_index_but_absent_from_shard_is_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    name = "language_model.model.norm.weight"
    shard = _shard_of(ckpt, name)
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, shard)
    with pytest.raises(CheckpointError, match=r"not in their shard:\s+language_model\.model\.norm\.weight"):
        VLA.from_pretrained(ckpt, progress=False)


def test_wrong_shape_and_unexpected_key_are_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    name = "vision_backbone.featurizer.pos_embed"
    shard = _shard_of(ckpt, name)
    tensors = load_file(shard)
    tensors[name] = torch.zeros(1, 256, 64)
    tensors["vision_backbone.featurizer.head.weight"] = torch.zeros(3)
    save_file(tensors, shard)
    index = json.loads((ckpt / INDEX_FILE).read_text())
    index["weight_map"]["vision_backbone.featurizer.head.weight"] = shard.name
    (ckpt / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as err:
        VLA.from_pretrained(ckpt, progress=False)
    message = str(err.value)
    assert "vision_backbone.featurizer.pos_embed: checkpoint [1, 256, 64], model [1, 64, 64]" in message
    assert "unexpected keys (1):\n  vision_backbone.featurizer.head.weight" in message


def test_truncated_shard_is_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    shard = sorted(ckpt.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"shard {shard.name} is truncated or corrupt"):
        VLA.from_pretrained(ckpt, progress=False)
    shard.write_bytes(b"\x05")
    with pytest.raises(CheckpointError, match=f"shard {shard.name} is truncated or corrupt"):
        VLA.from_pretrained(ckpt, progress=False)


def test_missing_shard_file_and_missing_weights_are_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    shard = sorted(ckpt.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"missing:\\s+{shard.name}"):
        VLA.from_pretrained(ckpt, progress=False)
    for f in ckpt.glob("model*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no weights in"):
        VLA.from_pretrained(ckpt, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        VLA.from_pretrained(tmp_path / "does" / "not" / "exist", progress=False)


def test_single_file_checkpoint_loads(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path / "ckpt")
    merged = {}
    for shard in sorted(ckpt.glob("model-*.safetensors")):
        merged.update(load_file(shard))
        shard.unlink()
    (ckpt / INDEX_FILE).unlink()
    save_file(merged, ckpt / "model.safetensors")
    a = VLA.from_pretrained(tiny_checkpoint, progress=False)
    b = VLA.from_pretrained(ckpt, progress=False)
    assert torch.equal(_logits(a), _logits(b))


def test_quantized_loading_needs_bitsandbytes(tiny_checkpoint):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="bitsandbytes"):
            VLA.from_pretrained(tiny_checkpoint, load_in_4bit=True, progress=False)
    else:
        pytest.skip("bitsandbytes is installed; the 4-bit path needs a CUDA GPU to test")


def test_saved_config_records_the_weights_dtype(tiny_checkpoint, tmp_path):
    model = VLA.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16, progress=False)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["torch_dtype"] == "bfloat16" and saved["text_config"]["torch_dtype"] == "bfloat16"
    assert json.loads((tiny_checkpoint / "config.json").read_text())["torch_dtype"] == "float32"
    assert {p.dtype for p in VLA.from_pretrained(tmp_path, progress=False).parameters()} == {torch.bfloat16}
