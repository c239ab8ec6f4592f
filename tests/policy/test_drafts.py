"""Drafts: each step checks the previous step's ids in one forward; the choices must not change."""

from __future__ import annotations

import random

import pytest
import torch

from ecot.model import VLA, VLAConfig
from ecot.policy import ECoTPolicy

from tiny_policy import NORM_STATS, SCENES, scene_image


@pytest.fixture(scope="module")
def trained(trained_checkpoint):
    return VLA.from_pretrained(trained_checkpoint, progress=False)


def _random_model(trained, seed: int) -> VLA:
    torch.manual_seed(seed)
    model = VLA(VLAConfig.preset("tiny-siglip", norm_stats=NORM_STATS)).eval()
    model.processor = trained.processor
    return model


def _request(policy: ECoTPolicy, scene: int, noise_seed: int, draft=None):
    image = policy.processor.image_transform(scene_image(scene, noise_seed=noise_seed))
    request = policy._request(image, SCENES[scene]["instruction"], 0, "", {})
    request.draft = draft
    return request


def _run(policy: ECoTPolicy, steps: list[tuple[int, int]]):
    return [policy.step(scene_image(i, noise_seed=seed), SCENES[i]["instruction"]) for i, seed in steps]


@pytest.mark.parametrize("mode", ["full", "reuse", "no-reasoning"])
def test_steps_with_drafts_choose_the_ids_of_steps_without(trained, mode):
    # Scene 0 three times (its text repeats: the draft is taken), then scene 1 (the draft is wrong from
    # the first field on) and scene 1 again.
    steps = [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5)]
    with_drafts = _run(ECoTPolicy(trained, mode=mode, reuse_steps=2), steps)
    without = _run(ECoTPolicy(trained, mode=mode, reuse_steps=2, draft=False), steps)
    for a, b in zip(with_drafts, without):
        assert a.text == b.text and a.action_ids == b.action_ids
        assert a.timings["tokens_decoded"] == b.timings["tokens_decoded"]
        assert b.timings["tokens_from_draft"] == 0
    assert with_drafts[0].timings["tokens_from_draft"] == 0  # nothing to draw on at the first step
    repeated = with_drafts[1]
    assert repeated.timings["tokens_from_draft"] >= repeated.timings["tokens_decoded"] // 2
    assert repeated.timings["forwards"] < without[1].timings["forwards"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_weights_choose_the_same_ids_with_and_without_drafts(trained, seed):
    """Random weights write arbitrary text that drifts from step to step: drafts match in parts only."""
    model = _random_model(trained, seed)
    steps = [(k % 3, 10 + k) for k in range(6)]
    with_drafts = _run(ECoTPolicy(model, budgets={"VISIBLE OBJECTS:": 40, "PLAN:": 40}), steps)
    without = _run(ECoTPolicy(model, budgets={"VISIBLE OBJECTS:": 40, "PLAN:": 40}, draft=False), steps)
    for a, b in zip(with_drafts, without):
        assert a.text == b.text and a.action_ids == b.action_ids
        assert a.reasoning.problems == []


def test_a_wrong_draft_changes_nothing(trained):
    policy = ECoTPolicy(trained, draft=False)
    plain = policy.decoder.decode([_request(policy, 0, 1)])[0]
    rng = random.Random(0)
    other = policy.decoder.decode([_request(policy, 2, 1)])[0].ids
    for draft in ([rng.randrange(1000) for _ in range(300)], other, plain.ids[:40] + other[40:]):
        result = policy.decoder.decode([_request(policy, 0, 1, draft=draft)])[0]
        assert result.answer == plain.answer and result.action_ids == plain.action_ids


def test_the_exact_answer_as_draft_costs_a_few_forwards(trained):
    policy = ECoTPolicy(trained, draft=False)
    plain = policy.decoder.decode([_request(policy, 1, 1)])[0]
    drafted = policy.decoder.decode([_request(policy, 1, 1, draft=plain.ids)])[0]
    assert drafted.answer == plain.answer and drafted.action_ids == plain.action_ids
    assert drafted.tokens_generated == plain.tokens_generated
    assert drafted.tokens_from_draft >= 0.8 * plain.tokens_generated
    assert drafted.forwards * 4 <= plain.forwards


def test_batched_steps_with_drafts_equal_single_steps(trained):
    images = [scene_image(i, noise_seed=3) for i in range(3)]
    instructions = [s["instruction"] for s in SCENES]
    batched = ECoTPolicy(trained, mode="reuse", reuse_steps=2)
    singles = [ECoTPolicy(trained, mode="reuse", reuse_steps=2) for _ in range(3)]
    for _ in range(3):
        outs = batched.step_batch(images, instructions)
        for i, out in enumerate(outs):
            single = singles[i].step(images[i], instructions[i])
            assert out.text == single.text and out.action_ids == single.action_ids
    assert sum(o.timings["tokens_from_draft"] for o in outs) > 0


def test_reset_forgets_the_draft(trained):
    policy = ECoTPolicy(trained)
    _run(policy, [(0, 1)])
    assert _run(policy, [(0, 2)])[0].timings["tokens_from_draft"] > 0
    policy.reset()
    assert _run(policy, [(0, 3)])[0].timings["tokens_from_draft"] == 0


def test_drafts_with_the_static_step_choose_the_eager_ids(trained):
    """The compiled path's static one-id step (uncompiled here: backend "none") and the eager draft
    forwards share one cache: the ids are those of eager decoding without drafts."""
    steps = [(2, 1), (2, 2), (0, 3), (0, 4)]
    static = _run(ECoTPolicy(trained, mode="reuse", reuse_steps=2, compile="none"), steps)
    eager = _run(ECoTPolicy(trained, mode="reuse", reuse_steps=2, draft=False), steps)
    for a, b in zip(static, eager):
        assert a.text == b.text and a.action_ids == b.action_ids
    assert sum(o.timings["tokens_from_draft"] for o in static) > 0
