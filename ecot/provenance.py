"""Where a features file came from: dataset fingerprints, and the checks training makes.

A dataset's **fingerprint** is a hash of its collection settings and, for every episode, its
``(file_path, episode_id, length)``. ``ecot annotate`` records the fingerprint of the episodes
it annotated in ``OUT/provenance.json`` beside ``embodied_features.json``. ``ecot train`` with a
recipe that uses reasoning then:

* refuses a **stale** features file — the dataset changed since annotation (other collection
  settings, or an annotated episode is gone or has another length) — naming both fingerprints;
* refuses features that do not **cover** every training episode (every frame has reasoning),
  reporting the coverage, unless ``--allow-partial-reasoning`` accepts it explicitly (the
  coverage is then logged in ``metrics.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from ecot.errors import EcotError

PROVENANCE_NAME = "provenance.json"
COLLECT_META = "meta/ecot_collect.json"


class ProvenanceError(EcotError):
    """Features that do not belong to, or do not cover, the dataset being trained on."""


def episode_record(dataset: Any, i: int) -> tuple[str, str, int]:
    """``(file_path, episode_id, length)`` of episode ``i`` without decoding its images when possible."""
    if hasattr(dataset, "episode_key"):  # a reader that knows its keys without reading the episode
        file_path, episode_id = dataset.episode_key(i)
        return str(file_path), str(episode_id), int(dataset.episode_length(i))
    from ecot.data.lerobot import LeRobotLayoutDataset

    if isinstance(dataset, LeRobotLayoutDataset):  # metadata only, no parquet read
        meta = dataset._metadata(i, 0)
        return str(meta.get("file_path", "")), str(meta.get("episode_id", "")), int(dataset.episode_length(i))
    if hasattr(dataset, "episode_length") and hasattr(dataset, "step"):
        row = dataset.step(i, 0)
        return str(row.file_path), str(row.episode_id), int(dataset.episode_length(i))
    ep = dataset[i]
    return str(ep.file_path), str(ep.episode_id), len(ep)


def collection_settings(dataset: Any) -> dict:
    """The settings the dataset was collected with (``meta/ecot_collect.json`` for sim data), else {}."""
    root = getattr(dataset, "root", None)
    if root is not None and (Path(root) / COLLECT_META).is_file():
        settings = json.loads((Path(root) / COLLECT_META).read_text())
        return {k: v for k, v in settings.items() if k not in ("episodes", "workers")}
    return {}


def fingerprint_of(settings: dict, records: Sequence[Sequence]) -> str:
    blob = json.dumps({"settings": settings, "episodes": [list(r) for r in records]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dataset_provenance(dataset: Any, n: int | None = None) -> dict:
    """Fingerprint, settings and episode records of the first ``n`` episodes (all by default)."""
    n = len(dataset) if n is None else min(n, len(dataset))
    records = [episode_record(dataset, i) for i in range(n)]
    settings = collection_settings(dataset)
    return {"fingerprint": fingerprint_of(settings, records), "settings": settings,
            "episodes": [list(r) for r in records]}


def write_provenance(out_dir: str | os.PathLike, dataset: Any, n: int, dataset_dir: str) -> Path:
    """Record which episodes of which dataset the features in ``out_dir`` were computed from."""
    from ecot.runlock import unique_temp

    full = dataset_provenance(dataset)
    records = full["episodes"][:n]
    record = {"dataset_dir": str(Path(dataset_dir).resolve()),
              "fingerprint": fingerprint_of(full["settings"], records), "settings": full["settings"],
              "episodes": records, "dataset_fingerprint": full["fingerprint"]}
    path = Path(out_dir) / PROVENANCE_NAME
    tmp = unique_temp(path)
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def read_provenance(features_path: str | os.PathLike) -> dict | None:
    path = Path(features_path).with_name(PROVENANCE_NAME)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record.get("episodes"), list) or not isinstance(record.get("fingerprint"), str):
            raise ValueError("missing 'episodes' or 'fingerprint'")
    except ValueError as err:
        raise ProvenanceError(f"{path} is malformed ({err}); expected the file `ecot annotate` writes") from None
    return record


def check_not_stale(dataset: Any, features_path: str | os.PathLike, current: dict | None = None) -> dict | None:
    """Raise :class:`ProvenanceError` when the dataset changed since the features were computed."""
    recorded = read_provenance(features_path)
    if recorded is None:
        return None
    current = current or dataset_provenance(dataset)
    lengths = {(fp, ep): n for fp, ep, n in current["episodes"]}
    problems = []
    if recorded.get("settings", {}) != current["settings"]:
        keys = sorted(k for k in set(recorded.get("settings", {})) | set(current["settings"])
                      if recorded.get("settings", {}).get(k) != current["settings"].get(k))
        problems.append("collection settings differ (" + ", ".join(
            f"{k}: {recorded.get('settings', {}).get(k)!r} then, {current['settings'].get(k)!r} now" for k in keys) + ")")
    changed = [(fp, ep) for fp, ep, n in recorded["episodes"] if lengths.get((fp, ep)) != n]
    if changed:
        fp, ep = changed[0]
        problems.append(f"{len(changed)} annotated episode(s) are gone or have another length (e.g. {fp}/{ep})")
    if problems:
        raise ProvenanceError(
            f"stale features: {features_path} was computed from dataset fingerprint {recorded['fingerprint']} "
            f"({len(recorded['episodes'])} episodes), but the dataset is now {current['fingerprint']} "
            f"({len(current['episodes'])} episodes): {'; '.join(problems)}. Re-run `ecot annotate` on the dataset "
            "into a new --out directory")
    return recorded


def reasoning_coverage(records: Sequence[Sequence], reasoning: Any, indices: Sequence[int]) -> dict:
    """How many of the episodes ``indices`` have reasoning for every frame (and steps overall)."""
    covered, steps, steps_with = [], 0, 0
    missing = []
    for i in indices:
        fp, ep, n = records[i]
        have = sum(1 for t in range(int(n)) if reasoning.get(fp, ep, t))
        steps += int(n)
        steps_with += have
        (covered if have == int(n) else missing).append(int(i))
    total = len(list(indices))
    return {"episodes": total, "covered": len(covered), "steps": steps, "steps_with_reasoning": steps_with,
            "coverage": len(covered) / total if total else 1.0, "missing": missing}


def check_reasoning(dataset: Any, reasoning: Any, features_path: str | os.PathLike, train_indices: Sequence[int],
                    allow_partial: bool = False) -> dict:
    """Refuse stale features and features that miss training episodes; return the coverage."""
    current = dataset_provenance(dataset)
    check_not_stale(dataset, features_path, current)
    records = [tuple(r) for r in current["episodes"]]
    cov = reasoning_coverage(records, reasoning, train_indices)
    cov["dataset_fingerprint"] = current["fingerprint"]
    if cov["covered"] < cov["episodes"] and not allow_partial:
        shown = ", ".join(str(i) for i in cov["missing"][:8]) + (" ..." if len(cov["missing"]) > 8 else "")
        raise ProvenanceError(
            f"partial reasoning: {features_path} covers {cov['covered']} of {cov['episodes']} training episodes "
            f"({cov['coverage']:.0%}; {cov['steps_with_reasoning']} of {cov['steps']} steps have reasoning); "
            f"episodes without full reasoning: {shown}. Annotate the whole dataset (`ecot annotate`), or pass "
            "--allow-partial-reasoning to train those episodes without reasoning")
    return cov
