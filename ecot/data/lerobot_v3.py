"""The LeRobot v3.0 writer (what lerobot >= 0.4 loads with ``LeRobotDataset(repo_id, root=DIR)``).

Layout::

    DIR/meta/info.json, stats.json, tasks.parquet
    DIR/meta/episodes/chunk-000/file-000.parquet    one row per episode: index ranges, video times, stats/*
    DIR/data/chunk-000/file-000.parquet             many episodes per file, one row group per episode
    DIR/videos/<camera>/chunk-000/file-000.mp4      --video: the episodes of a data file, concatenated
    DIR/meta/ecot_episodes.jsonl, ecot_norm_stats.json   ecot's episode metadata and statistics

Crash safety and resuming: each added episode is first written on its own, atomically, to
``DIR/.ecot_staging/episode_XXXXXX.parquet`` (PNG frames, carrying its ecot record). When the
staged episodes reach ``data_file_size_mb`` (and on ``close()``) they become one new data file
(and one mp4 per camera), written to temporary names and renamed; then the meta files are
replaced, ``info.json`` last, and the staged files removed. A run killed at any point loses
no finished episode: the next writer on DIR picks up the staged ones. Finished files are
never rewritten; later episodes go to new files.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ecot.actions import NormStats, compute_dataset_stats, eef_delta_mask
from ecot.data.episode import Episode
from ecot.data.lerobot import (
    ACTION_KEY, ECOT_EPISODES, ECOT_NORM_STATS, IMAGE_KEY, PARQUET_META_KEY, QUANTILES, STATE_KEY,
    _features, _fixed_list, _gt_columns, _jsonable, _jsonl, _read_jsonl, column_vectors, read_info, read_parquet,
)
from ecot.io import atomic_path, decode_image, encode_png, write_atomic

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STAGING = ".ecot_staging"
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200


def _stats(values: np.ndarray) -> dict:
    """Per-dimension min/max/mean/std/count and quantiles over the frames ([T, D])."""
    v = np.asarray(values, dtype=np.float64).reshape(values.shape[0], -1)
    out = {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
           "std": v.std(0).tolist(), "count": [int(v.shape[0])]}
    for q in QUANTILES:
        out[q] = np.quantile(v, int(q[1:]) / 100, axis=0).tolist()
    return out


def _image_stats(images: np.ndarray) -> dict:
    """Per-channel stats in [0, 1], nested (3, 1, 1) as LeRobot stores them, on sampled frames."""
    n = images.shape[0]
    if n > 100:
        k = min(10000, max(100, int(n ** 0.75)))
        images = images[np.linspace(0, n - 1, k).round().astype(int)]
    if images.shape[1] >= 300 or images.shape[2] >= 300:
        stride = max(images.shape[1], images.shape[2]) // 150
        images = images[:, ::stride, ::stride]
    x = np.ascontiguousarray(images).reshape(-1, images.shape[-1])
    channels = x.shape[1]
    hist = np.bincount((x.astype(np.uint16) + (np.arange(channels, dtype=np.uint16) * 256)).reshape(-1),
                       minlength=256 * channels).reshape(channels, 256)
    values = np.arange(256, dtype=np.float64)
    total = hist.sum(1)
    mean = (hist * values).sum(1) / total
    var = (hist * (values[None, :] - mean[:, None]) ** 2).sum(1) / total
    cdf = np.cumsum(hist, 1) / total[:, None]
    nest = lambda v: [[[float(c) / 255.0]] for c in v]  # noqa: E731
    out = {"min": nest(x.min(0)), "max": nest(x.max(0)), "mean": nest(mean), "std": nest(np.sqrt(var)),
           "count": [int(images.shape[0])]}
    for q in QUANTILES:
        out[q] = nest([float(np.searchsorted(cdf[c], int(q[1:]) / 100)) for c in range(channels)])
    return out


def aggregate_stats(per_episode: list[dict]) -> dict:
    """Dataset stats from per-episode stats (LeRobot's rule: pooled mean/variance, count-weighted quantiles)."""
    out: dict[str, dict] = {}
    for key in per_episode[0]:
        items = [s[key] for s in per_episode if key in s]
        counts = np.array([s["count"][0] for s in items], np.float64)
        total = counts.sum()
        arr = lambda name: np.array([s[name] for s in items], np.float64)  # noqa: E731
        w = counts.reshape((-1,) + (1,) * (arr("mean").ndim - 1))
        mean = (arr("mean") * w).sum(0) / total
        var = ((arr("std") ** 2 + (arr("mean") - mean) ** 2) * w).sum(0) / total
        agg = {"min": arr("min").min(0).tolist(), "max": arr("max").max(0).tolist(), "mean": mean.tolist(),
               "std": np.sqrt(var).tolist(), "count": [int(total)]}
        for q in QUANTILES:
            if all(q in s for s in items):
                agg[q] = ((arr(q) * w).sum(0) / total).tolist()
        out[key] = agg
    return out


def _hf_features_v3(features: dict) -> dict:
    """The ``huggingface`` schema metadata (datasets >= 4 names) for the parquet columns."""
    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif list(ft["shape"]) == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": int(ft["shape"][0]), "_type": "List"}
    return {"info": {"features": out}}


def tasks_table(tasks: dict[str, int]):
    """``meta/tasks.parquet`` as pandas writes it: task strings as the index, a ``task_index`` column."""
    import pyarrow as pa

    ordered = sorted(tasks.items(), key=lambda kv: kv[1])
    table = pa.table({"task_index": pa.array([i for _, i in ordered], pa.int64()),
                      "__index_level_0__": pa.array([s for s, _ in ordered], pa.large_string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _file_ids(counter: int) -> tuple[int, int]:
    return counter // CHUNKS_SIZE, counter % CHUNKS_SIZE


class LeRobotV3Writer:
    """Writes episodes in the v3.0 layout; resumable and crash safe (see the module docstring).

    ``video=True`` stores the camera as mp4 (AV1 by default, like LeRobot); frames are staged
    as PNG and encoded when a file is closed. ``data_file_size_mb`` bounds the staged bytes per file.
    """

    def __init__(self, root: str | Path, fps: int = 5, robot_type: str | None = "ecot_sim",
                 dataset_name: str = "ecot_sim", video: bool = False, video_codec: str = "libsvtav1",
                 crf: int | None = 30, gop: int = 2, data_file_size_mb: float = DATA_FILE_SIZE_MB,
                 png_compress_level: int = 1, flush_every: int | None = None):
        self.root = Path(root)
        self.fps = int(fps)
        self.robot_type = robot_type
        self.dataset_name = dataset_name
        self.video = bool(video)
        self.video_codec, self.crf, self.gop = video_codec, crf, gop
        self.data_file_size_mb = float(data_file_size_mb)
        self.png_compress_level = png_compress_level
        self.features: OrderedDict[str, dict] | None = None
        self._episodes: list[dict] = []  # every episode: record (+ states/actions); finished first, then staged
        self._finished = 0  # episodes in data files listed by meta/episodes
        self._files = 0  # data files written (the next gets this counter)
        self._tasks: dict[str, int] = {}
        self._total_frames = 0
        self._staged_bytes = 0
        self._load_existing()

    def __len__(self) -> int:
        return len(self._episodes)

    def __enter__(self) -> "LeRobotV3Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- resume

    def _staged_path(self, index: int) -> Path:
        return self.root / STAGING / f"episode_{index:06d}.parquet"

    def _load_existing(self) -> None:
        import pyarrow.parquet as pq

        if (self.root / "meta" / "info.json").exists():
            info = read_info(self.root)
            if info.get("codebase_version") != CODEBASE_VERSION:
                raise ValueError(f"{self.root} holds a LeRobot {info.get('codebase_version')} dataset, not v3.0")
            if int(info["fps"]) != self.fps:
                raise ValueError(f"{self.root} holds a dataset at {info['fps']} fps; cannot append episodes at {self.fps} fps")
            self.features = OrderedDict(info["features"])
            stored_video = any(f.get("dtype") == "video" for f in self.features.values())
            if stored_video != self.video:
                raise ValueError(f"{self.root} stores cameras as {'video' if stored_video else 'images'}; "
                                 f"cannot append episodes {'with' if self.video else 'without'} --video")
            self._load_finished()
        index = len(self._episodes)
        staging = self.root / STAGING
        if staging.is_dir():
            while True:
                path = self._staged_path(index)
                if not path.exists():
                    break
                try:
                    pf = pq.ParquetFile(path)
                    meta = pf.schema_arrow.metadata or {}
                    record = json.loads(meta[PARQUET_META_KEY])
                    features = json.loads(meta[b"ecot_features"], object_pairs_hook=OrderedDict)
                    table = pf.read(columns=[STATE_KEY, ACTION_KEY])
                except Exception as err:  # unreadable: not a finished episode, redo it
                    print(f"warning: {path} is unreadable ({err}); it will be rewritten")
                    break
                if self.features is None:
                    self.features = self._stored_features(features)
                record["states"], record["actions"] = column_vectors(table, STATE_KEY), column_vectors(table, ACTION_KEY)
                record["staged_bytes"] = path.stat().st_size
                self._register(record)
                index += 1
            for stale in staging.iterdir():  # already in a data file, beyond a gap, or a temporary file
                name = stale.name
                try:
                    k = int(name[len("episode_"):-len(".parquet")]) if name.startswith("episode_") and name.endswith(".parquet") else -1
                except ValueError:
                    k = -1
                if k < self._finished or k >= index:
                    stale.unlink()

    def _load_finished(self) -> None:
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        rows: list[dict] = []
        for f in files:
            rows += read_parquet(f, what="LeRobot v3.0 episode metadata").to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        ecot = {int(r["episode_index"]): r for r in _read_jsonl(self.root / ECOT_EPISODES)} if (self.root / ECOT_EPISODES).exists() else {}
        tasks_path = self.root / "meta" / "tasks.parquet"
        from ecot.data.lerobot import read_tasks_parquet

        self._tasks = {s: i for i, s in read_tasks_parquet(tasks_path).items()} if tasks_path.exists() else {}
        arrays: dict[Path, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for r in rows:
            path = self.root / DATA_PATH.format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
            if path not in arrays:
                t = read_parquet(path, columns=[STATE_KEY, ACTION_KEY, "index"], what="a LeRobot data parquet file")
                arrays[path] = (np.asarray(t.column("index").to_numpy()), column_vectors(t, STATE_KEY), column_vectors(t, ACTION_KEY))
            idx, states, actions = arrays[path]
            sel = (idx >= r["dataset_from_index"]) & (idx < r["dataset_to_index"])
            e = ecot.get(int(r["episode_index"]), {})
            stats = {}
            for key, value in r.items():
                if key.startswith("stats/"):
                    _, feat, name = key.split("/", 2)
                    stats.setdefault(feat, {})[name] = value
            record = {
                "episode_index": int(r["episode_index"]), "instruction": r["tasks"][0], "task_index": self._tasks.get(r["tasks"][0], 0),
                "length": int(r["length"]), "metadata": e.get("metadata", {}), "object_names": e.get("object_names", []),
                "stats": stats, "location": {k: v for k, v in r.items() if not k.startswith("stats/")},
                "states": states[sel], "actions": actions[sel],
            }
            self._register(record)
            self._files = max(self._files, r["data/chunk_index"] * CHUNKS_SIZE + r["data/file_index"] + 1)
        self._finished = len(self._episodes)

    def _register(self, record: dict) -> None:
        instruction = record["instruction"]
        if instruction not in self._tasks:
            self._tasks[instruction] = len(self._tasks)
        record["task_index"] = self._tasks[instruction]
        self._episodes.append(record)
        self._total_frames += record["length"]
        self._staged_bytes += record.get("staged_bytes", 0)

    def _stored_features(self, features: "OrderedDict[str, dict]") -> "OrderedDict[str, dict]":
        out = OrderedDict((k, dict(v)) for k, v in features.items())
        if self.video:
            out[IMAGE_KEY]["dtype"] = "video"
        return out

    # ---------------------------------------------------------------- writing

    def add_episode(self, episode: Episode, pngs: list[bytes] | None = None) -> int:
        """Stage ``episode`` as the next episode (returns its index); it is in a data file after the next flush.

        ``pngs``: the frames already PNG-encoded (e.g. by a worker process), else encoded here.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if len(episode) == 0:
            raise ValueError("cannot write an empty episode")
        k = len(episode.ground_truth.object_names) if episode.ground_truth is not None else 0
        image_shape = list(episode.images.shape[1:])
        if self.video and (image_shape[0] % 2 or image_shape[1] % 2):
            raise ValueError(f"video cameras need even image sizes, got {image_shape[:2]}")
        features = self._stored_features(_features(image_shape, episode.states.shape[1], episode.actions.shape[1], k))
        if self.features is None:
            self.features = features
        else:
            want = {key: {kk: vv for kk, vv in v.items() if kk != "info"} for key, v in self.features.items()}
            got = {key: dict(v) for key, v in features.items()}
            if json.dumps(got, sort_keys=True) != json.dumps(want, sort_keys=True):
                raise ValueError(f"episode features do not match the dataset at {self.root}: got {got}, expected {want} "
                                 "(image size, state/action dims and object count must agree)")
        index = len(self._episodes)
        t = len(episode)
        if pngs is None:
            pngs = [encode_png(img, self.png_compress_level) for img in episode.images]
        elif len(pngs) != t:
            raise ValueError(f"got {len(pngs)} encoded frames for an episode of {t} steps")
        cols: OrderedDict[str, Any] = OrderedDict()
        cols[IMAGE_KEY] = pa.array([{"bytes": b, "path": f"frame-{i:06d}.png"} for i, b in enumerate(pngs)],
                                   type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        cols[STATE_KEY] = _fixed_list(episode.states)
        cols[ACTION_KEY] = _fixed_list(episode.actions)
        stats: dict[str, dict] = {IMAGE_KEY: _image_stats(episode.images), STATE_KEY: _stats(episode.states),
                                  ACTION_KEY: _stats(episode.actions)}
        if k:
            for key, values in _gt_columns(episode.ground_truth).items():
                cols[key] = _fixed_list(values) if values.shape[1] > 1 else pa.array(values[:, 0], pa.float32())
                stats[key] = _stats(values)
        frame_index = np.arange(t, dtype=np.int64)
        task_index = self._tasks.get(episode.instruction, len(self._tasks))
        defaults = {
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(t, index, np.int64),
            "index": self._total_frames + frame_index,
            "task_index": np.full(t, task_index, np.int64),
        }
        for key, values in defaults.items():
            cols[key] = pa.array(values)
            stats[key] = _stats(values.reshape(t, 1))
        metadata = dict(episode.metadata)
        metadata.setdefault("file_path", f"lerobot/{self.dataset_name}")
        metadata.setdefault("episode_id", str(index))
        record = {"episode_index": index, "instruction": episode.instruction, "task_index": task_index, "length": t,
                  "metadata": _jsonable(metadata),
                  "object_names": list(episode.ground_truth.object_names) if k else [], "stats": stats}
        schema_meta = {PARQUET_META_KEY: json.dumps(record).encode(), b"ecot_features": json.dumps(features).encode()}
        table = pa.table(cols).replace_schema_metadata(schema_meta)
        path = self._staged_path(index)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="none")
        record["states"], record["actions"] = episode.states, episode.actions
        record["staged_bytes"] = path.stat().st_size
        self._register(record)
        if self._staged_bytes >= self.data_file_size_mb * 2**20:
            self.flush()
        return index

    def flush(self) -> None:
        """Turn the staged episodes into one new data file (and mp4s), then rewrite the meta files."""
        staged = self._episodes[self._finished:]
        if staged:
            self._write_files(staged)
            self._finished = len(self._episodes)
            self._staged_bytes = 0
        if self._episodes:
            self._write_meta()
        for record in staged:
            self._staged_path(record["episode_index"]).unlink(missing_ok=True)

    def close(self) -> None:
        self.flush()
        staging = self.root / STAGING
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()

    def _write_files(self, staged: list[dict]) -> None:
        import pyarrow.parquet as pq

        from ecot.data.video import VideoWriter, video_info

        chunk, file = _file_ids(self._files)
        data_path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        features = self.features
        hf = json.dumps(_hf_features_v3(features)).encode()
        h, w = features[IMAGE_KEY]["shape"][:2]
        video_path = self.root / VIDEO_PATH.format(video_key=IMAGE_KEY, chunk_index=chunk, file_index=file)
        encoder = VideoWriter(video_path, self.fps, w, h, self.video_codec, self.crf, self.gop) if self.video else None
        try:
            with atomic_path(data_path) as tmp:
                writer = None
                video_frames = 0
                for record in staged:
                    table = pq.read_table(self._staged_path(record["episode_index"]))
                    if encoder is not None:
                        source = self._staged_path(record["episode_index"])
                        for cell in table.column(IMAGE_KEY).to_pylist():
                            encoder.add(decode_image(cell["bytes"], source=source))
                        table = table.drop_columns([IMAGE_KEY])
                    table = table.replace_schema_metadata({b"huggingface": hf})
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema, compression="snappy", use_dictionary=True)
                    writer.write_table(table)  # one row group per episode
                    first = int(table.column("index")[0].as_py())
                    location = {"data/chunk_index": chunk, "data/file_index": file,
                                "dataset_from_index": first, "dataset_to_index": first + record["length"]}
                    if encoder is not None:
                        location.update({
                            f"videos/{IMAGE_KEY}/chunk_index": chunk, f"videos/{IMAGE_KEY}/file_index": file,
                            f"videos/{IMAGE_KEY}/from_timestamp": video_frames / self.fps,
                            f"videos/{IMAGE_KEY}/to_timestamp": (video_frames + record["length"]) / self.fps})
                        video_frames += record["length"]
                    record["location"] = location
                writer.close()
                if encoder is not None:
                    encoder.close()
                    encoder = None
        finally:
            if encoder is not None:
                encoder.abort()
        if self.video and "info" not in features[IMAGE_KEY]:
            features[IMAGE_KEY]["info"] = video_info(video_path)
        self._files += 1

    def _write_meta(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = self.root / "meta"
        # meta/episodes: one file per data file, rows in episode order.
        by_file: OrderedDict[tuple[int, int], list[dict]] = OrderedDict()
        for r in self._episodes[: self._finished]:
            loc = r["location"]
            by_file.setdefault((loc["data/chunk_index"], loc["data/file_index"]), []).append(r)
        for (chunk, file), records in by_file.items():
            path = self.root / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
            if path.exists() and all(r.get("meta_written") for r in records):
                continue
            rows = []
            for r in records:
                row = {"episode_index": r["episode_index"], "tasks": [r["instruction"]], "length": r["length"]}
                row.update({k: v for k, v in r["location"].items() if not k.startswith("meta/")})
                for feat, st in r["stats"].items():
                    for name, value in st.items():
                        row[f"stats/{feat}/{name}"] = value
                row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
                rows.append(row)
            with atomic_path(path) as tmp:
                pq.write_table(pa.Table.from_pylist(rows), tmp, compression="snappy")
            for r in records:
                r["meta_written"] = True
        finished = self._episodes[: self._finished]
        with atomic_path(meta / "tasks.parquet") as tmp:
            pq.write_table(tasks_table(self._tasks), tmp)
        write_atomic(meta / "stats.json", json.dumps(aggregate_stats([r["stats"] for r in finished]), indent=4))
        write_atomic(self.root / ECOT_EPISODES, _jsonl(
            [{"episode_index": r["episode_index"], "length": r["length"], "object_names": r["object_names"],
              "metadata": r["metadata"]} for r in finished]))
        stats = compute_dataset_stats([r["actions"] for r in finished], [r["states"] for r in finished],
                                      action_mask=eef_delta_mask(finished[0]["actions"].shape[1]))
        write_atomic(self.root / ECOT_NORM_STATS, json.dumps(NormStats({self.dataset_name: stats}).to_dict(), indent=2))
        n = len(finished)
        info = OrderedDict([
            ("codebase_version", CODEBASE_VERSION),
            ("robot_type", self.robot_type),
            ("total_episodes", n),
            ("total_frames", sum(r["length"] for r in finished)),
            ("total_tasks", len({r["instruction"] for r in finished})),
            ("chunks_size", CHUNKS_SIZE),
            ("data_files_size_in_mb", DATA_FILE_SIZE_MB),
            ("video_files_size_in_mb", VIDEO_FILE_SIZE_MB),
            ("fps", self.fps),
            ("splits", {"train": f"0:{n}"}),
            ("data_path", DATA_PATH),
            ("video_path", VIDEO_PATH if self.video else None),
            ("features", self.features),
        ])
        write_atomic(meta / "info.json", json.dumps(info, indent=4, ensure_ascii=False))
