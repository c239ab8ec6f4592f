"""The locator (ecot.model.locator): its spec, what it learns, and how a VLA with one trains, saves and acts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecot.model.locator import (CONFIG_KEY, Locator, LocatorSpec, build_spec, frame_targets, name_words,
                                number_token_ids)
from ecot.model.tokenizer import train_tiny_tokenizer

CORPUS = ["push the red block to the left VISIBLE OBJECTS: the red block [10, 12, 20, 22], the blue bar [3, 40, 30, 50] "
          "GRIPPER POSITION: [5, 6, 111, 8]"]


@pytest.fixture(scope="module")
def whole_tokenizer():
    return train_tiny_tokenizer(CORPUS, vocab_size=1024, numbers="whole")


def test_spec_refuses_malformed_entries_by_name():
    good = dict(words=["red"], word_token_ids=[[5]], number_token_ids=[7, 8, 9], frame_size=3)
    LocatorSpec.from_dict(good)
    with pytest.raises(ValueError, match="lacks \\['frame_size'\\]"):
        LocatorSpec.from_dict({k: v for k, v in good.items() if k != "frame_size"})
    with pytest.raises(ValueError, match="words .* word_token_ids"):
        LocatorSpec.from_dict({**good, "word_token_ids": []})
    with pytest.raises(ValueError, match="max_objects must be a positive integer"):
        LocatorSpec.from_dict({**good, "max_objects": 0})
    from ecot.model.config import VLAConfig

    with pytest.raises(ValueError, match=CONFIG_KEY):
        VLAConfig.preset("tiny-siglip", **{CONFIG_KEY: {"words": ["red"]}})


def test_coordinates_are_the_tokens_the_chain_is_written_with(whole_tokenizer):
    ids = number_token_ids(whole_tokenizer, 111)
    assert len(set(ids)) == 112
    for v in (0, 7, 48, 111):
        text = f"the red block [{v}, 3, {v}, 9]"
        assert whole_tokenizer(text, add_special_tokens=False)["input_ids"].count(ids[v]) == 2
        assert whole_tokenizer.decode([ids[v]]) == str(v)
    bpe = train_tiny_tokenizer(CORPUS, vocab_size=1024, numbers="bpe")
    with pytest.raises(ValueError, match="--tokenizer-numbers whole"):
        number_token_ids(bpe, 111)


def test_spec_and_targets_from_annotations(whole_tokenizer):
    spec = build_spec(whole_tokenizer, ["the red block", "the blue bar"], frame_size=56, max_objects=3)
    assert spec.words == name_words(["the red block", "the blue bar"]) == ["bar", "block", "blue", "red"]
    assert all(ids for ids in spec.word_token_ids) and spec.num_tokens == 3 * 5 + 2
    objects, gripper = frame_targets([("the red block", [10, 12, 20, 22])], [5, 6], spec, image_size=112)
    assert objects.shape == (3, 5 + 4)
    np.testing.assert_allclose(objects[0, :5], [20, 24, 40, 44, 1])  # scaled 56 -> 112 px, valid
    assert objects[0, 5:].tolist() == [0, 1, 0, 1]  # block, red
    assert not objects[1:].any()  # no second or third object
    np.testing.assert_allclose(gripper, [10, 12, 1])
    _, none = frame_targets([], None, spec, image_size=112)
    assert not none.any()


def _scene(rng, size=48):
    """A grey image with a red and a blue square at random places, their boxes and the 'gripper' (a white dot)."""
    img = np.full((size, size, 3), 0.5, np.float32)
    items = []
    for name, colour in (("the red block", (1, 0, 0)), ("the blue block", (0, 0, 1))):
        while True:
            x, y, w = int(rng.integers(2, size - 12)), int(rng.integers(2, size - 12)), int(rng.integers(6, 10))
            if all(abs(x - b[0]) > 11 or abs(y - b[1]) > 11 for _, b in items):
                break
        img[y : y + w, x : x + w] = colour
        items.append((name, [x, y, x + w, y + w]))
    gx, gy = int(rng.integers(2, size - 2)), int(rng.integers(2, size - 2))
    img[gy - 1 : gy + 2, gx - 1 : gx + 2] = 1.0
    return torch.from_numpy(img).permute(2, 0, 1) * 2 - 1, items, [gx, gy]


def test_the_locator_learns_to_find_boxes_words_and_the_gripper(whole_tokenizer):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = build_spec(whole_tokenizer, ["the red block", "the blue block"], frame_size=48, max_objects=2, channels=32)
    loc = Locator(spec, image_size=48, llm_dim=16)
    opt = torch.optim.AdamW(loc.parameters(), lr=3e-3)

    def batch(n):
        scenes = [_scene(rng) for _ in range(n)]
        targets = [frame_targets(items, g, spec, 48) for _, items, g in scenes]
        return (torch.stack([s[0] for s in scenes]), torch.stack([t[0] for t in targets]),
                torch.stack([t[1] for t in targets]), scenes)

    first = None
    for _ in range(250):
        px, objects, gripper, _ = batch(16)
        loss = loc.loss(loc(px), objects, gripper)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first / 4
    px, objects, gripper, scenes = batch(32)
    with torch.no_grad():
        found = loc.find(loc(px))
    errors, named = [], []
    for i, (_, items, _) in enumerate(scenes):
        for name, box in items:
            centre = torch.tensor([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            centres = (found.boxes[i, :, :2] + found.boxes[i, :, 2:]) / 2
            j = int(((centres - centre) ** 2).sum(-1).argmin())
            errors.append(float(((centres[j] - centre) ** 2).sum().sqrt()))
            colour = name.split()[1]
            named.append(bool(found.word_probs[i, j, spec.words.index(colour)] > 0.5))
    gripper_error = ((found.gripper - gripper[:, :2]) ** 2).sum(-1).sqrt()
    assert np.median(errors) < 2.0, errors  # pixels, on images it never saw
    assert np.mean(named) > 0.9
    assert float(gripper_error.median()) < 2.0
    assert found.present().all()


def _locator_model(whole_tokenizer, seed=0, image_patches=True):
    from ecot.model.config import VLAConfig
    from ecot.model.processor import VLAProcessor
    from ecot.model.vla import VLA

    spec = build_spec(whole_tokenizer, ["the red block", "the blue bar"], frame_size=112, image_patches=image_patches)
    from tiny_policy import NORM_STATS

    config = VLAConfig.preset("tiny-siglip", **{CONFIG_KEY: spec.to_dict()}, norm_stats=NORM_STATS)
    torch.manual_seed(seed)
    model = VLA(config).eval()
    model.processor = VLAProcessor(config, whole_tokenizer)
    return model


def test_a_vla_with_a_locator_sees_its_tokens_trains_on_both_losses_and_round_trips(whole_tokenizer, tmp_path):
    from ecot.model.vla import VLA

    model = _locator_model(whole_tokenizer)
    assert model.num_patches == 64 + model.locator.num_tokens
    px = torch.randn(2, 3, 112, 112)
    ids = whole_tokenizer(["push the red block", "push the red block"], return_tensors="pt")["input_ids"]
    objects, gripper = frame_targets([("the red block", [10, 12, 20, 22])], [5, 6], model.config.locator, 112)
    out = model(input_ids=ids, pixel_values=px, labels=ids, locator_objects=objects.expand(2, -1, -1),
                locator_gripper=gripper.expand(2, -1))
    assert out.logits.shape[1] == ids.shape[1] + model.num_patches
    assert float(out.locator_loss) > 0
    # The language model read the annotation's boxes (teacher forcing), not the untrained locator's.
    forced = model.locator.findings_from_targets(objects.expand(2, -1, -1), gripper.expand(2, -1))
    assert forced.present().tolist() == [[True, False, False, False]] * 2
    embeds, mask, labels = model.embed_multimodal(ids, px, None, ids, forced)
    reference = model.language_model(inputs_embeds=embeds, labels=labels)
    torch.testing.assert_close(out.loss, reference.loss + out.locator_loss)
    own = model(input_ids=ids, pixel_values=px, labels=ids)
    assert not torch.allclose(own.logits, out.logits)
    out.loss.backward()
    assert model.locator.head.weight.grad.abs().sum() > 0  # the locator learns from its own loss
    assert model.locator.slot_embed.grad.abs().sum() > 0  # its token embeddings from the language model's

    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved[CONFIG_KEY]["words"] == ["bar", "block", "blue", "red"]
    loaded = VLA.from_pretrained(tmp_path / "ckpt", progress=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, pixel_values=px).logits, model(input_ids=ids, pixel_values=px).logits)


def test_the_policy_runtime_acts_with_a_locator(whole_tokenizer):
    from ecot.policy import ECoTPolicy

    model = _locator_model(whole_tokenizer, seed=1)
    policy = ECoTPolicy(model, mode="full")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(2)]
    singles = []
    for img in images:  # each image its own episode: a session tracks its instruction's object across steps
        policy.reset()
        singles.append(policy.step(img, "push the red block to the left"))
    for out in singles:
        assert out.action.shape == (7,) and np.isfinite(out.action).all()
        assert out.reasoning.problems == []
    policy.reset()
    batched = policy.step_batch(images, ["push the red block to the left"] * 2)
    for a, b in zip(singles, batched):
        assert a.text == b.text
        np.testing.assert_array_equal(a.action, b.action)


def test_findings_are_ordered_left_to_right_and_training_mixes_in_the_locators_own(whole_tokenizer):
    from ecot.model import locator as locmod
    from ecot.model.locator import Findings

    f = Findings(boxes=torch.tensor([[[50.0, 0, 60, 9], [90, 0, 99, 9], [10, 0, 20, 9]]]),
                 scores=torch.tensor([[0.9, 0.2, 0.8]]), word_probs=torch.eye(3)[None], gripper=torch.zeros(1, 2))
    o = f.ordered()
    assert o.boxes[0, :, 0].tolist() == [10, 50, 90]  # present ones left to right, the absent one last
    assert o.present().tolist() == [[True, True, False]]
    assert o.word_probs[0].argmax(-1).tolist() == [2, 0, 1]  # each object keeps its words

    spec = build_spec(whole_tokenizer, ["the red block"], frame_size=112, max_objects=2, channels=16)
    loc = Locator(spec, image_size=112, llm_dim=16)
    objects, gripper = frame_targets([("the red block", [10, 12, 20, 22])], [5, 6], spec, 112)
    objects, gripper = objects.expand(64, -1, -1), gripper.expand(64, -1)
    located = loc(torch.zeros(64, 3, 112, 112))
    truth, own = loc.findings_from_targets(objects, gripper), loc.find(located)
    mixed = loc.training_findings(located, objects, gripper, generator=torch.Generator().manual_seed(0))
    from_truth = (mixed.gripper == truth.gripper).all(-1)
    from_own = (mixed.gripper == own.gripper).all(-1)
    assert bool((from_truth | from_own).all())
    assert 0.3 < float(from_own.float().mean()) < 0.7 and locmod.OWN_FINDINGS_SHARE == 0.5


def test_relation_tokens_carry_each_objects_offset_from_the_gripper(whole_tokenizer, tmp_path):
    from ecot.model.locator import Findings

    with pytest.raises(ValueError, match="relations must be true or false"):
        LocatorSpec.from_dict(dict(words=["red"], word_token_ids=[[5]], number_token_ids=[7, 8], frame_size=2,
                                   relations="yes"))
    spec = build_spec(whole_tokenizer, ["the red block"], frame_size=112, max_objects=2, channels=16, relations=True)
    assert LocatorSpec.from_dict(spec.to_dict()).relations is True
    plain = Locator(build_spec(whole_tokenizer, ["the red block"], frame_size=112, max_objects=2, channels=16),
                    image_size=112, llm_dim=16)
    assert plain.relation is None  # released-style locators (round ten's) are unchanged
    loc = Locator(spec, image_size=112, llm_dim=16)
    embed = torch.nn.Embedding(len(whole_tokenizer), 16)

    def findings(gripper_x: float) -> Findings:  # one red block at x 40..60, the second slot absent
        return Findings(boxes=torch.tensor([[[40.0, 30, 60, 50], [0, 0, 0, 0]]]), scores=torch.tensor([[0.9, 0.1]]),
                        word_probs=torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])[..., : len(spec.words)],
                        gripper=torch.tensor([[gripper_x, 80.0]]))

    left, right = loc.tokens(findings(20.0), embed), loc.tokens(findings(90.0), embed)
    assert left.shape == (1, spec.num_tokens, 16)
    # Only the present object's tokens change with the gripper's offset; the absent slot's do not.
    assert not torch.allclose(left[:, :5], right[:, :5])
    torch.testing.assert_close(left[:, 5:10], right[:, 5:10], atol=0, rtol=0)
    # The relation layer learns from the language model's loss (the coordinates' token ids cannot).
    loc.tokens(findings(20.0), embed).sum().backward()
    assert loc.relation[0].weight.grad.abs().sum() > 0


def test_a_locator_only_model_sees_the_findings_and_not_the_patches(whole_tokenizer, tmp_path):
    from ecot.model.vla import VLA
    from ecot.policy import ECoTPolicy

    with pytest.raises(ValueError, match="image_patches must be true or false"):
        LocatorSpec.from_dict(dict(words=["red"], word_token_ids=[[5]], number_token_ids=[7, 8], frame_size=2,
                                   image_patches=0))
    model = _locator_model(whole_tokenizer, image_patches=False)
    assert model.num_patches == model.locator.num_tokens  # no image patches in the sequence
    px = torch.randn(1, 3, 112, 112)
    ids = whole_tokenizer(["push the red block"], return_tensors="pt")["input_ids"]
    objects, gripper = (t[None] for t in frame_targets([("the red block", [10, 12, 20, 22])], [5, 6],
                                                        model.config.locator, 112))
    forced = model.locator.findings_from_targets(objects, gripper)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=px, locator_objects=objects, locator_gripper=gripper)
        assert out.logits.shape[1] == ids.shape[1] + model.locator.num_tokens
        # Given the findings, a different image changes nothing: the patches do not reach the language model.
        again = model(input_ids=ids, pixel_values=torch.randn(1, 3, 112, 112), locator_objects=objects,
                      locator_gripper=gripper)
        torch.testing.assert_close(out.logits, again.logits, atol=0, rtol=0)
        moved = [t[None] for t in frame_targets([("the red block", [60, 12, 70, 22])], [5, 6], model.config.locator, 112)]
        assert not torch.allclose(out.logits, model(input_ids=ids, pixel_values=px, locator_objects=moved[0],
                                                     locator_gripper=moved[1]).logits)
    embeds, _, _ = model.embed_multimodal(ids, px, None, None, forced)
    assert embeds.shape[1] == ids.shape[1] + model.locator.num_tokens

    model.save_pretrained(tmp_path / "ckpt")
    loaded = VLA.from_pretrained(tmp_path / "ckpt", progress=False).eval()
    assert loaded.locator.spec.image_patches is False and loaded.num_patches == model.num_patches
    out = ECoTPolicy(model, mode="full").step(np.zeros((112, 112, 3), np.uint8), "push the red block to the left")
    assert out.action.shape == (7,) and np.isfinite(out.action).all()


def test_the_move_head_chooses_the_policys_move_and_round_trips(whole_tokenizer, tmp_path):
    from ecot.model.move_head import CONFIG_KEY as MOVE_KEY, MoveHeadSpec, build_spec as build_move_spec
    from ecot.model.vla import VLA
    from ecot.policy import ECoTPolicy

    with pytest.raises(ValueError, match="at least two distinct MOVEs"):
        MoveHeadSpec(moves=["move left"], words=[], object_words=["red"], frame_size=112)
    model = _locator_model(whole_tokenizer, seed=2)
    spec = build_move_spec(["move left", "move right", "move left"], ["push the red block to the left"],
                           model.locator.spec.words, 112)
    assert spec.moves == ["move left", "move right"] and "red" not in spec.words and "left" in spec.words
    model.attach_move_head(spec)
    with torch.no_grad():  # a head that always chooses "move right"
        model.move_head.net[-1].bias.copy_(torch.tensor([-50.0, 50.0]))
    policy = ECoTPolicy(model, mode="full")
    image = np.zeros((112, 112, 3), np.uint8)
    out = policy.step(image, "push the red block to the left")
    assert out.reasoning.move == "move right" and out.timings["move_head_ms"] > 0
    policy.edit(move="move left")  # a person's edit wins over the head
    assert policy.step(image, "push the red block to the left").reasoning.move == "move left"
    policy.reset()
    assert ECoTPolicy(model, mode="no-reasoning").step(image, "push the red block").timings["move_head_ms"] == 0

    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())[MOVE_KEY]["moves"] == spec.moves
    loaded = VLA.from_pretrained(tmp_path / "ckpt", progress=False).eval()
    assert loaded.move_head is not None
    torch.testing.assert_close(loaded.move_head.net[-1].bias, model.move_head.net[-1].bias)
    plain = VLA(type(model.config).preset("tiny-siglip"))
    with pytest.raises(ValueError, match="no locator"):
        plain.attach_move_head(spec)


def test_the_move_head_reads_the_named_objects_box():
    from ecot.model.move_head import MoveHead, MoveHeadSpec

    head = MoveHead(MoveHeadSpec(moves=["move left", "move right"], words=["left"], object_words=["bar", "blue", "red"],
                                 frame_size=100))
    boxes = torch.tensor([[[10.0, 10, 20, 20], [60, 60, 80, 80]]])
    probs = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # a blue thing, a red thing
    present = torch.tensor([[True, True]])
    gripper = torch.tensor([[50.0, 50.0]])
    red = head.features(boxes, present, probs, gripper, ["push the red bar to the left"])
    blue = head.features(boxes, present, probs, gripper, ["push the blue bar"])
    assert red[0, :2].tolist() == pytest.approx([0.4, 0.4]) and blue[0, :2].tolist() == pytest.approx([-0.7, -0.7])
    assert red[0, -1] == 1.0 and blue[0, -1] == 0.0  # "left" is said or not
    nothing = head.features(boxes, torch.tensor([[False, False]]), probs, gripper, ["push the red bar"])
    assert nothing[0, :2].tolist() == [0.0, 0.0]  # no object found: the box is the gripper's point


def _findings(boxes, probs, scores=None, gripper=(50.0, 50.0)):
    from ecot.model.locator import Findings

    boxes = torch.tensor([boxes], dtype=torch.float32)
    return Findings(boxes=boxes, scores=torch.tensor([scores or [0.9] * boxes.shape[1]]),
                    word_probs=torch.tensor([probs], dtype=torch.float32), gripper=torch.tensor([gripper]))


def test_found_objects_are_named_from_their_words_the_instructions_object_first(whole_tokenizer):
    from ecot.model.locator import name_slots, named_objects

    spec = build_spec(whole_tokenizer, ["the red block", "the blue bar", "the red block"], frame_size=112)
    assert spec.names == ["the blue bar", "the red block"] and spec.words == ["bar", "block", "blue", "red"]
    assert name_slots(spec.names) == ("the", [["blue", "red"], ["bar", "block"]], [True, True])
    assert LocatorSpec.from_dict(spec.to_dict()).names == spec.names
    #          bar  block blue red
    blue_block = [0.1, 0.9, 0.8, 0.1]  # a composition no training name has
    red_bar = [0.7, 0.2, 0.3, 0.4]  # unsure of its colour: the likelier one is written all the same
    f = _findings([[10.2, 20.7, 30.0, 41.0], [60, 60, 80, 70]], [blue_block, red_bar])
    assert named_objects(f, spec, ["push the red bar to the left"]) == [
        [("the red bar", [60, 60, 80, 70]), ("the blue block", [10, 21, 30, 41])]]
    # two objects named: the first is the task's (as the training chains list it), under its own words only
    from ecot.model.locator import task_object_words

    assert task_object_words("put the red bar onto the blue block", spec.words) == ["red", "bar"]
    assert named_objects(f, spec, ["put the red bar onto the blue block"]) == [
        [("the red bar", [60, 60, 80, 70]), ("the blue block", [10, 21, 30, 41])]]
    assert named_objects(f, spec, ["put the blue block onto the red bar"])[0][0] == ("the blue block", [10, 21, 30, 41])
    # not said: left to right; a box past the frame is clipped into it
    f = _findings([[100, 0, 130, 9], [10, 20, 30, 40]], [blue_block, [0.1, 0.9, 0.1, 0.9]])
    assert named_objects(f, spec, ["do something"]) == [[("the blue block", [100, 0, 111, 9]), ("the red block", [10, 20, 30, 40])]]
    # two finds of one name: written once; an absent or degenerate find: not at all
    f = _findings([[10, 10, 20, 20], [40, 40, 50, 50], [60, 60, 60, 70], [0, 0, 5, 5]],
                  [blue_block, blue_block, red_bar, red_bar], scores=[0.9, 0.8, 0.9, 0.1])
    assert named_objects(f, spec, ["push it"]) == [[("the blue block", [10, 10, 20, 20])]]
    with pytest.raises(ValueError, match="stores no object names"):
        named_objects(f, LocatorSpec.from_dict({**spec.to_dict(), "names": []}), ["push it"])


def test_the_policy_writes_the_locators_findings_into_visible_objects(whole_tokenizer, monkeypatch):
    from ecot.model.locator import named_objects
    from ecot.policy import ECoTPolicy
    from ecot.reasoning import Reasoning

    model = _locator_model(whole_tokenizer, seed=3)
    found = _findings([[10, 20, 30, 40], [60, 60, 80, 70]], [[0.1, 0.9, 0.1, 0.9], [0.9, 0.1, 0.9, 0.1]])
    monkeypatch.setattr(model.locator, "find", lambda located: found)  # what a trained locator would find
    image, instruction = np.zeros((112, 112, 3), np.uint8), "push the blue bar to the left"
    expected = named_objects(found, model.locator.spec, [instruction])[0]
    assert expected == [("the blue bar", [60, 60, 80, 70]), ("the red block", [10, 20, 30, 40])]
    policy = ECoTPolicy(model, mode="full")
    out = policy.step(image, instruction)
    assert out.reasoning.visible_objects == expected and out.reasoning.problems == []
    assert ECoTPolicy(model, mode="reuse", reuse_steps=1).step(image, instruction).text == out.text
    own = ECoTPolicy(model, mode="full", locator_objects=False).step(image, instruction)
    assert own.reasoning.visible_objects != expected  # the language model's own copy (random weights)
    policy.edit(visible_objects=[("the red block", [1, 2, 3, 4])])  # a person's edit wins
    assert policy.step(image, instruction).reasoning.visible_objects == [("the red block", [1, 2, 3, 4])]
    # Nothing found (every centre below the threshold): the language model writes VISIBLE OBJECTS
    policy.edit(None)
    monkeypatch.setattr(model.locator, "find", lambda located: _findings([[10, 20, 30, 40]], [[0.1, 0.9, 0.1, 0.9]],
                                                                       scores=[0.1]))
    nothing = ECoTPolicy(model, mode="full", locator_objects=False).step(image, instruction).reasoning.visible_objects
    assert nothing and policy.step(image, instruction).reasoning.visible_objects == nothing
    monkeypatch.setattr(model.locator, "find", lambda located: found)
    # A checkpoint from before the names were stored: the language model writes VISIBLE OBJECTS
    model.locator.spec.names = []
    assert ECoTPolicy(model, mode="full").step(image, instruction).reasoning.visible_objects == own.reasoning.visible_objects
    assert Reasoning.parse(out.text).visible_objects == expected


def test_with_a_move_head_the_action_goes_the_way_its_move_says(whole_tokenizer):
    from ecot.model.move_head import build_spec as build_move_spec
    from ecot.policy import ECoTPolicy
    from ecot.policy.move_action import STEP_THRESHOLD

    model = _locator_model(whole_tokenizer, seed=4)
    model.attach_move_head(build_move_spec(["move left", "move right"], ["push the red block"], model.locator.spec.words, 112))
    with torch.no_grad():  # a head that always chooses "move right" (-y)
        model.move_head.net[-1].bias.copy_(torch.tensor([-50.0, 50.0]))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(4)]

    def follows(action):
        return action[1] < -STEP_THRESHOLD and abs(action[0]) <= STEP_THRESHOLD and abs(action[2]) <= STEP_THRESHOLD

    bound = ECoTPolicy(model, mode="full")  # on by default with a move head
    free = ECoTPolicy(model, mode="full", action_follows_move=False)
    for image in images:
        out = bound.step(image, "push the red block")
        assert out.reasoning.move == "move right" and follows(out.action), out.action
    assert not all(follows(free.step(image, "push the red block").action) for image in images)  # random weights
    bound.reset()
    bound.edit(move="move left")  # a person's MOVE binds the action too
    assert bound.step(images[0], "push the red block").action[1] > STEP_THRESHOLD
    plain = _locator_model(whole_tokenizer, seed=4)  # no move head: off unless asked for
    assert ECoTPolicy(plain)._action_follows_move() is False and ECoTPolicy(plain, action_follows_move=True)._action_follows_move()


def test_the_instructions_object_may_be_a_weak_peak_when_the_strong_ones_do_not_fit_its_words(whole_tokenizer):
    """With the gripper at the object its peak weakens below PRESENT_THRESHOLD; the other object's stays high.
    The named object is the weak peak whose words fit, not the present one whose words do not (round sixteen)."""
    from ecot.model.locator import CANDIDATE_THRESHOLD, PRESENT_THRESHOLD, instruction_object, named_objects
    from ecot.model.move_head import MoveHead, MoveHeadSpec

    spec = build_spec(whole_tokenizer, ["the red block", "the blue bar"], frame_size=100)
    words = spec.words  # bar block blue red
    #            bar  block blue red
    blue_bar = [0.9, 0.0, 0.9, 0.0]
    red_block = [0.0, 0.3, 0.0, 0.3]  # covered by the gripper: unsure of its words too
    weak = 0.25
    assert CANDIDATE_THRESHOLD < weak < PRESENT_THRESHOLD
    probs = torch.tensor([blue_bar, red_block])
    assert instruction_object(probs, torch.tensor([0.95, weak]), words, "push the red block to the left") == 1
    assert instruction_object(probs, torch.tensor([0.95, weak]), words, "push the blue bar to the left") == 0
    # below the candidate threshold a peak is noise: never chosen, whatever its words
    assert instruction_object(probs, torch.tensor([0.95, 0.05]), words, "push the red block") == 0
    assert instruction_object(probs, torch.tensor([0.05, 0.05]), words, "push the red block") is None
    # where the words fit equally, the stronger peak wins; a bool mask counts as scores 1 and 0
    same = torch.tensor([red_block, red_block])
    assert instruction_object(same, torch.tensor([0.3, 0.9]), words, "push the red block") == 1
    assert instruction_object(probs, torch.tensor([True, True]), words, "push the red block") == 1

    f = _findings([[60, 60, 80, 70], [10, 20, 30, 40]], [blue_bar, red_block], scores=[0.95, weak])
    assert named_objects(f, spec, ["push the red block to the left"]) == [
        [("the red block", [10, 20, 30, 40]), ("the blue bar", [60, 60, 80, 70])]]
    assert named_objects(f, spec, ["push the blue bar"]) == [[("the blue bar", [60, 60, 80, 70])]]  # weak, not named: left out
    head = MoveHead(MoveHeadSpec(moves=["move left", "move right"], words=["left"], object_words=words, frame_size=100))
    x = head.features(f.boxes, f.scores, f.word_probs, f.gripper, ["push the red block to the left"])
    assert x[0, :2].tolist() == pytest.approx([-0.6, -0.4])  # the red block's centre (20, 30) in [-1, 1]


def test_the_instruction_object_is_tracked_from_the_previous_step():
    from ecot.model.locator import TRACK_SIGMA, instruction_object

    words = ["block", "red"]
    boxes = torch.tensor([[10.0, 10, 20, 20], [60, 60, 70, 70]])
    scores = torch.tensor([0.9, 0.9])
    probs = torch.tensor([[0.9, 0.6], [0.9, 0.5]])  # both red blocks, the first a little surer
    said = "push the red block to the left"
    assert instruction_object(probs, scores, words, said) == 0
    assert instruction_object(probs, scores, words, said, boxes=boxes, previous=[66.0, 64.0]) == 1  # near the second
    assert instruction_object(probs, scores, words, said, boxes=boxes, previous=[15.0, 15.0]) == 0
    # a few sigmas off the previous choice: words that fit far better win
    sure = torch.tensor([[0.9, 0.001], [0.9, 0.9]])
    assert instruction_object(sure, scores, words, said, boxes=boxes, previous=[65.0 - 3 * TRACK_SIGMA, 65.0]) == 1
    # the tracked peak gone (below the candidate threshold): the other one
    assert instruction_object(probs, torch.tensor([0.05, 0.9]), words, said, boxes=boxes, previous=[15.0, 15.0]) == 1
    with pytest.raises(ValueError, match="boxes"):
        instruction_object(probs, scores, words, said, previous=[15.0, 15.0])


def test_a_policy_session_tracks_its_object_until_reset_or_a_new_instruction(whole_tokenizer):
    from ecot.model.locator import Findings
    from ecot.policy import ECoTPolicy

    model = _locator_model(whole_tokenizer, seed=1)
    said = "push the red block to the left"

    def found(first_red: float, second_red: float) -> Findings:
        return Findings(boxes=torch.tensor([[[10.0, 10, 20, 20], [60, 60, 70, 70]]]), scores=torch.tensor([[0.9, 0.9]]),
                        word_probs=torch.tensor([[[0.9, 0.0, 0.0, first_red], [0.9, 0.0, 0.0, second_red]]]),
                        gripper=torch.tensor([[50.0, 50.0]]))

    assert model.locator.spec.words == ["bar", "block", "blue", "red"]
    policy = ECoTPolicy(model, mode="full")
    session = policy.new_session()
    assert policy._instruction_objects(found(0.2, 0.8), [said], [session]) == [1]
    # the words now fit the first object a little better: the session keeps the second
    assert policy._instruction_objects(found(0.6, 0.5), [said], [session]) == [1]
    assert policy._instruction_objects(found(0.6, 0.5), ["push the red block to the right"], [session]) == [0]
    session.reset()
    assert policy._instruction_objects(found(0.6, 0.5), [said], [session]) == [0]
    untracked = ECoTPolicy(model, mode="full", track_object=False)
    fresh = untracked.new_session()
    assert untracked._instruction_objects(found(0.2, 0.8), [said], [fresh]) == [1]
    assert untracked._instruction_objects(found(0.6, 0.5), [said], [fresh]) == [0]
