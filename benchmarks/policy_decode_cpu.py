"""Decode speed of the policy runtime's loop vs transformers ``generate`` with its KV cache, on CPU.

The tiny-siglip preset (random weights, float32, batch 1, 112 px -> 64 patches + the Vicuna
prompt). Both decode the same ``--new-tokens`` greedy tokens after the same prefill (EOS ignored),
and the ids are checked to be equal. Decode time excludes the prefill for both: ours is timed
after its prefill; for ``generate`` the time of a 1-token generation (prefill + first token) is
subtracted from that of ``new_tokens + 1`` tokens. Runs alternate (ours, generate, ours, ...) so
a busy machine slows both alike; the median of ``--repeats`` is reported. Times are this process's
CPU time (``time.process_time``, one torch thread), which a machine shared with other jobs does
not inflate the way it inflates wall-clock time; wall-clock figures are recorded beside them.

Usage::

    python benchmarks/policy_decode_cpu.py [--new-tokens 128] [--repeats 5] [--threads 1] [--compile]

``--compile`` also times our loop with ``compile=True`` (the static-shape step under
``torch.compile``) in the same alternation, and writes ``policy_decode_cpu_compiled.json`` (its
``ratio`` is the compiled loop's).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1: small models run best single-threaded)")
    parser.add_argument("--compile", action="store_true",
                        help="our loop with compile=True (the static-shape step under torch.compile / inductor)")
    args = parser.parse_args()

    import os

    import torch

    from ecot.model import VLA, VLAConfig
    from ecot.policy.decoder import DecodeRequest, ECoTDecoder
    from ecot.prompts import conditioning_prompt, inference_prompt

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_policy import SCENES, scene_image  # the tiny tokenizer's corpus and a scene image

    from ecot.model import VLAProcessor
    from ecot.model.tokenizer import train_tiny_tokenizer
    from ecot.prompts import training_text

    torch.manual_seed(0)
    config = VLAConfig.preset("tiny-siglip")
    model = VLA(config).eval()
    tokenizer = train_tiny_tokenizer([training_text(s["instruction"], s["reasoning"], "", "vicuna") for s in SCENES])
    processor = VLAProcessor(config, tokenizer)
    model.processor = processor
    instruction = SCENES[0]["instruction"]
    pixels = processor.image_transform(scene_image(0))
    prompt_ids = processor.encode_prompt(inference_prompt(instruction))
    n = args.new_tokens
    decoder = ECoTDecoder(model, processor, grammar=False, max_free_tokens=n + 1, ignore_eos=True)
    compiled = (ECoTDecoder(model, processor, grammar=False, max_free_tokens=n + 1, ignore_eos=True, compile=True,
                            tables=decoder.tables) if args.compile else None)

    clock = time.process_time

    def ours_prefill() -> float:
        t = clock()
        small = ECoTDecoder(model, processor, grammar=False, max_free_tokens=1, ignore_eos=True, tables=decoder.tables)
        small.decode([DecodeRequest(conditioning_prompt(instruction), pixels, 0)])
        return clock() - t

    def ours(dec=decoder) -> tuple[float, list[int]]:
        t = clock()
        result = dec.decode([DecodeRequest(conditioning_prompt(instruction), pixels, 0)])[0]
        return clock() - t, result.free_ids

    def generate(tokens: int) -> tuple[float, list[int]]:
        kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
                      eos_token_id=None)
        t = clock()
        ids = model.generate(prompt_ids, pixels.unsqueeze(0), **kwargs)[0].tolist()
        return clock() - t, ids

    with torch.no_grad():
        ours(), generate(2)  # warm-up
        if compiled is not None:
            ours(compiled), ours(compiled)  # compilation
        ours_s, gen_s, comp_s, walls = [], [], [], {"ours": [], "generate": []}
        same = True
        for _ in range(args.repeats):
            w = time.perf_counter()
            first = ours_prefill()
            whole, ours_ids = ours()
            walls["ours"].append(time.perf_counter() - w)
            ours_s.append((whole - first) / n)
            if compiled is not None:
                whole_c, comp_ids = ours(compiled)
                comp_s.append((whole_c - first) / n)
                same &= comp_ids == ours_ids
            w = time.perf_counter()
            first, _ = generate(1)
            whole, gen_ids = generate(n + 1)
            walls["generate"].append(time.perf_counter() - w)
            gen_s.append((whole - first) / n)
            same &= ours_ids == gen_ids
    ours_tps = 1 / statistics.median(ours_s)
    gen_tps = 1 / statistics.median(gen_s)
    value = {"ours_tokens_per_s": round(ours_tps, 1)}
    best = ours_tps
    if comp_s:
        best = 1 / statistics.median(comp_s)
        value["ours_compiled_tokens_per_s"] = round(best, 1)
        value["ours_eager_ratio"] = round(ours_tps / gen_tps, 2)
    write_result(
        "policy_decode_cpu_compiled" if args.compile else "policy_decode_cpu",
        {
            "what": "greedy decode tokens/s, tiny-siglip (random weights, float32, batch 1), prefill excluded"
                    + (", our loop compiled (torch.compile, inductor)" if args.compile else ""),
            "torch_threads": args.threads,
            "load_average": os.getloadavg(),
            "new_tokens": n,
            "clock": "process CPU time",
            "wall_s_per_repeat": {k: round(statistics.median(v), 2) for k, v in walls.items()},
            "same_ids": bool(same),
            "value": value,
            "baseline": {"transformers_generate_kv_cache_tokens_per_s": round(gen_tps, 1)},
            "ratio": round(best / gen_tps, 2),
            "ratio_meaning": "our decode speed / transformers generate's (higher is better); goal >= 2",
        },
    )


if __name__ == "__main__":
    main()
