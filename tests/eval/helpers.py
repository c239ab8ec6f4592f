"""Shared helpers of the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path


def without_timing(record: dict) -> dict:
    """An episode record without wall-clock measurements (which differ between any two runs)."""
    r = dict(record)
    r.pop("latency_ms", None)
    r["per_step"] = [{k: v for k, v in s.items() if k != "latency_ms"} for s in r.get("per_step", [])]
    return r


def episodes(out: Path) -> list[dict]:
    lines = (Path(out) / "episodes.jsonl").read_text().splitlines()
    return sorted((without_timing(json.loads(line)) for line in lines), key=lambda r: r["index"])


def results_without_timing(out: Path) -> dict:
    r = json.loads((Path(out) / "results.json").read_text())
    r.pop("latency_ms")
    return r
