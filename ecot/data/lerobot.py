"""Episodes in the LeRobot v2.1 dataset layout (image mode), written and read without LeRobot.

Layout (what LeRobot 0.3.x reads; see docs/sim.md)::

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

import io
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ecot.actions import DatasetStats, NormStats, compute_dataset_stats, eef_delta_mask
from ecot.data.base import EpisodeDataset
from ecot.data.episode import ACTION_NAMES, STATE_NAMES, Episode, GroundTruth

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


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


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


class LeRobotWriter:
    """Writes episodes one at a time; resumable (finished episodes found on disk are kept).

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

    def __enter__(self) -> "LeRobotWriter":
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
        path = self.root / episode_relpath(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        pq.write_table(table, tmp, compression="snappy")
        os.replace(tmp, path)
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
        _atomic_write_text(meta / "tasks.jsonl", _jsonl(
            [{"task_index": i, "task": s} for s, i in sorted(self._tasks.items(), key=lambda kv: kv[1])]))
        _atomic_write_text(meta / "episodes_stats.jsonl", _jsonl(
            [{"episode_index": r["episode_index"], "stats": r["stats"]} for r in self._episodes]))
        _atomic_write_text(meta / "ecot_episodes.jsonl", _jsonl(
            [{"episode_index": r["episode_index"], "length": r["length"], "object_names": r["object_names"],
              "metadata": r["metadata"]} for r in self._episodes]))
        if n:
            stats = compute_dataset_stats([r["actions"] for r in self._episodes], [r["states"] for r in self._episodes],
                                          action_mask=eef_delta_mask(self._episodes[0]["actions"].shape[1]))
            _atomic_write_text(meta / "ecot_norm_stats.json", json.dumps(NormStats({self.dataset_name: stats}).to_dict(), indent=2))
        _atomic_write_text(meta / "episodes.jsonl", _jsonl(
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
        _atomic_write_text(meta / "info.json", json.dumps(info, indent=4, ensure_ascii=False))
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


class LeRobotLayoutDataset(EpisodeDataset):
    """Episodes of a LeRobot v2.1 (image mode) directory, ours or LeRobot's.

    ``len(ds)`` episodes; ``ds[i]`` an :class:`Episode` (with ground truth when stored);
    ``ds.step(i, t)`` one step without decoding the other images of the episode.
    """

    def __init__(self, root: str | Path, cache_episodes: int = 4):
        self.root = Path(root)
        meta = self.root / "meta"
        for name in ("info.json", "episodes.jsonl", "tasks.jsonl"):
            if not (meta / name).exists():
                raise FileNotFoundError(
                    f"{self.root} is not a LeRobot-layout dataset: meta/{name} is missing "
                    "(expected meta/info.json, meta/episodes.jsonl, meta/tasks.jsonl and data/chunk-*/episode_*.parquet)"
                )
        self.info = json.loads((meta / "info.json").read_text())
        self.fps = int(self.info.get("fps", 0)) or None
        features = self.info.get("features", {})
        self.features = features
        cameras = [k for k, v in features.items() if v.get("dtype") in ("image", "video")]
        if not cameras:
            raise ValueError(f"{self.root}/meta/info.json declares no image feature; features: {sorted(features)}")
        self.image_key = IMAGE_KEY if IMAGE_KEY in cameras else cameras[0]
        if features[self.image_key]["dtype"] == "video":
            raise NotImplementedError(f"{self.root}: video features are not supported; write the dataset in image mode")
        if ACTION_KEY not in features:
            raise ValueError(f"{self.root}/meta/info.json declares no 'action' feature")
        self.state_key = STATE_KEY if STATE_KEY in features else None
        self.data_path = self.info.get("data_path", DATA_PATH)
        self.chunks_size = int(self.info.get("chunks_size", CHUNKS_SIZE))
        self._episodes = sorted(_read_jsonl(meta / "episodes.jsonl"), key=lambda r: r["episode_index"])
        self._tasks = {int(r["task_index"]): r["task"] for r in _read_jsonl(meta / "tasks.jsonl")}
        ecot_path = self.root / ECOT_EPISODES
        self._ecot = {int(r["episode_index"]): r for r in _read_jsonl(ecot_path)} if ecot_path.exists() else {}
        self.has_ground_truth = any(k.startswith(GT_PREFIX) for k in features)
        self.name = self.root.name
        self._norm_stats: NormStats | None = None
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cache_size = max(1, int(cache_episodes))

    def __repr__(self) -> str:
        return f"LeRobotLayoutDataset({str(self.root)!r}, episodes={len(self)}, fps={self.fps})"

    def __len__(self) -> int:
        return len(self._episodes)

    def episode_length(self, i: int) -> int:
        return int(self._episodes[self._check_index(i)]["length"])

    def episode_path(self, i: int) -> Path:
        index = int(self._episodes[self._check_index(i)]["episode_index"])
        return self.root / self.data_path.format(episode_chunk=index // self.chunks_size, episode_index=index)

    def _table(self, i: int):
        import pyarrow.parquet as pq

        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        path = self.episode_path(i)
        if not path.exists():
            raise FileNotFoundError(f"episode {i} is listed in meta/episodes.jsonl but {path} is missing")
        table = pq.read_table(path)
        if table.num_rows != self.episode_length(i):
            raise ValueError(f"{path} has {table.num_rows} rows but meta/episodes.jsonl says length {self.episode_length(i)}")
        self._cache[i] = table
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return table

    def _metadata(self, i: int, task_index: int) -> dict:
        index = int(self._episodes[i]["episode_index"])
        record = self._ecot.get(index)
        meta = dict(record["metadata"]) if record else {}
        meta.setdefault("file_path", f"lerobot/{self.name}")
        meta.setdefault("episode_id", str(index))
        meta["episode_index"] = index
        meta.setdefault("task_index", task_index)
        return meta

    def _instruction(self, task_index: int) -> str:
        if task_index not in self._tasks:
            raise KeyError(f"task_index {task_index} is not in {self.root}/meta/tasks.jsonl")
        return self._tasks[task_index]

    def __getitem__(self, i: int) -> Episode:
        i = self._check_index(i)
        table = self._table(i)
        images = np.stack([decode_image(cell["bytes"]) for cell in table.column(self.image_key).to_pylist()])
        actions = np.asarray(table.column(ACTION_KEY).to_pylist(), np.float32)
        states = (np.asarray(table.column(self.state_key).to_pylist(), np.float32) if self.state_key
                  else np.zeros((len(actions), 0), np.float32))
        task_index = int(table.column("task_index")[0].as_py()) if "task_index" in table.column_names else 0
        gt = self._ground_truth(i, table) if self.has_ground_truth else None
        return Episode(images=images, states=states, actions=actions, instruction=self._instruction(task_index),
                       metadata=self._metadata(i, task_index), ground_truth=gt)

    def step(self, i: int, t: int) -> dict[str, Any]:
        """One step of episode ``i``: image, state, action, instruction (decodes one image)."""
        i = self._check_index(i)
        length = self.episode_length(i)
        if t < 0:
            t += length
        if not 0 <= t < length:
            raise IndexError(f"step {t} out of range for episode {i} of length {length}")
        row = self._table(i).slice(t, 1).to_pylist()[0]
        task_index = int(row.get("task_index", 0))
        out = {
            "image": decode_image(row[self.image_key]["bytes"]),
            "state": np.asarray(row[self.state_key], np.float32) if self.state_key else np.zeros(0, np.float32),
            "action": np.asarray(row[ACTION_KEY], np.float32),
            "instruction": self._instruction(task_index),
            "episode_index": i,
            "frame_index": t,
            "file_path": self._metadata(i, task_index)["file_path"],
            "episode_id": self._metadata(i, task_index)["episode_id"],
        }
        return out

    def _ground_truth(self, i: int, table) -> GroundTruth:
        index = int(self._episodes[i]["episode_index"])
        names = list(self._ecot.get(index, {}).get("object_names", []))
        t = table.num_rows
        col = lambda key: np.asarray(table.column(key).to_pylist(), np.float32).reshape(t, -1)  # noqa: E731
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
        import pyarrow.parquet as pq

        actions, states = [], []
        for i in range(len(self)):
            cols = [ACTION_KEY] + ([self.state_key] if self.state_key else [])
            table = pq.read_table(self.episode_path(i), columns=cols)
            actions.append(np.asarray(table.column(ACTION_KEY).to_pylist(), np.float64))
            if self.state_key:
                states.append(np.asarray(table.column(self.state_key).to_pylist(), np.float64))
        if not actions:
            raise ValueError(f"{self.root} has no episodes to compute statistics from")
        return compute_dataset_stats(actions, states or None, action_mask=eef_delta_mask(actions[0].shape[1]))
