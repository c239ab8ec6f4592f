"""Tiny-model inference speed on CPU: prefill, and decode with the KV cache vs without.

For each tiny preset (random weights, float32, 112 px images -> 64 patches):

* ``prefill_ms``: one forward over [BOS] + 64 patches + the inference prompt (Vicuna or pure);
* ``decode_tokens_per_s``: greedy ``VLA.generate`` of ``--new-tokens`` tokens with the KV cache
  (what predict_action does);
* baseline: the same greedy tokens decoded without a cache (full forward per token), in the same run.

Usage::

    python benchmarks/model_speed.py [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_preset(preset: str, new_tokens: int, repeats: int) -> dict:
    import torch

    from ecot.model import VLA, VLAConfig
    from ecot.prompts import inference_prompt

    torch.manual_seed(0)
    config = VLAConfig.preset(preset)
    model = VLA(config).eval()
    # prompt length as the tiny tokenizer gives it (~1.3 tokens per word); ids are random
    words = len(inference_prompt("put the red block in the bowl", config.prompt_style).split())
    prompt_len = int(words * 1.3) + 1
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 700, (1, prompt_len), generator=g)
    ids[0, 0] = 1
    pixels = torch.randn(1, config.in_channels, config.image_size, config.image_size, generator=g)

    with torch.no_grad():
        model(input_ids=ids, pixel_values=pixels)  # warm-up (first calls pay one-off set-up costs)
        prefill = _median_time(lambda: model(input_ids=ids, pixel_values=pixels), repeats)
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=1024)
        model.generate(ids, pixels, **kwargs)  # warm-up
        cached = _median_time(lambda: model.generate(ids, pixels, **kwargs), repeats)

        def uncached():
            seq = ids
            for _ in range(new_tokens):
                logits = model(input_ids=seq, pixel_values=pixels, use_cache=False).logits
                seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)

        plain = _median_time(uncached, max(1, repeats - 1))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "sequence_prefill_tokens": prompt_len + model.num_patches,
        "prefill_ms": round(prefill * 1000, 1),
        "decode_tokens_per_s": round(new_tokens / cached, 1),
        "baseline_no_cache_tokens_per_s": round(new_tokens / plain, 1),
        "ratio": round(plain / cached, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    bench_preset("tiny-siglip", 4, 1)  # process warm-up: the first model built pays library set-up costs
    results = {p: bench_preset(p, args.new_tokens, args.repeats) for p in ("tiny-siglip", "tiny-dinosiglip")}
    write_result(
        "model_speed",
        {
            "what": "tiny VLA on CPU (float32, 112px, 64 patches): prefill latency and greedy decode speed",
            "torch_threads": torch.get_num_threads(),
            "new_tokens": args.new_tokens,
            "value": {p: {k: r[k] for k in ("prefill_ms", "decode_tokens_per_s")} for p, r in results.items()},
            "baseline": {p: {"no_cache_tokens_per_s": r["baseline_no_cache_tokens_per_s"]} for p, r in results.items()},
            "ratio": {p: r["ratio"] for p, r in results.items()},
            "ratio_meaning": "decode speed with the KV cache / without (higher is better)",
            "details": results,
        },
    )


if __name__ == "__main__":
    main()
