"""Peak memory of loading a sharded VLA checkpoint: ours vs a naive full-state-dict load.

Writes a checkpoint of a mid-sized model (tiny-siglip vision + a wider, deeper Llama; the
same code path as the 7B release), then, each in a fresh subprocess, measures the peak RSS
*increase* over the process's memory after imports:

* ``ours``: ``VLA.from_pretrained`` (meta-device build, shard-by-shard assignment);
* ``naive`` (baseline): build the model on CPU (random init), read every shard into one state
  dict, ``load_state_dict`` — the usual pattern, which holds the model twice.

Usage::

    python benchmarks/model_loading_memory.py            # ~0.8 GB checkpoint (fp32)
    python benchmarks/model_loading_memory.py --hidden 512 --layers 4   # quick
"""

from __future__ import annotations

import argparse
import json
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
if {mode!r} == "ours":
    model = VLA.from_pretrained(path, progress=False)
else:
    from pathlib import Path
    model = VLA(VLAConfig.from_pretrained(path))
    state = {{}}
    for shard in sorted(Path(path).glob("model-*.safetensors")):
        state.update(safetensors.torch.load_file(shard))
    model.load_state_dict(state, strict=True)
    del state
seconds = time.perf_counter() - t
checksum = float(sum(p.float().sum() for p in model.parameters()))
print(json.dumps({{"peak_increase_mib": rss_mib() - base, "seconds": seconds, "checksum": checksum}}))
"""


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
        ours = measure("ours", Path(tmp))
        naive = measure("naive", Path(tmp))
        assert abs(ours["checksum"] - naive["checksum"]) <= 1e-3 * max(1.0, abs(naive["checksum"])), (ours, naive)
    write_result(
        "model_loading_memory",
        {
            "what": "peak RSS increase while loading a sharded fp32 VLA checkpoint, fresh process each",
            "model": {"parameters": n_params, "checkpoint_mib": round(size_mib, 1), "shards": shards,
                      "llm_hidden": args.hidden, "llm_layers": args.layers},  # fmt: skip
            "value": {"peak_increase_mib": round(ours["peak_increase_mib"], 1), "seconds": round(ours["seconds"], 2),
                      "peak_over_checkpoint_size": round(ours["peak_increase_mib"] / size_mib, 2)},  # fmt: skip
            "baseline": {"name": "naive: build on CPU + load all shards into one state dict + load_state_dict",
                         "peak_increase_mib": round(naive["peak_increase_mib"], 1), "seconds": round(naive["seconds"], 2),
                         "peak_over_checkpoint_size": round(naive["peak_increase_mib"] / size_mib, 2)},  # fmt: skip
            "ratio": round(ours["peak_increase_mib"] / naive["peak_increase_mib"], 3),
            "ratio_meaning": "ours / naive peak memory (lower is better)",
            "wall_seconds": round(time.time() - t, 1),
        },
    )


if __name__ == "__main__":
    main()
