"""Locator pre-training (ecot.train.locator_pretrain): it learns, writes its cache, and a restart reuses it."""

from __future__ import annotations

import json

import pytest
import torch

from ecot.train.locator_pretrain import CACHE_NAME, LocatorPretrainConfig, pretrain_locator
from ecot.train.recipes import RunConfig, build_run
from ecot.train.trainer import TrainConfig


def test_pretraining_lowers_the_locator_loss_and_a_restart_reuses_it(annotated_sim, tmp_path):
    _, data, annotations = annotated_sim
    run = RunConfig(data=str(data), out=str(tmp_path / "run"), features=str(annotations), locator=True,
                    tokenizer_numbers="whole", locator_pretrain_steps=0, train=TrainConfig(max_steps=1, batch_size=2))
    model, _, train, held_out, _ = build_run(run)
    figures = pretrain_locator(model, train, run.out, LocatorPretrainConfig(steps=40, batch_size=8), eval_data=held_out,
                               progress=False)
    assert figures["loss_last"] < figures["loss_first"] / 2
    assert (tmp_path / "run" / CACHE_NAME).is_file()
    assert json.loads((tmp_path / "run" / "locator_pretrain.json").read_text())["steps"] == 40
    trained = {k: v.clone() for k, v in model.locator.state_dict().items()}

    fresh, _, train2, _, _ = build_run(run)
    assert not torch.equal(fresh.locator.head.weight, trained["head.weight"])
    again = pretrain_locator(fresh, train2, run.out, LocatorPretrainConfig(steps=40, batch_size=8), progress=False)
    assert again == figures
    for k, v in fresh.locator.state_dict().items():
        torch.testing.assert_close(v, trained[k])


def test_pretraining_needs_a_locator(annotated_sim, tmp_path):
    _, data, annotations = annotated_sim
    model, _, train, _, _ = build_run(RunConfig(data=str(data), out=str(tmp_path / "r"), features=str(annotations),
                                                train=TrainConfig(max_steps=1, batch_size=2)))
    with pytest.raises(ValueError, match="--locator"):
        pretrain_locator(model, train, tmp_path / "r", progress=False)
