"""Evaluation results on disk: the episode log, its aggregation into ``results.json``, confidence intervals.

Pure Python + numpy (no torch, no MuJoCo), so the robot-side runners (LIBERO, WidowX), which run
in their own environments, write the same layout as ``ecot eval``:

* ``DIR/episodes.jsonl`` -- one JSON object per finished episode, appended with one ``write``
  call each (a ``kill -9`` loses at most the episodes in flight; a torn last line, which only a
  machine crash can leave, is dropped on the next open);
* ``DIR/results.json`` -- the aggregate, written atomically from the episode log.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

EPISODES_NAME = "episodes.jsonl"
RESULTS_NAME = "results.json"
CONFIG_NAME = "eval_config.json"


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """95 % Wilson score interval of a success rate (well behaved at 0 and n, unlike the normal one)."""
    if n <= 0:
        return [0.0, 1.0]
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def latency_summary(values: Iterable[float]) -> dict[str, float] | None:
    """mean / p50 / p95 in milliseconds, or None without measurements."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return None
    return {"mean": round(float(arr.mean()), 3), "p50": round(float(np.percentile(arr, 50)), 3),
            "p95": round(float(np.percentile(arr, 95)), 3)}


def write_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


class EpisodeLog:
    """``episodes.jsonl``: read what is finished, append new episodes atomically (one writer)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / EPISODES_NAME
        self.records: dict[int, dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good = 0
        pos = 0
        for line in raw.splitlines(keepends=True):
            pos += len(line)
            if not line.endswith(b"\n"):
                break  # a torn last line
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(record, dict) or "index" not in record:
                raise ValueError(f"{self.path}: line without an episode index: {line[:200]!r}")
            self.records[int(record["index"])] = record
            good = pos
        if good != len(raw):  # drop the torn tail so appends start on a fresh line
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def __contains__(self, index: int) -> bool:
        return index in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[int(record["index"])] = record

    def ordered(self, limit: int | None = None) -> list[dict]:
        keys = sorted(k for k in self.records if limit is None or k < limit)
        return [self.records[k] for k in keys]


def check_config(out: str | Path, identity: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
    """Store the run's settings; refuse to resume a directory written with different ones.

    ``defaults``: each setting's default, which a setting missing from an older run's file (added
    since that run was written) is compared at."""
    path = Path(out) / CONFIG_NAME
    if path.exists():
        previous = json.loads(path.read_text())
        previous = {**{k: v for k, v in (defaults or {}).items() if k in identity}, **previous}
        if previous != identity:
            diff = {k: (previous.get(k), identity.get(k)) for k in sorted(set(previous) | set(identity))
                    if previous.get(k) != identity.get(k)}
            raise ValueError(f"{out} holds an evaluation with different settings (existing, requested): {diff}; "
                             "use another --out directory, or the same settings to resume")
    else:
        write_atomic(path, json.dumps(identity, indent=2, sort_keys=True))


def aggregate(records: Sequence[dict], policy: str, env: str, split: str | None,
              faithfulness: dict | None = None) -> dict[str, Any]:
    """The ``results.json`` dict of finished episode records (each with ``task``, ``success``, ``latency_ms``).

    Exactly the keys ``policy, env, split, episodes, success_rate, success_ci95, by_task,
    faithfulness, latency_ms``; the run's settings are in ``eval_config.json`` beside it.
    """
    n = len(records)
    successes = sum(bool(r["success"]) for r in records)
    by_task: dict[str, dict] = {}
    for task in sorted({str(r["task"]) for r in records}):
        rs = [r for r in records if str(r["task"]) == task]
        k = sum(bool(r["success"]) for r in rs)
        by_task[task] = {"episodes": len(rs), "success_rate": round(k / len(rs), 6)}
    latencies = [v for r in records for v in (r.get("latency_ms") or [])]
    out = {
        "policy": policy,
        "env": env,
        "split": split,
        "episodes": n,
        "success_rate": round(successes / n, 6) if n else 0.0,
        "success_ci95": wilson_interval(successes, n),
        "by_task": by_task,
        "faithfulness": faithfulness,
        "latency_ms": latency_summary(latencies),
    }
    return out
