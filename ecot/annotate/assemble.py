"""Assembly of a finished run: the features file, the per-step columns and the report.

The result files are read in a fixed order (file_path, then dataset index), so the outputs are
byte-identical however the episodes were produced (resumed, sharded, parallel, Ray).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from ecot.annotate.workdir import WorkDir, temp_path, write_atomic

FEATURES_NAME = "embodied_features.json"
STEPS_NAME = "steps.parquet"
REPORT_NAME = "validation.json"


def _load_order(work: WorkDir, n: int) -> tuple[list[tuple[str, int]], list[dict]]:
    """(file_path, index) in assembly order, and each episode's checks (in that order)."""
    heads = []
    for index in range(n):
        with open(work.result_path(index), "r", encoding="utf-8") as fh:
            record = json.load(fh)
        heads.append((record["file_path"], index, record.get("checks") or {}))
    heads.sort(key=lambda h: (h[0], h[1]))
    return [(fp, i) for fp, i, _ in heads], [c for _, _, c in heads]


def assemble(work: WorkDir, n: int, validate: bool = True) -> Path:
    """Write the features file, the per-step columns and the report from the result files.

    One pass over the results in assembly order feeds both streaming writers. Serialized by a
    lock (shards may finish together); every output is written atomically.
    """
    from ecot.data.features import FeaturesWriter

    out = work.out
    with open(out / ".assemble.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        order, checks = _load_order(work, n)
        seen: dict[tuple[str, str], int] = {}
        path = out / FEATURES_NAME
        with FeaturesWriter(path) as writer, StepColumnsWriter(out / STEPS_NAME) as columns:
            for _, index in order:
                record = json.loads(work.result_path(index).read_text(encoding="utf-8"))
                key = (record["file_path"], record["episode_id"])
                if key in seen:
                    raise ValueError(
                        f"episodes {seen[key]} and {index} share file_path {key[0]!r} and episode_id {key[1]!r}; "
                        "the features file keys episodes by these, so they must be unique"
                    )
                seen[key] = index
                writer.add(record["file_path"], record["episode_id"], record["entry"])
                columns.add(index, record)
        if validate:
            from ecot.annotate.validate import validation_report

            report = validation_report(path, checks)
            write_atomic(out / REPORT_NAME, json.dumps(report, indent=2, sort_keys=True))
    return path


STEP_COLUMNS = ("episode_index", "frame_index", "file_path", "episode_id", "reasoning", "move_primitive",
                "gripper_x", "gripper_y", "bboxes_json", "task", "plan", "subtask", "subtask_reason", "move", "move_reason")


class StepColumnsWriter:
    """Per-step columns (one row per dataset step, keyed by episode and frame index), streamed to
    parquet in row groups and renamed into place on success."""

    def __init__(self, path: Path, rows_per_group: int = 65536):
        self.path, self.rows_per_group = path, rows_per_group
        self.tmp = temp_path(path)
        self.cols: dict[str, list] = {k: [] for k in STEP_COLUMNS}
        self.writer = None

    def add(self, index: int, record: dict) -> None:
        from ecot.data.features import step_reasoning_text

        entry = record["entry"]
        feats = entry["features"]
        cols = self.cols
        for step in range(len(feats["move_primitive"])):
            r = entry["reasoning"].get(str(step), {})
            gx, gy = feats["gripper_position"][step]
            cols["episode_index"].append(index)
            cols["frame_index"].append(step)
            cols["file_path"].append(record["file_path"])
            cols["episode_id"].append(record["episode_id"])
            cols["reasoning"].append(step_reasoning_text(entry, str(step)))
            cols["move_primitive"].append(feats["move_primitive"][step])
            cols["gripper_x"].append(gx)
            cols["gripper_y"].append(gy)
            cols["bboxes_json"].append(json.dumps(feats["bboxes"][step]))
            for key in ("task", "plan", "subtask", "subtask_reason", "move", "move_reason"):
                cols[key].append(r.get(key, ""))
        if len(cols["frame_index"]) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            k: pa.array(v, type=pa.int64() if k in ("episode_index", "frame_index", "gripper_x", "gripper_y") else pa.string())
            for k, v in self.cols.items()
        })
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        self.cols = {k: [] for k in STEP_COLUMNS}

    def __enter__(self) -> "StepColumnsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.cols["frame_index"] or self.writer is None:
                self._flush()
            self.writer.close()
            os.replace(self.tmp, self.path)
        else:
            if self.writer is not None:
                self.writer.close()
            self.tmp.unlink(missing_ok=True)
