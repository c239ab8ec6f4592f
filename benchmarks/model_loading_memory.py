"""Peak memory of loading a sharded VLA checkpoint: ours vs the low-memory loads a user would write.

Writes a checkpoint of a mid-sized model (tiny-siglip vision + a wider, deeper Llama; the
same code path as the 7B release), then, each in a fresh subprocess, measures the peak RSS
*increase* over the process's memory after imports, and the time:

* ``ours``: ``VLA.from_pretrained`` (meta-device build, shard-by-shard assignment, header checks);
* ``meta_assign`` (the fair baseline): build the model on the meta device, read every shard
  into one state dict, ``load_state_dict(state, assign=True)`` -- PyTorch's documented
  low-memory load, which never allocates random weights;
* ``meta_assign_per_shard`` (the strongest hand-written baseline): the same, one shard's state
  dict at a time (``strict=False``), which is what ours does without the checks;
* ``naive`` (reference, not a fair baseline): build on CPU with random init, full state dict,
  ``load_state_dict`` -- the model held twice.

The meta builds leave Llama's rotary ``inv_freq`` (a non-persistent buffer) on meta; every
meta load recreates it the same way (``materialize_meta_buffers``). Every load must give the same
parameters and buffers (checksum) with nothing left on meta. transformers' own low-memory
``from_pretrained`` does not apply: the VLA is not a transformers ``PreTrainedModel``.

Usage::

    python benchmarks/model_loading_memory.py            # ~0.8 GB checkpoint (fp32)
    python benchmarks/model_loading_memory.py --hidden 512 --layers 4   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402

_MEASURE = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch, transformers, safetensors.torch
from ecot.model import VLA, VLAConfig

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def current_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2**20

base = current_mib()
path = {path!r}
t = time.perf_counter()
mode = {mode!r}
if mode == "ours":
    model = VLA.from_pretrained(path, progress=False)
elif mode in ("meta_assign", "meta_assign_per_shard"):
    from pathlib import Path
    from ecot.model.checkpoint import materialize_meta_buffers
    model = VLA(VLAConfig.from_pretrained(path), device="meta")
    shards = sorted(Path(path).glob("model-*.safetensors"))
    if mode == "meta_assign":
        state = {{}}
        for shard in shards:
            state.update(safetensors.torch.load_file(shard))
        model.load_state_dict(state, strict=True, assign=True)
        del state
    else:
        seen = set()
        for shard in shards:
            state = safetensors.torch.load_file(shard)
            model.load_state_dict(state, strict=False, assign=True)
            seen.update(state)
            del state
        assert seen == set(model.state_dict()), "shards do not cover the model"
    materialize_meta_buffers(model, "cpu")
    model.eval()
elif mode == "naive":
    from pathlib import Path
    model = VLA(VLAConfig.from_pretrained(path))
    state = {{}}
    for shard in sorted(Path(path).glob("model-*.safetensors")):
        state.update(safetensors.torch.load_file(shard))
    model.load_state_dict(state, strict=True)
    del state
    model.eval()
else:
    raise SystemExit(f"unknown mode {{mode!r}}")
seconds = time.perf_counter() - t
peak = rss_mib() - base
tensors = list(model.parameters()) + list(model.buffers())
assert not any(t.is_meta for t in tensors), "something was left on the meta device"
checksum = float(sum(t.double().sum() for t in tensors if t.is_floating_point()))
print(json.dumps({{"peak_increase_mib": peak, "seconds": seconds, "checksum": checksum}}))
"""


MODES = ("ours", "meta_assign", "meta_assign_per_shard", "naive")
BASELINES = {
    "meta_assign": "meta-device build + all shards into one state dict + load_state_dict(assign=True)",
    "meta_assign_per_shard": "meta-device build + load_state_dict(shard, assign=True, strict=False) shard by shard",
    "naive": "reference only: build on CPU (random init) + all shards into one state dict + load_state_dict",
}


def measure(mode: str, path: Path) -> dict:
    code = _MEASURE.format(root=str(ROOT), path=str(path), mode=mode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=32064)
    parser.add_argument("--shard-size", default="200MB")
    args = parser.parse_args()

    import torch

    from ecot.model import VLA, VLAConfig

    text = {
        "model_type": "llama", "hidden_size": args.hidden, "intermediate_size": int(args.hidden * 2.6875),
        "num_hidden_layers": args.layers, "num_attention_heads": max(1, args.hidden // 64),
        "num_key_value_heads": max(1, args.hidden // 64), "pad_token_id": args.vocab - 64, "vocab_size": args.vocab,
    }  # fmt: skip
    config = VLAConfig.preset("tiny-siglip", text_config=text, pad_token_id=args.vocab - 64)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = VLA(config)
        n_params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(tmp, max_shard_size=args.shard_size)
        del model
        size_mib = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors")) / 2**20
        shards = len(list(Path(tmp).glob("*.safetensors")))
        t = time.time()
        runs = {}
        for mode in MODES:
            load = [round(x, 2) for x in os.getloadavg()]
            runs[mode] = {**measure(mode, Path(tmp)), "load_average_before": load}
    ref = runs["ours"]["checksum"]
    for mode, run in runs.items():
        assert abs(run["checksum"] - ref) <= 1e-6 * max(1.0, abs(ref)), (mode, runs)

    def figures(run: dict) -> dict:
        return {"peak_increase_mib": round(run["peak_increase_mib"], 1), "seconds": round(run["seconds"], 2),
                "peak_over_checkpoint_size": round(run["peak_increase_mib"] / size_mib, 2)}  # fmt: skip

    ours = runs["ours"]
    write_result(
        "model_loading_memory",
        {
            "what": "peak RSS increase while loading a sharded fp32 VLA checkpoint, fresh process each",
            "model": {"parameters": n_params, "checkpoint_mib": round(size_mib, 1), "shards": shards,
                      "llm_hidden": args.hidden, "llm_layers": args.layers},  # fmt: skip
            "value": figures(ours),
            "baseline": {mode: {"name": BASELINES[mode], **figures(runs[mode])} for mode in BASELINES},
            "ratio": {
                mode: {"peak": round(ours["peak_increase_mib"] / runs[mode]["peak_increase_mib"], 3),
                       "seconds": round(ours["seconds"] / runs[mode]["seconds"], 3)}
                for mode in BASELINES
            },  # fmt: skip
            "ratio_meaning": "ours / baseline, peak memory and load time (lower is better for both)",
            "headline_baseline": "meta_assign",
            "same_weights": "every load's parameter+buffer checksum equals ours (rel. 1e-6), nothing left on meta",
            "runs": runs,
            "wall_seconds": round(time.time() - t, 1),
        },
    )


if __name__ == "__main__":
    main()
