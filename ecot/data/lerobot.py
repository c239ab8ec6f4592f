"""LeRobot dataset directories, written and read without LeRobot: format v2.1 (lerobot 0.3.x)
and v3.0 (lerobot >= 0.4), cameras as images in parquet or as mp4 video. docs/data.md has the facts.

:func:`LeRobotWriter` opens a writer (v3.0 by default, :mod:`ecot.data.lerobot_v3`; the
v2.1 writer :class:`LeRobotV21Writer` is here); :class:`LeRobotLayoutDataset` reads both
versions, image and video. The v2.1 layout (what LeRobot 0.3.x reads)::

    DIR/data/chunk-000/episode_000000.parquet   one file per episode, PNG images embedded
    DIR/meta/info.json, episodes.jsonl, tasks.jsonl, episodes_stats.jsonl
    DIR/meta/ecot_episodes.jsonl                 ecot's episode metadata (file_path, episode_id, task, ...)
    DIR/meta/ecot_norm_stats.json                action/proprio normalization statistics

Ground truth, when episodes have it, is stored as extra per-step float32 columns
(``gt.object_boxes`` [K*4], ``gt.object_visible`` [K], ``gt.object_poses`` [K*7],
``gt.gripper_point`` [2], ``gt.gripper_visible``, ``gt.gripper_open``); object names are in
``meta/ecot_episodes.jsonl``.

Crash safety: an episode's parquet file is written to a temporary name and renamed, and it
carries its own ecot record in the parquet schema metadata (key ``ecot``), so the meta files
can always be rebuilt from the finished episodes. Readers only see episodes listed in
``meta/episodes.jsonl``, which is replaced atomically.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ecot.actions import DatasetStats, NormStats, compute_dataset_stats, eef_delta_mask
from ecot.data.episode import ACTION_NAMES, STATE_NAMES, Episode, GroundTruth
from ecot.data.source import EpisodeDataset, Step
from ecot.io import LRUCache, atomic_path, decode_image, encode_png, write_atomic

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
IMAGE_KEY = "observation.image"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
DEFAULT_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
GT_PREFIX = "gt."
ECOT_EPISODES = "meta/ecot_episodes.jsonl"
ECOT_NORM_STATS = "meta/ecot_norm_stats.json"
PARQUET_META_KEY = b"ecot"


# --------------------------------------------------------------------------- small helpers


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n} is not valid JSON ({err})") from None
    return out


def episode_relpath(index: int) -> str:
    return DATA_PATH.format(episode_chunk=index // CHUNKS_SIZE, episode_index=index)


def gt_shapes(num_objects: int) -> "OrderedDict[str, int]":
    """Ground-truth columns and their flat lengths for K objects."""
    k = int(num_objects)
    return OrderedDict([
        ("gt.object_boxes", 4 * k), ("gt.object_visible", k), ("gt.object_poses", 7 * k),
        ("gt.gripper_point", 2), ("gt.gripper_visible", 1), ("gt.gripper_open", 1),
    ])


def _features(image_shape, state_dim, action_dim, num_objects) -> "OrderedDict[str, dict]":
    feats: OrderedDict[str, dict] = OrderedDict()
    feats[IMAGE_KEY] = {"dtype": "image", "shape": list(image_shape), "names": ["height", "width", "channel"]}
    feats[STATE_KEY] = {"dtype": "float32", "shape": [state_dim], "names": STATE_NAMES if state_dim == 7 else None}
    feats[ACTION_KEY] = {"dtype": "float32", "shape": [action_dim], "names": ACTION_NAMES if action_dim == 7 else None}
    if num_objects:
        for key, n in gt_shapes(num_objects).items():
            feats[key] = {"dtype": "float32", "shape": [n], "names": None}
    feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        feats[key] = {"dtype": "int64", "shape": [1], "names": None}
    return feats


def _hf_features(features: dict) -> dict:
    """The ``huggingface`` parquet metadata LeRobot needs to decode image columns."""
    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif list(ft["shape"]) == [1]:
            out[key] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": int(ft["shape"][0]), "_type": "Sequence"}
    return {"info": {"features": out}}


def _vector_stats(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64).reshape(values.shape[0], -1)
    return {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
            "std": v.std(0).tolist(), "count": [int(v.shape[0])]}


def _image_stats(images: np.ndarray) -> dict:
    # LeRobot: all frames when there are at most 100, else about len**0.75 evenly spaced.
    n = images.shape[0]
    if n > 100:
        k = min(10000, max(100, int(n ** 0.75)))
        images = images[np.linspace(0, n - 1, k).round().astype(int)]
    if images.shape[1] >= 300 or images.shape[2] >= 300:
        stride = max(images.shape[1], images.shape[2]) // 150
        images = images[:, ::stride, ::stride]
    # Per-channel moments from integer sums: exact and much faster than float64 arrays.
    x = np.ascontiguousarray(images).reshape(-1, images.shape[-1])
    n = x.shape[0]
    lo, hi = x.min(0), x.max(0)
    channels = x.shape[1]
    # One histogram per channel in a single pass: value + 256 * channel.
    hist = np.bincount((x.astype(np.uint16) + (np.arange(channels, dtype=np.uint16) * 256)).reshape(-1),
                       minlength=256 * channels)
    counts = hist.reshape(channels, 256)
    values = np.arange(256, dtype=np.float64)
    mean = np.array([(h * values).sum() / n for h in counts])
    var = np.array([(h * (values - m) ** 2).sum() / n for h, m in zip(counts, mean)])
    per_channel = lambda v: [[[float(c) / 255.0]] for c in v]  # noqa: E731
    return {"min": per_channel(lo), "max": per_channel(hi), "mean": per_channel(mean),
            "std": per_channel(np.sqrt(var)), "count": [int(images.shape[0])]}


# --------------------------------------------------------------------------- writer


class LeRobotV21Writer:
    """Writes episodes in the v2.1 layout one at a time; resumable (finished episodes found on disk are kept).

    ``add_episode`` appends episode ``len(writer)``; call ``close()`` (or use ``with``) to
    write the final meta files. Meta files are also refreshed every ``flush_every`` episodes.
    """

    def __init__(self, root: str | Path, fps: int = 5, robot_type: str | None = "ecot_sim",
                 dataset_name: str = "ecot_sim", flush_every: int | None = None, png_compress_level: int = 1):
        self.root = Path(root)
        self.fps = int(fps)
        self.robot_type = robot_type
        self.dataset_name = dataset_name
        self.flush_every = flush_every
        self.png_compress_level = png_compress_level
        self.features: OrderedDict[str, dict] | None = None
        self._episodes: list[dict] = []  # per episode: the ecot record + stats + actions/states
        self._tasks: dict[str, int] = {}
        self._total_frames = 0
        self._since_flush = 0
        self._load_existing()

    def __len__(self) -> int:
        return len(self._episodes)

    def __enter__(self) -> "LeRobotV21Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- resume

    def _load_existing(self) -> None:
        import pyarrow.parquet as pq

        info_path = self.root / "meta" / "info.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if int(info.get("fps", self.fps)) != self.fps:
                raise ValueError(f"{self.root} holds a dataset at {info['fps']} fps; cannot append episodes at {self.fps} fps")
        index = 0
        while True:
            path = self.root / episode_relpath(index)
            if not path.exists():
                break
            try:
                pf = pq.ParquetFile(path)
                meta = pf.schema_arrow.metadata or {}
                record = json.loads(meta[PARQUET_META_KEY])
                table = pf.read(columns=[STATE_KEY, ACTION_KEY])
            except Exception as err:  # a file we cannot read is not a finished episode: redo it
                print(f"warning: {path} is unreadable ({err}); it will be rewritten")
                break
            features = json.loads(meta[b"ecot_features"], object_pairs_hook=OrderedDict)
            if self.features is None:
                self.features = features
            record["states"] = np.asarray(table.column(STATE_KEY).to_pylist(), np.float32)
            record["actions"] = np.asarray(table.column(ACTION_KEY).to_pylist(), np.float32)
            self._register(record)
            index += 1
        # Anything beyond the first gap is stale (an interrupted later run): remove it.
        for stale in sorted((self.root / "data").glob("chunk-*/episode_*.parquet")) if (self.root / "data").exists() else []:
            try:
                k = int(stale.stem.split("_")[1])
            except (IndexError, ValueError):
                continue
            if k >= index:
                stale.unlink()
        for tmp in (self.root / "data").glob("chunk-*/.*.tmp*") if (self.root / "data").exists() else []:
            tmp.unlink()
        if self._episodes:
            self.flush()

    def _register(self, record: dict) -> None:
        instruction = record["instruction"]
        if instruction not in self._tasks:
            self._tasks[instruction] = record["task_index"] if "task_index" in record else len(self._tasks)
        self._episodes.append(record)
        self._total_frames += record["length"]

    # ---------------------------------------------------------------- writing

    def add_episode(self, episode: Episode, pngs: list[bytes] | None = None) -> int:
        """Write ``episode`` as the next episode; returns its index.

        ``pngs``: the frames already PNG-encoded (e.g. by a worker process), else encoded here.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if len(episode) == 0:
            raise ValueError("cannot write an empty episode")
        k = len(episode.ground_truth.object_names) if episode.ground_truth is not None else 0
        features = _features(list(episode.images.shape[1:]), episode.states.shape[1], episode.actions.shape[1], k)
        if self.features is None:
            self.features = features
        elif json.dumps(features) != json.dumps(self.features):
            raise ValueError(
                f"episode features do not match the dataset at {self.root}: got {dict(features)}, "
                f"expected {dict(self.features)} (image size, state/action dims and object count must agree)"
            )
        index = len(self._episodes)
        instruction = episode.instruction
        task_index = self._tasks.get(instruction, len(self._tasks))
        t = len(episode)
        cols: OrderedDict[str, Any] = OrderedDict()
        if pngs is None:
            pngs = [encode_png(img, self.png_compress_level) for img in episode.images]
        elif len(pngs) != t:
            raise ValueError(f"got {len(pngs)} encoded frames for an episode of {t} steps")
        cols[IMAGE_KEY] = pa.array([{"bytes": b, "path": f"frame_{i:06d}.png"} for i, b in enumerate(pngs)],
                                   type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        cols[STATE_KEY] = _fixed_list(episode.states)
        cols[ACTION_KEY] = _fixed_list(episode.actions)
        stats: dict[str, dict] = {IMAGE_KEY: _image_stats(episode.images), STATE_KEY: _vector_stats(episode.states),
                                  ACTION_KEY: _vector_stats(episode.actions)}
        if k:
            for key, values in _gt_columns(episode.ground_truth).items():
                cols[key] = _fixed_list(values) if values.shape[1] > 1 else pa.array(values[:, 0], pa.float32())
                stats[key] = _vector_stats(values)
        frame_index = np.arange(t, dtype=np.int64)
        defaults = {
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(t, index, np.int64),
            "index": self._total_frames + frame_index,
            "task_index": np.full(t, task_index, np.int64),
        }
        for key, values in defaults.items():
            cols[key] = pa.array(values)
            stats[key] = _vector_stats(values.reshape(t, 1))
        metadata = dict(episode.metadata)
        metadata.setdefault("file_path", f"lerobot/{self.dataset_name}")
        metadata.setdefault("episode_id", str(index))
        record = {
            "episode_index": index,
            "instruction": instruction,
            "task_index": task_index,
            "length": t,
            "metadata": _jsonable(metadata),
            "object_names": list(episode.ground_truth.object_names) if k else [],
            "stats": stats,
        }
        schema_meta = {
            b"huggingface": json.dumps(_hf_features(features)).encode(),
            PARQUET_META_KEY: json.dumps(record).encode(),
            b"ecot_features": json.dumps(features).encode(),
        }
        table = pa.table(cols).replace_schema_metadata(schema_meta)
        with atomic_path(self.root / episode_relpath(index)) as tmp:
            pq.write_table(table, tmp, compression="snappy")
        record["states"], record["actions"] = episode.states, episode.actions
        self._register(record)
        self._since_flush += 1
        every = self.flush_every or max(1, len(self._episodes) // 50)
        if self._since_flush >= every:
            self.flush()
        return index

    def flush(self) -> None:
        """Write the meta files for every finished episode (atomically, file by file)."""
        if self.features is None:
            return
        meta = self.root / "meta"
        n = len(self._episodes)
        # Episodes and stats first, info.json last: info's totals never exceed what is listed.
        write_atomic(meta / "tasks.jsonl", _jsonl(
            [{"task_index": i, "task": s} for s, i in sorted(self._tasks.items(), key=lambda kv: kv[1])]))
        write_atomic(meta / "episodes_stats.jsonl", _jsonl(
            [{"episode_index": r["episode_index"], "stats": r["stats"]} for r in self._episodes]))
        write_atomic(meta / "ecot_episodes.jsonl", _jsonl(
            [{"episode_index": r["episode_index"], "length": r["length"], "object_names": r["object_names"],
              "metadata": r["metadata"]} for r in self._episodes]))
        if n:
            stats = compute_dataset_stats([r["actions"] for r in self._episodes], [r["states"] for r in self._episodes],
                                          action_mask=eef_delta_mask(self._episodes[0]["actions"].shape[1]))
            write_atomic(meta / "ecot_norm_stats.json", json.dumps(NormStats({self.dataset_name: stats}).to_dict(), indent=2))
        write_atomic(meta / "episodes.jsonl", _jsonl(
            [{"episode_index": r["episode_index"], "tasks": [r["instruction"]], "length": r["length"]} for r in self._episodes]))
        info = OrderedDict([
            ("codebase_version", CODEBASE_VERSION),
            ("robot_type", self.robot_type),
            ("total_episodes", n),
            ("total_frames", self._total_frames),
            ("total_tasks", len(self._tasks)),
            ("total_videos", 0),
            ("total_chunks", (n - 1) // CHUNKS_SIZE + 1 if n else 0),
            ("chunks_size", CHUNKS_SIZE),
            ("fps", self.fps),
            ("splits", {"train": f"0:{n}"}),
            ("data_path", DATA_PATH),
            ("video_path", None),
            ("features", self.features),
        ])
        write_atomic(meta / "info.json", json.dumps(info, indent=4, ensure_ascii=False))
        self._since_flush = 0

    def close(self) -> None:
        self.flush()


def _fixed_list(values: np.ndarray):
    import pyarrow as pa

    arr = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def _gt_columns(gt: GroundTruth) -> "OrderedDict[str, np.ndarray]":
    t = gt.gripper_points.shape[0]
    return OrderedDict([
        ("gt.object_boxes", gt.object_boxes.reshape(t, -1).astype(np.float32)),
        ("gt.object_visible", gt.object_visible.reshape(t, -1).astype(np.float32)),
        ("gt.object_poses", gt.object_poses.reshape(t, -1).astype(np.float32)),
        ("gt.gripper_point", gt.gripper_points.astype(np.float32)),
        ("gt.gripper_visible", gt.gripper_visible.reshape(t, 1).astype(np.float32)),
        ("gt.gripper_open", gt.gripper_open.reshape(t, 1).astype(np.float32)),
    ])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# --------------------------------------------------------------------------- reader

QUANTILES = ("q01", "q10", "q50", "q90", "q99")


def _version_major(version: Any, where: Path) -> int:
    text = str(version or "")
    try:
        return int(text.lstrip("v").split(".")[0])
    except ValueError:
        raise ValueError(f"{where}: codebase_version {version!r} is not a LeRobot dataset version "
                         "(expected 'v2.1' or 'v3.0')") from None


def read_info(root: Path) -> dict:
    """``meta/info.json`` with a clear error when it is missing or malformed."""
    path = Path(root) / "meta" / "info.json"
    if not path.exists():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset: {path} is missing")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(info, dict) or "features" not in info or "fps" not in info:
        raise ValueError(f"{path} lacks 'features' or 'fps'; expected LeRobot's info.json")
    return info


def read_parquet(path: Path, columns: list[str] | None = None, what: str = "a parquet file"):
    """A whole parquet file as an arrow table; missing or corrupt files give an error naming them."""
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (expected {what})")
    try:
        return pq.read_table(path, columns=columns)
    except Exception as err:
        raise ValueError(f"cannot read {path}: {type(err).__name__}: {err} "
                         f"(expected {what}; the file may be corrupt or truncated)") from None


def column_vectors(table, key: str) -> np.ndarray:
    """A fixed-size or variable list column (or a scalar column) as a float32 [N, D] array."""
    import pyarrow as pa

    col = table.column(key).combine_chunks()
    n = len(col)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    return np.asarray(col.to_numpy(zero_copy_only=False), np.float32).reshape(n, 1)


def read_tasks_parquet(path: Path) -> dict[int, str]:
    """``meta/tasks.parquet`` (v3.0): task strings (the pandas index) by ``task_index``."""
    table = read_parquet(path, what="LeRobot's tasks table (task strings indexed, a task_index column)")
    meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    names = [c for c in table.column_names if c != "task_index"]
    key = index_cols[0] if index_cols else ("task" if "task" in names else (names[0] if names else None))
    if key is None or "task_index" not in table.column_names:
        raise ValueError(f"{path} has columns {table.column_names}; expected task strings and 'task_index'")
    return {int(i): str(s) for i, s in zip(table.column("task_index").to_pylist(), table.column(key).to_pylist())}


class _EpisodeLoc:
    """Where episode i lives: its parquet file and row offset, its video files and start times."""

    __slots__ = ("index", "length", "data_path", "row_offset", "videos", "tasks")

    def __init__(self, index: int, length: int, data_path: Path, row_offset: int, videos: dict, tasks: list):
        self.index, self.length, self.data_path, self.row_offset = index, length, data_path, row_offset
        self.videos = videos  # camera -> (mp4 path, from_timestamp)
        self.tasks = tasks


class LeRobotLayoutDataset(EpisodeDataset):
    """Episodes of a LeRobot directory, format v2.1 or v3.0, cameras as images or mp4 video.

    ``len(ds)`` episodes; ``ds.episode(i)`` / ``ds[i]`` an :class:`Episode` (with ground truth
    when stored); ``ds.step(i, t)`` one :class:`Step`, decoding only that frame. Memory stays
    bounded: at most ``cache_episodes`` episodes' rows, ``open_files`` parquet files and
    ``open_files`` video decoders per camera are kept. Video frames are looked up at
    ``from_timestamp + timestamp`` and must lie within ``tolerance_s`` (LeRobot's rule).
    """

    def __init__(self, root: str | Path, cache_episodes: int = 4, image_key: str | None = None,
                 tolerance_s: float = 1e-4, open_files: int = 4):
        from ecot.data.video import VideoFiles

        self.root = Path(root)
        self.info = read_info(self.root)
        self.version = str(self.info.get("codebase_version", ""))
        self.major = _version_major(self.version, self.root / "meta" / "info.json")
        if self.major not in (2, 3):
            raise ValueError(f"{self.root}: LeRobot format {self.version} is not supported (v2.x or v3.0)")
        self.fps = int(self.info.get("fps", 0)) or None
        self.features = features = self.info.get("features", {})
        self.cameras = [k for k, v in features.items() if v.get("dtype") in ("image", "video")]
        if not self.cameras:
            raise ValueError(f"{self.root}/meta/info.json declares no image or video feature; features: {sorted(features)}")
        if image_key is not None and image_key not in self.cameras:
            raise ValueError(f"{self.root}: camera {image_key!r} not found; cameras: {self.cameras}")
        self.image_key = image_key or (IMAGE_KEY if IMAGE_KEY in self.cameras else self.cameras[0])
        if ACTION_KEY not in features:
            raise ValueError(f"{self.root}/meta/info.json declares no 'action' feature")
        self.state_key = STATE_KEY if STATE_KEY in features else None
        self.tolerance_s = float(tolerance_s)
        if self.major == 3:
            self._locs, self._tasks = self._index_v3()
        else:
            self._locs, self._tasks = self._index_v2()
        ecot_path = self.root / ECOT_EPISODES
        self._ecot = {int(r["episode_index"]): r for r in _read_jsonl(ecot_path)} if ecot_path.exists() else {}
        self.name = self.root.name
        self._norm_stats: NormStats | None = None
        self._tables: LRUCache[int, Any] = LRUCache(max(1, int(cache_episodes)))
        self._files: LRUCache[Path, Any] = LRUCache(max(1, int(open_files)))
        self._videos = VideoFiles(max_open=max(1, int(open_files)), tolerance_s=self.tolerance_s)

    # ---------------------------------------------------------------- index

    def _index_v2(self) -> tuple[list[_EpisodeLoc], dict[int, str]]:
        meta = self.root / "meta"
        for name in ("episodes.jsonl", "tasks.jsonl"):
            if not (meta / name).exists():
                raise FileNotFoundError(f"{self.root} is a LeRobot v2.1 dataset but meta/{name} is missing "
                                        "(expected meta/info.json, episodes.jsonl, tasks.jsonl and data/chunk-*/episode_*.parquet)")
        data_path = self.info.get("data_path") or DATA_PATH
        video_path = self.info.get("video_path")
        chunks = int(self.info.get("chunks_size", CHUNKS_SIZE))
        locs = []
        for r in sorted(_read_jsonl(meta / "episodes.jsonl"), key=lambda r: r["episode_index"]):
            index = int(r["episode_index"])
            videos = {}
            for cam in self.cameras:
                if self.features[cam]["dtype"] == "video":
                    rel = video_path.format(episode_chunk=index // chunks, video_key=cam, episode_index=index)
                    videos[cam] = (self.root / rel, 0.0)
            rel = data_path.format(episode_chunk=index // chunks, episode_index=index)
            locs.append(_EpisodeLoc(index, int(r["length"]), self.root / rel, 0, videos, list(r.get("tasks", []))))
        tasks = {int(r["task_index"]): r["task"] for r in _read_jsonl(meta / "tasks.jsonl")}
        return locs, tasks

    def _index_v3(self) -> tuple[list[_EpisodeLoc], dict[int, str]]:
        meta = self.root / "meta"
        files = sorted((meta / "episodes").glob("*/*.parquet")) if (meta / "episodes").is_dir() else []
        if not files:
            raise FileNotFoundError(f"{self.root} is a LeRobot v3.0 dataset but meta/episodes/chunk-*/file-*.parquet is missing")
        if not (meta / "tasks.parquet").exists():
            raise FileNotFoundError(f"{self.root} is a LeRobot v3.0 dataset but meta/tasks.parquet is missing")
        rows: list[dict] = []
        for f in files:
            table = read_parquet(f, what="LeRobot v3.0 episode metadata")
            keep = [c for c in table.column_names if not c.startswith("stats/")]
            rows += table.select(keep).to_pylist()
        need = ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index")
        for key in need:
            if rows and key not in rows[0]:
                raise ValueError(f"{files[0]} lacks column {key!r}; expected LeRobot v3.0 episode metadata")
        rows.sort(key=lambda r: r["episode_index"])
        data_path = self.info.get("data_path") or "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        video_path = self.info.get("video_path")
        # Row offset of an episode in its file: its first global index minus the file's first.
        file_start: dict[tuple[int, int], int] = {}
        for r in rows:
            key = (r["data/chunk_index"], r["data/file_index"])
            file_start[key] = min(file_start.get(key, r["dataset_from_index"]), r["dataset_from_index"])
        locs = []
        for r in rows:
            key = (r["data/chunk_index"], r["data/file_index"])
            videos = {}
            for cam in self.cameras:
                if self.features[cam]["dtype"] == "video":
                    c, fi = r.get(f"videos/{cam}/chunk_index"), r.get(f"videos/{cam}/file_index")
                    if c is None or fi is None:
                        raise ValueError(f"{files[0]}: episode {r['episode_index']} has no videos/{cam}/chunk_index / file_index")
                    rel = video_path.format(video_key=cam, chunk_index=c, file_index=fi)
                    videos[cam] = (self.root / rel, float(r.get(f"videos/{cam}/from_timestamp") or 0.0))
            rel = data_path.format(chunk_index=key[0], file_index=key[1])
            locs.append(_EpisodeLoc(int(r["episode_index"]), int(r["length"]), self.root / rel,
                                    int(r["dataset_from_index"]) - file_start[key], videos, list(r.get("tasks") or [])))
        return locs, read_tasks_parquet(meta / "tasks.parquet")

    # ---------------------------------------------------------------- basics

    def __repr__(self) -> str:
        return f"LeRobotLayoutDataset({str(self.root)!r}, version={self.version}, episodes={len(self)}, fps={self.fps})"

    def __len__(self) -> int:
        return len(self._locs)

    @property
    def camera_names(self) -> list[str]:
        return list(self.cameras)

    @property
    def video_cameras(self) -> list[str]:
        return [c for c in self.cameras if self.features[c]["dtype"] == "video"]

    @property
    def has_ground_truth(self) -> bool:
        return any(k.startswith(GT_PREFIX) for k in self.features)

    @property
    def total_frames(self) -> int:
        return sum(loc.length for loc in self._locs)

    @property
    def tasks(self) -> dict[int, str]:
        return dict(self._tasks)

    def episode_length(self, i: int) -> int:
        return self._locs[self._check_index(i)].length

    def episode_path(self, i: int) -> Path:
        return self._locs[self._check_index(i)].data_path

    def video_path(self, i: int, camera: str | None = None) -> Path:
        loc = self._locs[self._check_index(i)]
        camera = camera or self.image_key
        if camera not in loc.videos:
            raise ValueError(f"camera {camera!r} of {self.root} is not stored as video")
        return loc.videos[camera][0]

    # ---------------------------------------------------------------- rows

    def _parquet(self, path: Path):
        import pyarrow.parquet as pq

        def load():
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing (listed in {self.root}/meta)")
            try:
                return pq.ParquetFile(path)
            except Exception as err:
                raise ValueError(f"cannot read {path}: {type(err).__name__}: {err} "
                                 "(expected a LeRobot data parquet file; it may be corrupt or truncated)") from None

        return self._files.get(path, load)

    def _table(self, i: int):
        return self._tables.get(i, lambda: self._load_table(i))

    def _load_table(self, i: int):
        import pyarrow as pa

        loc = self._locs[i]
        pf = self._parquet(loc.data_path)
        start, stop = loc.row_offset, loc.row_offset + loc.length
        groups, pos = [], 0
        md = pf.metadata
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            if pos < stop and pos + n > start:
                groups.append((g, pos))
            pos += n
        if pos < stop:
            raise ValueError(f"{loc.data_path} has {pos} rows but episode {loc.index} needs rows {start}..{stop - 1} "
                             f"(meta says length {loc.length}); the file does not match {self.root}/meta")
        try:
            table = pa.concat_tables([pf.read_row_group(g) for g, _ in groups])
        except Exception as err:
            raise ValueError(f"cannot read {loc.data_path}: {type(err).__name__}: {err} "
                             "(the file may be corrupt or truncated)") from None
        table = table.slice(start - groups[0][1], loc.length)
        if "episode_index" in table.column_names:
            got = set(table.column("episode_index").to_pylist())
            if got != {loc.index}:
                raise ValueError(f"{loc.data_path}: rows {start}..{stop - 1} hold episode(s) {sorted(got)}, "
                                 f"but {self.root}/meta places episode {loc.index} there")
        return table

    def _instruction(self, task_index: int) -> str:
        if task_index not in self._tasks:
            raise KeyError(f"task_index {task_index} is not in the task table of {self.root}/meta")
        return self._tasks[task_index]

    def _metadata(self, i: int, task_index: int) -> dict:
        index = self._locs[i].index
        record = self._ecot.get(index)
        meta = dict(record["metadata"]) if record else {}
        meta.setdefault("file_path", f"lerobot/{self.name}")
        meta.setdefault("episode_id", str(index))
        meta["episode_index"] = index
        meta.setdefault("task_index", task_index)
        return meta

    def _images(self, i: int, table, camera: str, rows: list[int]) -> np.ndarray:
        loc = self._locs[i]
        if camera in loc.videos:
            path, start = loc.videos[camera]
            if "timestamp" in table.column_names:
                ts = table.column("timestamp").to_pylist()
                times = [start + float(np.float32(ts[r])) for r in rows]
            else:
                times = [start + r / self.fps for r in rows]
            return self._videos.frames_at(path, times)
        col = table.column(camera)
        out = []
        for r in rows:
            cell = col[r].as_py()
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if data is None:
                raise ValueError(f"{loc.data_path}: frame {r} of episode {loc.index} has no image bytes in column {camera!r}")
            out.append(decode_image(data, source=f"{loc.data_path} (episode {loc.index}, frame {r}, {camera})"))
        return np.stack(out)

    def _arrays(self, table) -> tuple[np.ndarray, np.ndarray]:
        actions = column_vectors(table, ACTION_KEY)
        states = column_vectors(table, self.state_key) if self.state_key else np.zeros((len(actions), 0), np.float32)
        return states, actions

    # ---------------------------------------------------------------- the interface

    def episode(self, i: int) -> Episode:
        i = self._check_index(i)
        table = self._table(i)
        images = self._images(i, table, self.image_key, list(range(table.num_rows)))
        states, actions = self._arrays(table)
        task_index = int(table.column("task_index")[0].as_py()) if "task_index" in table.column_names else 0
        gt = self._ground_truth(i, table) if self.has_ground_truth else None
        return Episode(images=images, states=states, actions=actions, instruction=self._instruction(task_index),
                       metadata=self._metadata(i, task_index), ground_truth=gt)

    def step(self, i: int, t: int, cameras: list[str] | None = None) -> Step:
        """One step of episode ``i``, decoding only that frame (and ``cameras``' frames, if given)."""
        i, t = self._check_step(i, t)
        table = self._table(i)
        row = table.slice(t, 1)
        states, actions = self._arrays(row)
        task_index = int(row.column("task_index")[0].as_py()) if "task_index" in row.column_names else 0
        meta = self._metadata(i, task_index)
        extra = {c: self._images(i, table, c, [t])[0] for c in (cameras or []) if c != self.image_key}
        ts = float(row.column("timestamp")[0].as_py()) if "timestamp" in row.column_names else t / (self.fps or 1)
        return Step(image=self._images(i, table, self.image_key, [t])[0], state=states[0], action=actions[0],
                    instruction=self._instruction(task_index), episode_index=i, frame_index=t,
                    file_path=meta["file_path"], episode_id=meta["episode_id"], timestamp=ts,
                    raw_step_offset=int(meta.get("raw_step_offset", 0)), extra_images=extra)

    def _ground_truth(self, i: int, table) -> GroundTruth:
        index = self._locs[i].index
        names = list(self._ecot.get(index, {}).get("object_names", []))
        t = table.num_rows
        col = lambda key: column_vectors(table, key).reshape(t, -1)  # noqa: E731
        boxes = col("gt.object_boxes")
        k = boxes.shape[1] // 4
        if len(names) != k:
            names = names[:k] + [f"object {j}" for j in range(len(names), k)]
        return GroundTruth(
            object_names=names,
            object_boxes=boxes.reshape(t, k, 4),
            object_visible=col("gt.object_visible") > 0.5,
            object_poses=col("gt.object_poses").reshape(t, k, 7),
            gripper_points=col("gt.gripper_point"),
            gripper_visible=col("gt.gripper_visible")[:, 0] > 0.5,
            gripper_open=col("gt.gripper_open")[:, 0] > 0.5,
        )

    @property
    def norm_stats(self) -> NormStats:
        """Statistics stored when the dataset was written (computed from the parquet files otherwise)."""
        if self._norm_stats is None:
            path = self.root / ECOT_NORM_STATS
            if path.exists():
                self._norm_stats = NormStats.load(path)
            else:
                self._norm_stats = NormStats({self.name: self._compute_stats()})
        return self._norm_stats

    def _compute_stats(self) -> DatasetStats:
        cols = [ACTION_KEY] + ([self.state_key] if self.state_key else [])
        actions, states = [], []
        for path in dict.fromkeys(loc.data_path for loc in self._locs):
            table = read_parquet(path, columns=cols, what="a LeRobot data parquet file")
            s, a = self._arrays(table)
            actions.append(a.astype(np.float64))
            states.append(s.astype(np.float64))
        if not actions:
            raise ValueError(f"{self.root} has no episodes to compute statistics from")
        return compute_dataset_stats(actions, states if self.state_key else None,
                                     action_mask=eef_delta_mask(actions[0].shape[1]))

    def close(self) -> None:
        self._videos.close()
        self._files.clear()
        self._tables.clear()


# --------------------------------------------------------------------------- writer factory


def LeRobotWriter(root: str | Path, fps: int = 5, robot_type: str | None = "ecot_sim", dataset_name: str = "ecot_sim",
                  version: str | None = None, video: bool = False, **kwargs: Any):
    """A resumable writer for a LeRobot dataset directory: ``add_episode(episode, pngs=None)``, ``close()``.

    ``version``: "v3.0" (default for a new directory) or "v2.1"; an existing directory keeps its
    own version (asking for another is an error). ``video=True`` stores cameras as mp4 (v3.0 only).
    """
    root = Path(root)
    existing = None
    info_path = root / "meta" / "info.json"
    if info_path.exists():
        existing = str(read_info(root).get("codebase_version"))
    if version is not None and version not in ("v2.1", "v3.0"):
        raise ValueError(f"unknown LeRobot format version {version!r}; expected 'v3.0' or 'v2.1'")
    if existing and version and existing != version:
        raise ValueError(f"{root} holds a LeRobot {existing} dataset; cannot append episodes as {version} "
                         "(convert it with `ecot data convert`, or write to a new directory)")
    chosen = existing or version or "v3.0"
    if chosen == "v2.1":
        if video:
            raise ValueError("video cameras are written in the v3.0 format only; use version='v3.0'")
        return LeRobotV21Writer(root, fps=fps, robot_type=robot_type, dataset_name=dataset_name, **kwargs)
    if chosen != "v3.0":
        raise ValueError(f"{root} holds a LeRobot {chosen} dataset; ecot appends to v2.1 and v3.0 datasets only")
    from ecot.data.lerobot_v3 import LeRobotV3Writer

    return LeRobotV3Writer(root, fps=fps, robot_type=robot_type, dataset_name=dataset_name, video=video, **kwargs)
