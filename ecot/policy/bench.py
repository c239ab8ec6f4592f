"""Per-mode latency of an ECoT policy on this machine (``ecot policy bench``).

Each mode runs ``steps`` control steps of one episode on a stream of camera images (a moving
block on a table, or frames you pass), after ``warmup`` steps; free generation with
``VLA.predict_action`` is measured the same way as the baseline.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ecot.policy.policy import MODES, ECoTPolicy, PolicyConfig


def synthetic_frames(n: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """A block moving across a table: frames that change a little every step, as a camera's do."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n):
        img = np.full((size, size, 3), 170, dtype=np.uint8)
        x = int(size * 0.2 + (size * 0.5) * t / max(n - 1, 1))
        y = size // 2
        s = max(size // 10, 4)
        img[y : y + s, x : x + s] = (200, 40, 40)
        img = np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
    return frames


def _summary(ms: Sequence[float], tokens: Sequence[float], drafted: Sequence[float] = ()) -> dict[str, float]:
    arr = np.asarray(ms, dtype=np.float64)
    out = {
        "steps": int(arr.size),
        "mean_ms": float(arr.mean()),
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "tokens_decoded_per_step": float(np.mean(tokens)) if len(tokens) else 0.0,
    }
    if len(drafted):  # of the tokens decoded, those taken from the previous step's draft
        out["tokens_from_draft_per_step"] = float(np.mean(drafted))
    return out


def bench_policy(model: Any, instruction: str, modes: Sequence[str] = MODES, steps: int = 10, warmup: int = 1,
                 reuse_steps: int = 5, frames: Sequence[np.ndarray] | None = None, baseline: bool = True,
                 config: dict[str, Any] | None = None, progress: bool = True,
                 on_step: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Mean / p50 / p95 ms per control step and tokens decoded per step, per mode (and the baseline)."""
    from tqdm import tqdm

    from ecot.model.vla import ActionDecodeError

    size = int(model.processor.image_size)
    frames = list(frames) if frames is not None else synthetic_frames(steps + warmup, size=max(size, 64))
    if len(frames) < steps + warmup:
        frames = (frames * ((steps + warmup) // len(frames) + 1))[: steps + warmup]
    results: dict[str, Any] = {}
    runs = ([("predict_action", None)] if baseline else []) + [(m, m) for m in modes]
    bar = tqdm(total=len(runs) * (steps + warmup), desc="policy bench", disable=not progress, unit="step")
    for name, mode in runs:
        ms, tokens, drafted, failed = [], [], [], 0
        policy = None
        if mode is not None:
            policy = ECoTPolicy(model, config=PolicyConfig(mode=mode, reuse_steps=reuse_steps, **(config or {})))
        for t, frame in enumerate(frames[: steps + warmup]):
            start = time.perf_counter()
            if policy is None:
                try:
                    n_tokens = len(model.predict_action(frame, instruction).generated_ids)
                except ActionDecodeError as err:  # free generation wrote no valid action: its time still counts
                    n_tokens = len(err.generated_ids)
                    failed += 1
            else:
                out = policy.step(frame, instruction)
                n_tokens = out.timings["tokens_decoded"]
                if t >= warmup:
                    drafted.append(out.timings["tokens_from_draft"])
            elapsed = (time.perf_counter() - start) * 1000
            if t >= warmup:
                ms.append(elapsed)
                tokens.append(n_tokens)
            bar.update(1)
            if on_step is not None:
                on_step(name, t)
        if policy is not None:
            policy.close()
        results[name] = _summary(ms, tokens, drafted)
        if policy is None:
            results[name]["no_valid_action_steps"] = failed  # free generation can fail; the grammar cannot
    bar.close()
    if baseline:
        base = results["predict_action"]["mean_ms"]
        for name in modes:
            results[name]["speedup_vs_predict_action"] = base / results[name]["mean_ms"]
    return results


def run_bench(checkpoint: str, out: str | None, modes: Sequence[str], steps: int, warmup: int, reuse_steps: int,
              device: str | None, dtype: str | None, instruction: str, baseline: bool) -> dict[str, Any]:
    import torch

    from ecot.model import VLA

    model = VLA.from_pretrained(checkpoint, dtype=dtype, device=device, progress=False)
    results = bench_policy(model, instruction, modes=modes, steps=steps, warmup=warmup, reuse_steps=reuse_steps,
                           baseline=baseline)
    report = {
        "checkpoint": str(checkpoint),
        "instruction": instruction,
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "modes": results,
    }
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{__import__('os').getpid()}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(path)
    return report
