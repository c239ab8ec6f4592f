"""Tiny-model inference speed on CPU: prefill, and greedy decode (prefill excluded) vs transformers ``generate``.

For each tiny preset (random weights, float32, 112 px images -> 64 patches, the same tiny
tokenizer and the same prompt for both decoders):

* ``prefill_ms``: one forward over [BOS] + 64 patches + the inference prompt (vision towers
  once), as the model runs it;
* ours: the policy runtime's decode loop (``ecot.policy.decoder.ECoTDecoder``, no grammar,
  EOS ignored), what ``ECoTPolicy`` runs;
* baseline: what a user would otherwise run -- transformers ``generate`` with its KV cache on
  the same model and prompt (``VLA.generate``: the image is encoded once, then
  ``LlamaForCausalLM.generate(inputs_embeds=...)``).

Both decode the same ``--new-tokens`` greedy tokens and the ids are checked to be equal. Decode
tokens/s excludes the prefill for both: the wall time of a 1-token decode (prefill + first
token) is subtracted from that of ``new_tokens + 1`` tokens; the 1-token times are reported as
each decoder's time to first token. Runs alternate (ours, generate, ours, ...) so both see the
same machine load; the medians are reported. torch runs one thread by default (``--threads``):
on the shared 2-core machine two threads, each stalling whenever the other is descheduled, made
both decoders many times slower (prefill 23 ms -> 760 ms in one trial).

Usage::

    python benchmarks/model_speed.py [--new-tokens 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402


def _tiny_tokenizer():
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_policy import SCENES, scene_image  # the tiny tokenizer's corpus and a scene image

    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text

    tokenizer = train_tiny_tokenizer([training_text(s["instruction"], s["reasoning"], "", "vicuna") for s in SCENES])
    return tokenizer, SCENES[0]["instruction"], scene_image(0)


def bench_preset(preset: str, new_tokens: int, repeats: int, tokenizer, instruction: str, image) -> dict:
    import torch

    from ecot.model import VLA, VLAConfig, VLAProcessor
    from ecot.policy.decoder import DecodeRequest, ECoTDecoder
    from ecot.prompts import conditioning_prompt, inference_prompt

    torch.manual_seed(0)
    config = VLAConfig.preset(preset)
    model = VLA(config).eval()
    processor = VLAProcessor(config, tokenizer)
    model.processor = processor
    pixels = processor.image_transform(image)
    prompt = inference_prompt(instruction, config.prompt_style)
    prompt_ids = processor.encode_prompt(prompt)
    request = DecodeRequest(conditioning_prompt(instruction, config.prompt_style), pixels, 0)
    n = new_tokens
    decoder = ECoTDecoder(model, processor, grammar=False, max_free_tokens=n + 1, ignore_eos=True)
    first_token = ECoTDecoder(model, processor, grammar=False, max_free_tokens=1, ignore_eos=True, tables=decoder.tables)

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out

    def ours(dec) -> list[int]:
        return dec.decode([request])[0].free_ids

    def generate(tokens: int) -> list[int]:
        kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                      pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=None)  # fmt: skip
        return model.generate(prompt_ids, pixels.unsqueeze(0), **kwargs)[0].tolist()

    with torch.no_grad():
        model(input_ids=prompt_ids, pixel_values=pixels.unsqueeze(0))  # warm-up (one-off set-up costs)
        ours(decoder), ours(first_token), generate(1), generate(2)  # warm-up
        prefill, ours_first, ours_whole, gen_first, gen_whole = [], [], [], [], []
        same = True
        for _ in range(repeats):
            prefill.append(timed(lambda: model(input_ids=prompt_ids, pixel_values=pixels.unsqueeze(0)))[0])
            ours_first.append(timed(lambda: ours(first_token))[0])
            seconds, ours_ids = timed(lambda: ours(decoder))
            ours_whole.append(seconds)
            gen_first.append(timed(lambda: generate(1))[0])
            seconds, gen_ids = timed(lambda: generate(n + 1))
            gen_whole.append(seconds)
            same &= ours_ids == gen_ids and len(ours_ids) == n + 1

    def decode_tps(whole: list[float], first: list[float]) -> float:
        return n / statistics.median(w - f for w, f in zip(whole, first))

    ours_tps, gen_tps = decode_tps(ours_whole, ours_first), decode_tps(gen_whole, gen_first)
    ms = lambda xs: round(statistics.median(xs) * 1000, 1)  # noqa: E731
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "sequence_prefill_tokens": prompt_ids.shape[1] + model.num_patches,
        "prefill_ms": ms(prefill),
        "ours_first_token_ms": ms(ours_first),
        "ours_decode_tokens_per_s": round(ours_tps, 1),
        "generate_first_token_ms": ms(gen_first),
        "generate_decode_tokens_per_s": round(gen_tps, 1),
        "ratio": round(ours_tps / gen_tps, 2),
        "same_ids": same,
        "raw_seconds": {"prefill": prefill, "ours_first": ours_first, "ours_whole": ours_whole,
                        "generate_first": gen_first, "generate_whole": gen_whole},  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both decoders (default 1)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    tokenizer, instruction, image = _tiny_tokenizer()
    load_before = [round(x, 2) for x in os.getloadavg()]
    bench_preset("tiny-siglip", 4, 1, tokenizer, instruction, image)  # process warm-up: library set-up costs
    results = {p: bench_preset(p, args.new_tokens, args.repeats, tokenizer, instruction, image)
               for p in ("tiny-siglip", "tiny-dinosiglip")}  # fmt: skip
    if not all(r["same_ids"] for r in results.values()):
        raise SystemExit(f"ours and generate decoded different ids: {results}")
    write_result(
        "model_speed",
        {
            "what": "tiny VLA on CPU (random weights, float32, 112px, 64 patches, batch 1): prefill latency and "
                    "greedy decode tokens/s with the prefill excluded, same prompt and same ids for both decoders",
            "torch_threads": torch.get_num_threads(),
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "load_average_before": load_before,
            "value": {p: {"prefill_ms": r["prefill_ms"], "decode_tokens_per_s": r["ours_decode_tokens_per_s"],
                          "first_token_ms": r["ours_first_token_ms"]} for p, r in results.items()},  # fmt: skip
            "baseline": {p: {"name": "transformers generate with its KV cache (VLA.generate)",
                             "decode_tokens_per_s": r["generate_decode_tokens_per_s"],
                             "first_token_ms": r["generate_first_token_ms"]} for p, r in results.items()},  # fmt: skip
            "ratio": {p: r["ratio"] for p, r in results.items()},
            "ratio_meaning": "our decode tokens/s / transformers generate's, prefill excluded for both (higher is better)",
            "details": results,
        },
    )


if __name__ == "__main__":
    main()
