"""`ecot model init` writes a usable tiny checkpoint; `ecot model info` describes it."""

from __future__ import annotations

import json

from ecot.cli import main


def test_init_then_info_then_load(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["model", "init", "--preset", "tiny-dinosiglip", "--out", str(out), "--max-shard-size", "5MB"]) == 0
    capsys.readouterr()
    assert main(["model", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["prompt_style"] == "pure" and info["num_patches"] == 64 and len(info["shards"]) >= 2
    from ecot.model import VLA

    model = VLA.from_pretrained(out, progress=False)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert model.processor is not None and model.processor.tokenizer.vocab_size == 1024


def test_init_refuses_7b_without_flag(tmp_path):
    assert main(["model", "init", "--preset", "openvla-7b", "--out", str(tmp_path / "x")]) == 2
