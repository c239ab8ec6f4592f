"""`ecot train` end to end on built-in sim data, and the recipes' samples."""

from __future__ import annotations

import re

import json
from pathlib import Path

import numpy as np
import pytest

from ecot.cli import main
from ecot.train import checkpoint as ckpt
from ecot.train.recipes import RunConfig, build_run, split_episodes
from ecot.train.samples import SEG_REASONING
from ecot.train.trainer import TrainConfig


@pytest.fixture
def sim_data(annotated_sim):
    """3 episodes (all families, 32 px) collected and annotated by the CLI (tests/conftest.py, shared read-only)."""
    _, data, annotations = annotated_sim
    return data, annotations


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ecot_train_cli_runs_resumes_and_finetunes(sim_data, tmp_path, capsys):
    from ecot.model.vla import VLA

    data, annotations = sim_data
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--features", str(annotations), "--model", "tiny-siglip", "--out", str(run),
            "--batch-size", "2", "--log-every", "1", "--no-progress"]
    assert main(args + ["--max-steps", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"eval/reasoning_loss", "eval/action_accuracy", "eval/action_l1"} <= set(printed)
    assert ckpt.list_checkpoints(run)[-1][0] == 2
    model = VLA.from_pretrained(run / "final", progress=False)
    assert list(model.config.norm_stats) == ["ecot_sim"]

    # Same command with more steps: continues from the checkpoint.
    assert main(args + ["--max-steps", "3"]) == 0
    steps = [r["step"] for r in _rows(run) if "train/loss" in r]
    assert steps == [1, 2, 3]

    # Fine-tune the result with LoRA on the same data.
    ft = tmp_path / "ft"
    assert main(["train", "--data", str(data), "--features", str(annotations), "--model", str(run / "final"), "--out", str(ft),
                 "--finetune", "lora", "--lora-rank", "4", "--max-steps", "1", "--batch-size", "2", "--no-progress"]) == 0
    tuned = VLA.from_pretrained(ft / "final", progress=False)
    assert tuned.config.norm_stats == model.config.norm_stats


def _run(sim_data, tmp_path, recipe, **kw) -> RunConfig:
    data, annotations = sim_data
    return RunConfig(data=str(data), out=str(tmp_path / recipe), recipe=recipe, features=str(annotations),
                     train=TrainConfig(max_steps=10, batch_size=2), **kw)


def _has_reasoning(dataset, key) -> bool:
    return bool((dataset[key]["segments"] == SEG_REASONING).any())


def test_recipes_build_their_samples(sim_data, tmp_path):
    _, _, train, held_out, _ = build_run(_run(sim_data, tmp_path, "ecot"))
    assert all(_has_reasoning(train, (i, i, 0)) for i in range(0, len(train), 7))
    assert len(held_out) > 0 and _has_reasoning(held_out, (0, 0, 0))

    _, _, train, held_out, _ = build_run(_run(sim_data, tmp_path, "no-reasoning"))
    assert not any(_has_reasoning(train, (i, i, 0)) for i in range(0, len(train), 7))
    assert not _has_reasoning(held_out, (0, 0, 0))

    _, _, train, _, _ = build_run(_run(sim_data, tmp_path, "reasoning-dropout"))
    with_reasoning = [_has_reasoning(train, (i % len(train), seed, 0)) for i, seed in enumerate(range(200))]
    assert 0.35 < np.mean(with_reasoning) < 0.65

    # Pre-training: reasoning for the first half of the 10 steps x 2 samples, none after.
    _, _, train, _, _ = build_run(_run(sim_data, tmp_path, "reasoning-pretrain"))
    assert train.config.reasoning_until == 10
    assert _has_reasoning(train, (0, 0, 9)) and not _has_reasoning(train, (0, 0, 10))

    _, _, train, _, _ = build_run(_run(sim_data, tmp_path, "ecot", loss_mask="action"))
    sample = train[(0, 0, 0)]
    assert int((sample["labels"] != -100).sum()) == 8


def test_tokenizer_numbers_whole_writes_every_coordinate_as_one_token(sim_data, tmp_path):
    _, processor, train, _, _ = build_run(_run(sim_data, tmp_path, "ecot", tokenizer_numbers="whole"))
    ids = train[(0, 0, 0)]["input_ids"].tolist()
    text = processor.tokenizer.decode(ids, skip_special_tokens=True)
    numbers = re.findall(r"[0-9]+", text.split("VISIBLE OBJECTS:")[1])  # boxes and gripper points
    pieces = [p for p in processor.tokenizer.convert_ids_to_tokens(ids) if any(c.isdigit() for c in p)]
    assert len(numbers) >= 8 and pieces[-len(numbers):] == numbers  # each number one token, nothing glued to it
    with pytest.raises(ValueError, match="tokenizer_numbers"):
        _run(sim_data, tmp_path, "ecot", tokenizer_numbers="digits")


def test_clear_errors(sim_data, tmp_path):
    data, _ = sim_data
    with pytest.raises(FileNotFoundError, match="ecot annotate"):
        build_run(RunConfig(data=str(data), out=str(tmp_path / "x"), recipe="ecot"))
    with pytest.raises(ValueError, match="unknown recipe"):
        RunConfig(data=str(data), out=str(tmp_path / "x"), recipe="cot")
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        build_run(RunConfig(data=str(data), out=str(tmp_path / "x"), recipe="no-reasoning", model="tiny-nothing"))
    with pytest.raises(ValueError, match="at least one must remain"):
        split_episodes(3, 3)
    assert split_episodes(1, None) == ([0], [])
    assert split_episodes(20, None) == (list(range(18)), [18, 19])


def test_locator_trains_from_the_annotations_boxes_also_without_reasoning(sim_data, tmp_path, capsys):
    from ecot.model.locator import CONFIG_KEY
    from ecot.model.vla import VLA

    data, annotations = sim_data
    for recipe in ("ecot", "no-reasoning"):
        run = tmp_path / recipe
        assert main(["train", "--data", str(data), "--features", str(annotations), "--recipe", recipe, "--locator",
                     "--tokenizer-numbers", "whole", "--out", str(run), "--max-steps", "2", "--batch-size", "2",
                     "--log-every", "1", "--no-progress"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["eval/locator_loss"] > 0
        assert all(r["train/locator_loss"] > 0 for r in _rows(run) if "train/loss" in r)
        model = VLA.from_pretrained(run / "final", progress=False)
        spec = model.config.locator
        assert spec.frame_size == 32 and {"red", "block"} & set(spec.words)  # the annotations' 32-px frame, words
        assert model.num_patches == 64 + spec.num_tokens
        assert CONFIG_KEY in json.loads((run / "final" / "config.json").read_text())
        assert spec.relations is False and model.locator.relation is None  # --locator-relations is opt-in
    model, _, _, _, _ = build_run(_run(sim_data, tmp_path / "relations", "ecot", locator=True, locator_relations=True,
                                       tokenizer_numbers="whole"))
    assert model.config.locator.relations is True and model.locator.relation is not None
    # the targets are the frame's boxes from the annotations, scaled to the model's pixels
    _, processor, train, _, _ = build_run(_run(sim_data, tmp_path, "ecot", locator=True, tokenizer_numbers="whole"))
    sample = train[(0, 0, 0)]
    items, point = train.locator_targets.get(train.steps.get(0))
    assert items and point is not None
    scale = processor.config.image_size / 32
    np.testing.assert_allclose(sample["locator_objects"][0, :4].numpy(), np.array(items[0][1]) * scale, rtol=1e-6)
    np.testing.assert_allclose(sample["locator_gripper"][:2].numpy(), np.array(point) * scale, rtol=1e-6)


def test_locator_refuses_what_it_cannot_use(sim_data, tmp_path):
    with pytest.raises(ValueError, match="--tokenizer-numbers whole"):
        _run(sim_data, tmp_path, "ecot", locator=True)
    with pytest.raises(ValueError, match="--augment"):
        _run(sim_data, tmp_path, "ecot", locator=True, tokenizer_numbers="whole", augment=True)
    with pytest.raises(ValueError, match="preset"):
        _run(sim_data, tmp_path, "ecot", locator=True, tokenizer_numbers="whole", model=str(tmp_path))
    with pytest.raises(ValueError, match="--locator-relations .* needs --locator"):
        _run(sim_data, tmp_path, "ecot", locator_relations=True, tokenizer_numbers="whole")
    data, _ = sim_data
    with pytest.raises(FileNotFoundError, match="--features"):
        build_run(RunConfig(data=str(data), out=str(tmp_path / "nf"), recipe="no-reasoning", locator=True,
                            tokenizer_numbers="whole"))


def test_numeric_embeddings_option(sim_data, tmp_path):
    import torch

    model, processor, _, _, _ = build_run(_run(sim_data, tmp_path, "ecot", tokenizer_numbers="whole",
                                               numeric_embeddings=True))
    emb = model.language_model.get_input_embeddings().weight
    ids = [processor.tokenizer.convert_tokens_to_ids(str(v)) for v in (10, 11, 25)]
    assert torch.cosine_similarity(emb[ids[0], :8], emb[ids[1], :8], dim=0) > 0.6
    with pytest.raises(ValueError, match="--tokenizer-numbers whole"):
        _run(sim_data, tmp_path, "ecot", numeric_embeddings=True)


def test_move_head_trains_on_the_annotations_before_the_language_model_and_is_cached(sim_data, tmp_path):
    from ecot.reasoning import Reasoning

    with pytest.raises(ValueError, match="--move-head builds on the locator"):
        _run(sim_data, tmp_path, "ecot", move_head=True, tokenizer_numbers="whole")
    with pytest.raises(ValueError, match="no-reasoning trains no chain"):
        _run(sim_data, tmp_path, "no-reasoning", locator=True, move_head=True, tokenizer_numbers="whole")
    config = _run(sim_data, tmp_path, "ecot", locator=True, tokenizer_numbers="whole", move_head=True,
                  move_head_steps=300, locator_pretrain_steps=0)
    model, _, train, _, _ = build_run(config)
    head = model.move_head
    figures = json.loads((tmp_path / "ecot" / "move_head.json").read_text())
    moves = [Reasoning.parse(train.reasoning_text(train.steps.get(i))).move for i in range(len(train.steps))]
    assert figures["frames"] == sum(bool(m) for m in moves) and set(head.spec.moves) == {m for m in moves if m}
    assert figures["loss_last"] < figures["loss_first"]
    again, _, _, _, _ = build_run(config)  # a restarted run loads it instead of training it again
    torch_close = all(bool((a == b).all()) for a, b in zip(again.move_head.parameters(), head.parameters()))
    assert torch_close and again.config.extra["ecot_move_head"] == model.config.extra["ecot_move_head"]
