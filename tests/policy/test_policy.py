"""ECoTPolicy on a tiny *trained* policy and on random weights: modes, grammar, batching, edits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecot.model import VLA, VLAConfig
from ecot.policy import MODES, ECoTPolicy, PolicyConfig
from ecot.reasoning import REASONING_TAGS, Reasoning, prefix_before

from tiny_policy import NORM_STATS, SCENES, scene_image

SMALL_BUDGETS = {tag: 4 for tag in REASONING_TAGS}


@pytest.fixture(scope="module")
def trained(trained_checkpoint):
    return VLA.from_pretrained(trained_checkpoint, progress=False)


def _random_model(trained, seed: int, layers: int | None = None) -> VLA:
    torch.manual_seed(seed)
    config = VLAConfig.preset("tiny-siglip", norm_stats=NORM_STATS)
    if layers is not None:  # a cheaper random model for the many-steps test
        config = VLAConfig.preset("tiny-siglip", norm_stats=NORM_STATS,
                                  text_config={**config.text_config, "num_hidden_layers": layers})
    model = VLA(config).eval()
    model.processor = trained.processor
    return model


def _memorized_text(model, i: int) -> str:
    ids = _hand_action_ids(SCENES[i]["action"], model.processor.tokenizer.vocab_size)
    return SCENES[i]["reasoning"] + " ACTION: " + model.processor.tokenizer.decode(ids)


# ---------------------------------------------------------------------- the trained policy


def test_trained_policy_writes_its_memorized_reasoning_and_action(trained):
    policy = ECoTPolicy(trained)
    for i, scene in enumerate(SCENES):
        out = policy.step(scene_image(i, noise_seed=7), scene["instruction"])
        assert out.text == _memorized_text(trained, i)
        assert out.reasoning.problems == [] and out.reasoning == Reasoning.parse(scene["reasoning"])
        vocab = trained.processor.tokenizer.vocab_size
        assert out.action_ids == _hand_action_ids(scene["action"], vocab)
        np.testing.assert_allclose(out.normalized_action, _hand_centers(out.action_ids, vocab), atol=1e-9)
        np.testing.assert_allclose(out.action, _hand_unnormalized(out.action_ids, vocab), atol=1e-6)
        assert out.unnorm_key == "sim_tabletop" and out.timings["tokens_decoded"] > 7


def _hand_action_ids(action, vocab_size: int) -> list[int]:
    """The OpenVLA action tokens, computed here as the reference code does, without ecot: 256 bin
    edges ``np.linspace(-1, 1, 256)``; d = ``np.digitize`` (how many edges are <= the value, 1..256);
    token id = vocab_size - d. (Done with the same numpy calls as the reference because values that
    sit exactly on an edge, like -0.2 here, fall on the side the float edges put them.)"""
    edges = np.linspace(-1.0, 1.0, 256)
    return [vocab_size - int(np.digitize(min(max(a, -1.0), 1.0), edges)) for a in action]


def _hand_unnormalized(ids, vocab_size: int) -> list[float]:
    """Back to the bin center (-1 + (d - 0.5) * step, d clipped to 255), then BOUNDS_Q99 with the test
    statistics (q01 = -0.5, q99 = 0.5 on the six masked dimensions: x / 2; the gripper passes through)."""
    centers = _hand_centers(ids, vocab_size)
    return [c / 2 for c in centers[:6]] + [centers[6]]


def _hand_centers(ids, vocab_size: int) -> list[float]:
    """Bin centers: d = vocab_size - id, clipped to 1..255; center = -1 + (d - 0.5) * 2/255."""
    return [-1.0 + (min(max(vocab_size - i, 1), 255) - 0.5) * (2.0 / 255) for i in ids]


def test_predict_action_on_the_trained_model_returns_the_memorized_action(trained):
    """The seed's free generation (transformers generate, no forced logits) on a trained model."""
    vocab = trained.processor.tokenizer.vocab_size
    seen = set()
    for i, scene in enumerate(SCENES):
        pred = trained.predict_action(scene_image(i, noise_seed=3), scene["instruction"])  # no logits_processor
        assert pred.text == _memorized_text(trained, i)
        assert pred.action_ids == _hand_action_ids(scene["action"], vocab)
        np.testing.assert_allclose(pred.action, _hand_unnormalized(pred.action_ids, vocab), atol=1e-6)
        np.testing.assert_allclose(pred.action[:6], np.array(scene["action"][:6]) / 2, atol=1 / 255)  # within a bin
        seen.add(tuple(pred.action_ids))
    assert len(seen) == len(SCENES)  # each scene its own action: the image and instruction matter


def test_grammar_decoding_equals_free_generation_where_the_model_is_grammatical(trained):
    free = ECoTPolicy(trained, grammar=False)
    constrained = ECoTPolicy(trained)
    for i, scene in enumerate(SCENES):
        image = scene_image(i, noise_seed=11)
        a, b = free.step(image, scene["instruction"]), constrained.step(image, scene["instruction"])
        pred = trained.predict_action(image, scene["instruction"])
        assert a.text == b.text == pred.text and a.action_ids == b.action_ids == pred.action_ids


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_acts_on_the_trained_policy(trained, mode):
    policy = ECoTPolicy(trained, mode=mode, reuse_steps=3)
    i = 0
    texts = []
    for t in range(4):
        out = policy.step(scene_image(i, noise_seed=t), SCENES[i]["instruction"])
        policy._session.wait_idle(60)
        assert out.action.shape == (7,) and np.isfinite(out.action).all()
        assert out.reasoning.problems == [] and len(out.action_ids) == 7
        texts.append(out)
    memorized = _memorized_text(trained, i)
    if mode == "no-reasoning":
        # The policy was trained with reasoning: without it, it still writes a valid action and nothing else.
        assert all(o.text.startswith("ACTION: ") and o.reasoning.present_tags == ["ACTION:"] for o in texts)
        assert all(o.timings["tokens_decoded"] == 7 for o in texts)
    else:
        assert all(o.text == memorized for o in texts)
    if mode in ("reuse", "async"):
        high = prefix_before(memorized, "MOVE REASONING:").strip()
        assert texts[0].reused_text == "" and texts[1].reused_text == high
        assert texts[1].timings["tokens_reused"] > 0
        assert texts[1].timings["tokens_decoded"] < texts[0].timings["tokens_decoded"]
    if mode == "reuse":  # reuse_steps=3: steps 0 and 3 think anew
        assert [bool(o.reused_text) for o in texts] == [False, True, True, False]
    policy.close()


def test_reuse_thinks_again_when_the_move_ends_a_subtask(trained):
    """Scene 1's MOVE closes the gripper: the high-level reasoning is not reused after it."""
    policy = ECoTPolicy(trained, mode="reuse", reuse_steps=10)
    outs = [policy.step(scene_image(1, noise_seed=t), SCENES[1]["instruction"]) for t in range(3)]
    assert "close gripper" in outs[0].reasoning.move
    assert [o.reused_text for o in outs] == ["", "", ""]
    # A new instruction is never served old reasoning.
    policy = ECoTPolicy(trained, mode="reuse", reuse_steps=10)
    first = policy.step(scene_image(0), SCENES[0]["instruction"])
    other = policy.step(scene_image(2), SCENES[2]["instruction"])
    assert first.reused_text == "" and other.reused_text == "" and other.text == _memorized_text(trained, 2)


def test_batched_steps_equal_single_steps(trained):
    policy = ECoTPolicy(trained)
    images = [scene_image(i, noise_seed=21) for i in range(3)]
    instructions = [s["instruction"] for s in SCENES]
    batch = policy.step_batch(images, instructions, sessions=[policy.new_session() for _ in images])
    single = [policy.step(im, ins, session=policy.new_session()) for im, ins in zip(images, instructions)]
    assert [b.text for b in batch] == [s.text for s in single] == [_memorized_text(trained, i) for i in range(3)]
    assert all(b.timings["batch"] == 3 for b in batch)


def test_batched_reuse_keeps_one_state_per_robot(trained):
    policy = ECoTPolicy(trained, mode="reuse", reuse_steps=4)
    images = [scene_image(0), scene_image(2)]
    instructions = [SCENES[0]["instruction"], SCENES[2]["instruction"]]
    first = policy.step_batch(images, instructions)
    second = policy.step_batch(images, instructions)
    assert [o.reused_text for o in first] == ["", ""]
    assert [o.text for o in second] == [o.text for o in first]
    assert all(o.reused_text for o in second)


def test_edits_are_written_verbatim_and_steer_the_continuation(trained):
    policy = ECoTPolicy(trained)
    image, instruction = scene_image(0), SCENES[0]["instruction"]
    plain = policy.step(image, instruction)
    policy.edit(subtask="lift the green cup.", visible_objects=[("the red block", [1, 2, 3, 4])])
    edited = policy.step(image, instruction)
    assert edited.reasoning.subtask == "lift the green cup."
    assert edited.reasoning.visible_objects == [("the red block", [1, 2, 3, 4])]
    assert edited.reasoning.problems == []
    after = lambda text: text.split("SUBTASK: ", 1)[1].split(" ", 4)[-1]  # noqa: E731
    assert after(edited.text) != after(plain.text)  # the model continued from the edited subtask
    assert edited.reasoning.task == plain.reasoning.task  # fields before the edit are the model's
    again = policy.step(image, instruction)
    assert again.text == edited.text  # edits last
    policy.edit(None)
    assert policy.step(image, instruction).text == plain.text
    policy.edit(move="move left")
    policy.reset()
    assert policy.step(image, instruction).text == plain.text


def test_edit_rejects_values_that_would_break_the_reasoning(trained):
    policy = ECoTPolicy(trained)
    for bad in ({"plan": "x PLAN: y"}, {"move": "go </s>"}, {"visible_objects": "the cup [1, 2]"}, {"colour": "red"}):
        with pytest.raises(ValueError):
            policy.edit(**bad)


def test_streaming_reports_the_text_as_it_grows(trained):
    policy = ECoTPolicy(trained)
    seen: list[str] = []
    out = policy.step(scene_image(2), SCENES[2]["instruction"], on_text=seen.append)
    assert len(seen) > 20
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:]))
    assert out.text.startswith(seen[-1].strip())


def test_reuse_with_one_step_equals_full(trained):
    full, reuse = ECoTPolicy(trained, mode="full"), ECoTPolicy(trained, mode="reuse", reuse_steps=1)
    random_full = ECoTPolicy(_random_model(trained, 5), mode="full", budgets=SMALL_BUDGETS)
    random_reuse = ECoTPolicy(random_full.model, mode="reuse", reuse_steps=1, budgets=SMALL_BUDGETS)
    for t in range(3):
        image = scene_image(t % 3, noise_seed=t)
        instruction = SCENES[t % 3]["instruction"]
        for a, b in ((full, reuse), (random_full, random_reuse)):
            x, y = a.step(image, instruction), b.step(image, instruction)
            assert x.text == y.text and x.action_ids == y.action_ids and y.timings["tokens_reused"] == 0


# ---------------------------------------------------------------------- random weights


def test_random_weights_always_yield_parseable_reasoning_and_a_valid_action(trained):
    """1,000 steps of random models: whatever the weights, the grammar gives clean reasoning and 7 action ids."""
    tok = trained.processor.action_tokenizer
    rng = np.random.default_rng(0)
    steps = 0
    for seed in range(5):
        model = _random_model(trained, 100 + seed, layers=1)
        budgets = {tag: int(rng.integers(2, 9)) for tag in REASONING_TAGS}
        policy = ECoTPolicy(model, budgets=budgets, max_objects=3, max_points=4)
        for _ in range(5):
            images = [rng.integers(0, 256, (int(rng.integers(16, 80)), int(rng.integers(16, 80)), 3), dtype=np.uint8)
                      for _ in range(40)]
            instructions = [SCENES[int(rng.integers(0, 3))]["instruction"] for _ in images]
            for out in policy.step_batch(images, instructions, sessions=[policy.new_session() for _ in images]):
                steps += 1
                assert out.reasoning.problems == [], out.text
                assert out.reasoning.present_tags == list(REASONING_TAGS) + ["ACTION:"], out.text
                assert len(out.action_ids) == 7 and all(tok.first_id <= i <= tok.last_id for i in out.action_ids)
                assert np.isfinite(out.action).all()
    assert steps >= 1000


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_on_random_weights(trained, mode):
    policy = ECoTPolicy(_random_model(trained, 9), mode=mode, budgets=SMALL_BUDGETS, reuse_steps=2)
    for t in range(3):
        out = policy.step(scene_image(t % 3, noise_seed=t), "put the red block in the bowl")
        policy._session.wait_idle(60)
        assert out.reasoning.problems == [] and len(out.action_ids) == 7
    policy.close()


def test_batched_random_weights_equal_single(trained):
    policy = ECoTPolicy(_random_model(trained, 3), budgets=SMALL_BUDGETS)
    images = [scene_image(i % 3, noise_seed=i) for i in range(4)]
    instructions = ["put the red block in the bowl", "pick up the cup", "push the blue ball to the left side of the table", "go"]
    batch = policy.step_batch(images, instructions, sessions=[policy.new_session() for _ in images])
    single = [policy.step(im, ins, session=policy.new_session()) for im, ins in zip(images, instructions)]
    assert [b.text for b in batch] == [s.text for s in single]
    assert [b.action_ids for b in batch] == [s.action_ids for s in single]


# ---------------------------------------------------------------------- bad input


def test_bad_observations_are_refused_with_clear_errors(trained):
    policy = ECoTPolicy(trained)
    cases = [
        (np.zeros((0, 0, 3), np.uint8), "expected at least 16x16"),
        (np.zeros((8, 40, 3), np.uint8), "40x8 pixels"),
        (np.zeros((32, 32, 3), np.float32), "uint8"),
        (np.zeros((32, 32), np.uint8), "HxWx3"),
        ("frame.png", "numpy array or a PIL image"),
    ]
    for image, message in cases:
        with pytest.raises(ValueError, match=message):
            policy.step(image, "go")
    with pytest.raises(ValueError, match="instruction"):
        policy.step(scene_image(0), "")
    with pytest.raises(ValueError, match="too long"):
        policy.step(scene_image(0), "go " * 2000)
    with pytest.raises(ValueError, match="one instruction per image"):
        policy.step_batch([scene_image(0)] * 2, ["go"])
    with pytest.raises(KeyError, match="sim_tabletop"):
        policy.step(scene_image(0), "go", unnorm_key="bridge_orig")
    with pytest.raises(ValueError, match="unknown policy mode"):
        PolicyConfig(mode="fast")
    with pytest.raises(ValueError, match="expected at least 16x16"):
        trained.predict_action(np.zeros((0, 0, 3), np.uint8), "go")


def test_expected_action_decoding_is_the_mean_over_the_bins(trained):
    """action_decoding="expected": each dimension is the probability-weighted mean of the bin centers,
    recomputed here from a teacher-forced forward pass of the model (an independent path)."""
    from ecot.policy.decoder import DecodeRequest, ECoTDecoder
    from ecot.prompts import conditioning_prompt

    proc = trained.processor
    image = scene_image(1, noise_seed=3)
    argmax = ECoTPolicy(trained).step(image, SCENES[1]["instruction"])
    expected = ECoTPolicy(trained, action_decoding="expected").step(image, SCENES[1]["instruction"])
    assert expected.action_ids == argmax.action_ids and expected.text == argmax.text  # same greedy text

    pixels = proc.image_transform(image)
    result = ECoTDecoder(trained, proc).decode([DecodeRequest(conditioning_prompt(SCENES[1]["instruction"]), pixels, 0)])[0]
    assert result.ids[-6:] == result.action_ids[:-1]  # the fed ids: the text, then all action ids but the last
    ids = torch.tensor([result.ids])
    with torch.no_grad():
        logits = trained(input_ids=ids, pixel_values=pixels.unsqueeze(0)).logits[0, -7:].double()
    vocab = proc.tokenizer.vocab_size
    lo = vocab - 256
    centers = np.linspace(-1, 1, 256)
    centers = (centers[:-1] + centers[1:]) / 2  # the 255 bin centers
    # OpenVLA's mapping: id = vocab - d for the bin index d in 1..256 (higher ids, lower values);
    # d = 256 shares the last center.
    values = torch.tensor([centers[min(255 - j, 254)] for j in range(256)], dtype=torch.float64)
    probs = torch.softmax(logits[:, lo:vocab], dim=-1)
    mean = (probs * values).sum(-1).numpy()
    np.testing.assert_allclose(expected.normalized_action, mean, atol=1e-4)
    assert np.all(np.abs(expected.normalized_action) <= 1)
    # An overfit model is confident: the mean sits near the greedy bin, but it is not a bin center.
    np.testing.assert_allclose(expected.normalized_action, argmax.normalized_action, atol=0.05)
    with pytest.raises(ValueError, match="action_decoding"):
        PolicyConfig(action_decoding="mean")
