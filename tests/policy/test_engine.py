"""Our decode engine equals transformers: greedy ids vs ``generate``, static-shape and compiled steps vs eager."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ecot.model import VLA, VLAConfig
from ecot.policy import ECoTPolicy
from ecot.policy.decoder import DecodeRequest, ECoTDecoder
from ecot.prompts import conditioning_prompt, inference_prompt

from tiny_policy import NORM_STATS, SCENES, scene_image


@pytest.fixture(scope="module")
def trained(trained_checkpoint):
    return VLA.from_pretrained(trained_checkpoint, progress=False)


def _random(preset: str, trained) -> VLA:
    from ecot.model import VLAProcessor

    torch.manual_seed(1)
    model = VLA(VLAConfig.preset(preset, norm_stats=NORM_STATS)).eval()
    model.processor = VLAProcessor(model.config, trained.processor.tokenizer)
    return model


@pytest.fixture(scope="module", params=["tiny-siglip", "tiny-dinosiglip"])
def random_model(request, trained):
    return _random(request.param, trained)


@pytest.fixture(scope="module")
def random_siglip(trained):
    return _random("tiny-siglip", trained)


def _generate(model, instruction: str, image, n: int) -> list[int]:
    proc = model.processor
    ids = proc.encode_prompt(inference_prompt(instruction, proc.prompt_style))
    pixels = proc.image_transform(image).unsqueeze(0)
    return model.generate(ids, pixels, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                          pad_token_id=proc.tokenizer.pad_token_id)[0].tolist()


def test_free_decoding_equals_transformers_generate(random_model):
    """Greedy ids of our loop (own KV cache, fused projections, own attention) == generate's, per sequence and batched."""
    proc = random_model.processor
    decoder = ECoTDecoder(random_model, proc, grammar=False, max_free_tokens=30, ignore_eos=True)
    instructions = ["put the red block in the bowl", "go", "push the blue ball to the left side of the big table please"]
    images = [scene_image(i, size=96 + 16 * i) for i in range(3)]
    requests = [DecodeRequest(conditioning_prompt(ins, proc.prompt_style), proc.image_transform(im), 0)
                for ins, im in zip(instructions, images)]
    batched = decoder.decode(requests)
    for request, result, ins, im in zip(requests, batched, instructions, images):
        expected = _generate(random_model, ins, im, 30)
        assert decoder.decode([request])[0].free_ids == expected
        assert result.free_ids == expected


def test_pipelined_free_decoding_gives_the_eager_ids(trained):
    """Free greedy decoding with the compiled step runs one step ahead of the host (the next id stays
    on the device): same ids as the eager loop, one sequence and a batch whose sequences end (EOS) at
    different steps; the step launched after the last token is the only extra forward."""
    proc = trained.processor
    requests = [DecodeRequest(conditioning_prompt(scene["instruction"], proc.prompt_style),
                              proc.image_transform(scene_image(i, noise_seed=2)), 0) for i, scene in enumerate(SCENES[:3])]
    eager = ECoTDecoder(trained, proc, grammar=False, max_free_tokens=200)
    ahead = ECoTDecoder(trained, proc, grammar=False, max_free_tokens=200, compile="none")
    assert ahead.pipeline
    expected = [eager.decode([r])[0] for r in requests]
    eos = proc.tokenizer.eos_token_id
    assert all(e.free_ids[-1] == eos for e in expected) and len({len(e.free_ids) for e in expected}) > 1
    for r, e in zip(requests, expected):
        got = ahead.decode([r])[0]
        assert got.free_ids == e.free_ids and got.ids == e.ids and got.answer == e.answer
        assert got.forwards == e.forwards + 1
    batched = ahead.decode(requests)
    assert [b.free_ids for b in batched] == [e.free_ids for e in expected]


@pytest.mark.parametrize("attend_filled", [True, False], ids=["filled-part (CPU)", "whole-cache (GPU)"])
def test_static_shape_step_equals_the_eager_step(trained, attend_filled):
    """The static-cache step that torch.compile / CUDA graphs replay gives the eager ids, attending
    over the filled part of the cache (as on a CPU) or over the whole cache, masked (as on a GPU)."""
    eager, static = ECoTPolicy(trained), ECoTPolicy(trained, compile="none")
    static.decoder.engine.attend_filled = attend_filled
    for i, scene in enumerate(SCENES):
        a = eager.step(scene_image(i, noise_seed=4), scene["instruction"])
        b = static.step(scene_image(i, noise_seed=4), scene["instruction"])
        assert a.text == b.text and a.action_ids == b.action_ids


SMALL_BUDGETS = {"PLAN:": 12, "VISIBLE OBJECTS:": 24, "GRIPPER POSITION:": 16}  # random weights fill every budget


def _against_eager(model, modes, configure, noise_seed: int, random: bool, **edit) -> list[tuple]:
    """Step an eager policy and a static-step one (set up by ``configure(decoder)``, attending over the
    whole cache as on a GPU) side by side on three scenes, single and batched, with ``edit`` applied;
    asserts the same text and actions and returns the (eager, other) single-step outputs."""
    small = {"budgets": SMALL_BUDGETS} if random else {}
    images = [scene_image(i, noise_seed=noise_seed) for i in range(3)]
    instructions = [scene["instruction"] for scene in SCENES[:3]]
    pairs = []
    for mode in modes:
        eager = ECoTPolicy(model, mode=mode, **small)
        other = ECoTPolicy(model, mode=mode, compile="none", **small)
        other.decoder.engine.attend_filled = False
        configure(other.decoder)
        for policy in (eager, other):
            policy.edit(**edit)
        for image, instruction in zip(images, instructions):
            a, b = eager.step(image, instruction), other.step(image, instruction)
            assert a.text == b.text and a.action_ids == b.action_ids, mode
            pairs.append((a, b))
        batched_eager, batched = eager.step_batch(images, instructions), other.step_batch(images, instructions)
        assert [o.text for o in batched] == [o.text for o in batched_eager]
        assert [o.action_ids for o in batched] == [o.action_ids for o in batched_eager]
    return pairs


@pytest.mark.parametrize("model_name", ["trained", "random"])
def test_short_forced_text_through_the_static_step_gives_the_eager_ids(model_name, trained, random_model):
    """On a GPU, forced tags of up to 4 ids are fed one id per compiled step instead of one eager
    forward: same text and actions, reuse and edits (rollback, forced values) included."""
    model = trained if model_name == "trained" else random_model

    def configure(decoder):
        decoder.compiled_feed_max = 4

    pairs = _against_eager(model, ("full", "reuse"), configure, noise_seed=5, random=model_name == "random",
                           move="move left")
    assert all("MOVE: move left" in b.text for _, b in pairs)
    assert any(b.timings["forwards"] > a.timings["forwards"] for a, b in pairs)  # some went one id at a time


@pytest.mark.parametrize("model_name", ["trained", "random"])
def test_running_ahead_of_the_grammar_gives_the_step_by_step_ids(model_name, trained, random_siglip):
    """With the compiled step the grammar path runs one step ahead of the host (the next step is
    launched on the device's guess while the host chooses): the same text and actions as the
    step-by-step eager loop in every mode, with edits and batches, most guesses right and the wrong
    ones undone."""
    model = trained if model_name == "trained" else random_siglip

    def configure(decoder):
        decoder.run_ahead = True

    pairs = _against_eager(model, ("full", "reuse", "no-reasoning"), configure, noise_seed=6,
                           random=model_name == "random", move="move left")
    for a, b in pairs:
        # Every kept run-ahead step is a step the eager loop ran too; a discarded one is extra.
        assert b.timings["forwards"] == a.timings["forwards"] + b.timings["forwards_discarded"]
    assert sum(b.timings["forwards_ahead"] - b.timings["forwards_discarded"] for _, b in pairs) > 0
    if model_name == "random":  # and some guesses were wrong (a random model ends fields unexpectedly)
        assert sum(b.timings["forwards_discarded"] for _, b in pairs) > 0


@pytest.mark.parametrize("model_name", ["trained", "random"])
def test_forced_text_through_the_compiled_chunk_step_gives_the_eager_ids(model_name, trained, random_siglip):
    """Forced text of 2 .. chunk_size ids goes through the second static-shape step (one replay per
    tag on a GPU): the eager loop's text and actions, reuse, edits and batches included."""
    model = trained if model_name == "trained" else random_siglip
    chunks: list[int] = []

    def configure(decoder):
        decoder.chunk_size = 32
        real = decoder.engine.compiled_chunk

        def counted(cache, ids, n_new, backend="inductor"):
            chunks.append(max(n_new))
            return real(cache, ids, n_new, backend)

        decoder.engine.compiled_chunk = counted

    _against_eager(model, ("full", "reuse"), configure, noise_seed=7, random=model_name == "random",
                   subtask="reach the block")
    assert chunks and all(2 <= n <= 32 for n in chunks)


def test_chunk_step_refuses_what_does_not_fit(random_siglip):
    from ecot.policy.engine import LlamaEngine

    engine = LlamaEngine(random_siglip.language_model)
    cache = engine.new_cache(1, 256)
    cache.lengths = [250]
    with pytest.raises(ValueError, match="holds 256 positions"):
        engine.compiled_chunk(cache, torch.ones(1, 8, dtype=torch.long), [3], backend="none")
    cache.lengths = [10]
    with pytest.raises(ValueError, match="at least one id"):
        engine.compiled_chunk(cache, torch.ones(1, 8, dtype=torch.long), [0], backend="none")


def test_engines_on_one_model_share_the_fused_weights(random_model):
    """A second policy on the same model reuses the fused q/k/v and gate/up tensors (no second copy of
    the weights), and a replaced weight (e.g. a new checkpoint loaded with assign) is fused anew."""
    first, second = ECoTDecoder(random_model, random_model.processor), ECoTDecoder(random_model, random_model.processor)
    for a, b in zip(first.engine.fused, second.engine.fused):
        assert a["qkv"] is b["qkv"] and a["gate_up"] is b["gate_up"]
    layer = random_model.language_model.model.layers[0]
    before = first.engine.fused[0]["qkv"]
    layer.self_attn.k_proj.weight = torch.nn.Parameter(layer.self_attn.k_proj.weight.detach().clone(), requires_grad=False)
    third = ECoTDecoder(random_model, random_model.processor)
    assert third.engine.fused[0]["qkv"] is not before
    torch.testing.assert_close(third.engine.fused[0]["qkv"], before)


def test_compiled_step_inputs_other_than_ids_and_lengths_are_static(random_model):
    """CUDA graphs copy every non-static input of the compiled step on each replay: the weights,
    the rotary table and the cache must all be fixed-address inputs (at 7B a missed weight costs
    gigabytes of copies per token). Checked on the graph dynamo hands to the compiler."""
    from ecot.policy.engine import LlamaEngine

    engine = LlamaEngine(random_model.language_model)
    cache = engine.new_cache(1, 256)
    seen: list[list[str]] = []

    def backend(gm, example_inputs):
        names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
        seen.append([name for name, x in zip(names, example_inputs) if isinstance(x, torch.Tensor)
                     and not isinstance(x, torch.nn.Parameter) and getattr(x, "_dynamo_static_input_type", None) is None])
        return gm

    torch._dynamo.reset()
    engine._compiled = torch.compile(engine._static_step, backend=backend, dynamic=False)
    with torch.no_grad():
        eager_logits = engine.forward(engine.new_cache(1, 256), engine.embed_ids(torch.tensor([[1]])), [1])
        logits = engine.compiled_step(cache, torch.tensor([1]))
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-4)
    assert len(seen) == 1
    assert sorted(seen[0]) == ["l_ids_", "l_lengths_"], seen[0]


@pytest.mark.slow
def test_compiled_decode_equals_eager_greedy_ids(trained):
    """torch.compile (inductor) of the decode step: same greedy ids (slow: compiles C++ kernels)."""
    eager, compiled = ECoTPolicy(trained), ECoTPolicy(trained, compile=True)
    scene = SCENES[2]
    a = eager.step(scene_image(2), scene["instruction"])
    b = compiled.step(scene_image(2), scene["instruction"])
    assert a.text == b.text and a.action_ids == b.action_ids


def test_policy_bench_command(trained_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "ecot", "policy", "bench", str(trained_checkpoint), "--steps", "2", "--out", str(out),
           "--modes", "full,reuse,no-reasoning"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    modes = report["modes"]
    assert set(modes) == {"predict_action", "full", "reuse", "no-reasoning"}
    assert modes["no-reasoning"]["tokens_decoded_per_step"] == 7
    assert modes["reuse"]["tokens_decoded_per_step"] < modes["full"]["tokens_decoded_per_step"]
    assert all(m["steps"] == 2 and m["mean_ms"] > 0 for m in modes.values())
    assert "no-reasoning" in done.stdout and "speedup" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "ecot", "policy", "bench", str(trained_checkpoint), "--modes", "fast"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown mode" in bad.stderr and "Traceback" not in bad.stderr
