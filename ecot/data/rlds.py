"""RLDS / TFDS datasets (Bridge ``bridge_orig`` and other Open-X datasets) without TensorFlow.

A prepared TFDS directory (``<name>/<version>/``) holds ``dataset_info.json``,
``features.json`` and shards ``<name>-<split>.tfrecord-XXXXX-of-YYYYY``. Each record is one
episode serialized as a ``tf.train.Example`` whose keys are the flattened feature paths:
per-step features are concatenated over the episode's steps (``steps/action`` holds T*7
floats, ``steps/observation/image_0`` T encoded images, ``steps/is_first`` T ints),
episode features are single values (``episode_metadata/file_path``).

:class:`RLDSDataset` yields :class:`ecot.data.episode.Episode` with ``file_path`` and
``episode_id`` from the episode metadata (the keys of the reasoning join, docs/formats.md §4).
With ``bridge_transform=True`` it applies the original training pipeline's Bridge transform
(:func:`ecot.data.bridge.bridge_transform`, docs/formats.md §8). :func:`write_rlds` writes episodes in the same layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ecot.actions import DatasetStats, NormStats, compute_dataset_stats, eef_delta_mask
from ecot.data.episode import Episode
from ecot.data.source import EpisodeDataset, Step
from ecot.io import LRUCache, decode_image, encode_image
from ecot.data.tfrecord import index_records, parse_example, read_record, serialize_example, write_records

STEP_PREFIX = "steps/"
META_PREFIX = "episode_metadata/"
IMAGE_CANDIDATES = ("steps/observation/image_0", "steps/observation/image", "steps/observation/rgb",
                    "steps/observation/agentview_rgb")
STATE_CANDIDATES = ("steps/observation/state", "steps/observation/proprio", "steps/observation/robot_state")
ACTION_CANDIDATES = ("steps/action",)
INSTRUCTION_CANDIDATES = ("steps/language_instruction", "steps/observation/natural_language_instruction",
                          "steps/observation/language_instruction")
_SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<split>[^-.]+)\.tfrecord-(?P<i>\d+)-of-(?P<n>\d+)$")


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))


def find_rlds_dir(root: str | Path) -> Path | None:
    """The TFDS version directory under ``root`` (``root`` itself, or its newest ``x.y.z/``)."""
    root = Path(root)
    if (root / "dataset_info.json").exists() or any(root.glob("*.tfrecord*")):
        return root
    versions = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d+\.\d+\.\d+", p.name)] if root.is_dir() else []
    for v in sorted(versions, key=lambda p: _version_key(p.name), reverse=True):
        if (v / "dataset_info.json").exists() or any(v.glob("*.tfrecord*")):
            return v
    return None


def _image_keys_from_features(features_json: dict) -> list[str]:
    """Paths of image features in a TFDS ``features.json`` (flattened with '/')."""
    keys: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        if "image" in node and isinstance(node["image"], dict) and "pythonClassName" in node:
            keys.append(path)
            return
        if "featuresDict" in node:
            for name, child in node["featuresDict"].get("features", {}).items():
                walk(child, f"{path}/{name}" if path else name)
        elif "sequence" in node:
            walk(node["sequence"].get("feature", {}), path)

    walk(features_json, "")
    return keys


def _bridge_arrays(states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ecot.data.bridge.bridge_transform` on arrays only: ``(kept raw step indices, states, actions)``."""
    from ecot.data.bridge import bridge_transform

    t = len(actions)
    stub = Episode(images=np.zeros((t, 1, 1, 3), np.uint8), states=states, actions=actions, instruction="")
    out = bridge_transform(stub)
    return np.arange(1, t - 1), out.states, out.actions


class RLDSDataset(EpisodeDataset):
    """Random access to the episodes of one split of a prepared RLDS/TFDS directory."""

    def __init__(self, root: str | Path, split: str = "train", image_key: str | None = None,
                 state_key: str | None = None, action_key: str | None = None,
                 bridge_transform: bool = False, verify: bool = False, cache_episodes: int = 2):
        found = find_rlds_dir(root)
        if found is None:
            raise FileNotFoundError(f"{root} is not an RLDS/TFDS directory (no dataset_info.json or *.tfrecord* shards)")
        self.root = found
        self.split = split
        self.verify = verify
        self.apply_bridge_transform = bridge_transform
        info_path = self.root / "dataset_info.json"
        self.info = json.loads(info_path.read_text()) if info_path.exists() else {}
        features_path = self.root / "features.json"
        self.features_json = json.loads(features_path.read_text()) if features_path.exists() else {}
        shards = []
        for p in self.root.iterdir():
            m = _SHARD_RE.match(p.name)
            if m and m["split"] == split:
                shards.append((int(m["i"]), p))
        if not shards:
            present = sorted({m["split"] for p in self.root.iterdir() if (m := _SHARD_RE.match(p.name))})
            raise FileNotFoundError(f"{self.root} has no '{split}' shards (*-{split}.tfrecord-XXXXX-of-YYYYY); splits present: {present}")
        self.shards = [p for _, p in sorted(shards)]
        self.name = self.info.get("name") or _SHARD_RE.match(self.shards[0].name)["name"]
        self._index: list[tuple[Path, int, int]] = []
        for shard in self.shards:
            self._index += [(shard, off, n) for off, n in index_records(shard)]
        self.fps = self._fps()
        self._image_key, self._state_key, self._action_key = image_key, state_key, action_key
        self._keys_resolved = False
        self._cache: LRUCache[int, dict] = LRUCache(max(1, int(cache_episodes)))
        self._norm_stats: NormStats | None = None

    def __repr__(self) -> str:
        return f"RLDSDataset({str(self.root)!r}, split={self.split!r}, episodes={len(self)})"

    def _fps(self) -> int | None:
        # TFDS does not record a control rate; Bridge (and our sim) run at 5 Hz.
        meta = self.info.get("metadata") or {}
        fps = meta.get("fps") if isinstance(meta, dict) else None
        return int(fps) if fps else 5

    def __len__(self) -> int:
        return len(self._index)

    def _example(self, i: int) -> dict:
        return self._cache.get(i, lambda: self._load_example(i))

    def _load_example(self, i: int) -> dict:
        path, offset, length = self._index[i]
        ex = parse_example(read_record(path, offset, length, verify=self.verify))
        self._resolve_keys(ex, path)
        return ex

    @property
    def image_key(self) -> str:
        if not self._keys_resolved and len(self):
            self._example(0)
        return self._image_key or ""

    @property
    def camera_names(self) -> list[str]:
        return [self.image_key]

    def _resolve_keys(self, ex: dict, path: Path) -> None:
        if self._keys_resolved:
            return
        if self._image_key is None:
            declared = [k for k in _image_keys_from_features(self.features_json) if k.startswith(STEP_PREFIX)]
            candidates = [k for k in IMAGE_CANDIDATES if k in ex] + [k for k in declared if k in ex]
            if not candidates:
                raise ValueError(f"{path}: no image feature found; keys: {sorted(ex)}; pass image_key=...")
            self._image_key = candidates[0]
        if self._action_key is None:
            found = [k for k in ACTION_CANDIDATES if k in ex]
            if not found:
                raise ValueError(f"{path}: no 'steps/action' feature; keys: {sorted(ex)}; pass action_key=...")
            self._action_key = found[0]
        if self._state_key is None:
            found = [k for k in STATE_CANDIDATES if k in ex]
            self._state_key = found[0] if found else ""
        for key in (self._image_key, self._action_key) + ((self._state_key,) if self._state_key else ()):
            if key not in ex:
                raise ValueError(f"{path}: feature {key!r} is missing; keys: {sorted(ex)}")
        self._keys_resolved = True

    def _num_steps(self, ex: dict) -> int:
        return len(ex[self._image_key])

    def _raw_arrays(self, ex: dict) -> tuple[np.ndarray, np.ndarray]:
        t = self._num_steps(ex)
        actions = np.asarray(ex[self._action_key], np.float32)
        if actions.size % max(t, 1):
            raise ValueError(f"{self._action_key} has {actions.size} values, not a multiple of the {t} steps")
        actions = actions.reshape(t, -1)
        if self._state_key:
            states = np.asarray(ex[self._state_key], np.float32).reshape(t, -1)
        else:
            states = np.zeros((t, 0), np.float32)
        return states, actions

    def _instruction(self, ex: dict) -> str:
        for key in INSTRUCTION_CANDIDATES:
            for value in ex.get(key, []) or []:
                if isinstance(value, bytes) and value.strip():
                    return value.decode("utf-8")
        return ""

    def _metadata(self, i: int, ex: dict) -> dict:
        meta: dict[str, Any] = {}
        for key, value in ex.items():
            if key.startswith(META_PREFIX):
                name = key[len(META_PREFIX):]
                if isinstance(value, list):
                    meta[name] = value[0].decode("utf-8", "replace") if len(value) == 1 else [v.decode("utf-8", "replace") for v in value]
                else:
                    arr = np.asarray(value)
                    meta[name] = arr.item() if arr.size == 1 else arr.tolist()
        meta["file_path"] = str(meta.get("file_path", f"rlds/{self.name}/{self.split}"))
        meta["episode_id"] = str(meta.get("episode_id", i))
        meta["episode_index"] = i
        meta["dataset"] = self.name
        return meta

    def _arrays(self, ex: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        states, actions = self._raw_arrays(ex)
        if self.apply_bridge_transform:
            if states.shape[1] < 6:
                raise ValueError("the Bridge transform needs 6-D EEF states (observation/state)")
            kept, states, actions = _bridge_arrays(states, actions)
        else:
            kept = np.arange(len(actions))
        return kept, states, actions

    def episode_length(self, i: int) -> int:
        ex = self._example(self._check_index(i))
        t = self._num_steps(ex)
        return t - 2 if self.apply_bridge_transform else t

    def episode(self, i: int) -> Episode:
        i = self._check_index(i)
        ex = self._example(i)
        kept, states, actions = self._arrays(ex)
        raw_images = ex[self._image_key]
        source = f"{self._index[i][0]} (episode {i}, {self._image_key})"
        images = np.stack([decode_image(raw_images[k], source) for k in kept])
        meta = self._metadata(i, ex)
        if self.apply_bridge_transform:
            from ecot.data.bridge import RAW_OFFSET_KEY

            meta[RAW_OFFSET_KEY] = 1  # frame t was raw step t + 1 (docs/formats.md §8)
        return Episode(images=images, states=states, actions=actions, instruction=self._instruction(ex), metadata=meta)

    def step(self, i: int, t: int) -> Step:
        """One step of episode ``i`` (decodes only that step's image)."""
        i, t = self._check_step(i, t)
        ex = self._example(i)
        kept, states, actions = self._arrays(ex)
        meta = self._metadata(i, ex)
        source = f"{self._index[i][0]} (episode {i}, step {t}, {self._image_key})"
        return Step(
            image=decode_image(ex[self._image_key][kept[t]], source),
            state=states[t],
            action=actions[t],
            instruction=self._instruction(ex),
            episode_index=i,
            frame_index=t,
            file_path=meta["file_path"],
            episode_id=meta["episode_id"],
            timestamp=t / (self.fps or 1),
            raw_step_offset=int(kept[0]),  # 1 with the Bridge transform: frame t was raw step t + 1
        )

    @property
    def norm_stats(self) -> NormStats:
        """Statistics over every episode of the split (computed on first use; images are not decoded)."""
        if self._norm_stats is None:
            self._norm_stats = NormStats({self.name: self._compute_stats()})
        return self._norm_stats

    def _compute_stats(self) -> DatasetStats:
        actions, states = [], []
        for i in range(len(self)):
            path, offset, length = self._index[i]
            ex = parse_example(read_record(path, offset, length, verify=self.verify))
            self._resolve_keys(ex, path)
            _, s, a = self._arrays(ex)
            actions.append(a)
            states.append(s)
        if not actions:
            raise ValueError(f"{self.root} has no episodes to compute statistics from")
        has_state = states[0].shape[1] > 0
        return compute_dataset_stats(actions, states if has_state else None, action_mask=eef_delta_mask(actions[0].shape[1]))


# --------------------------------------------------------------------------- writer


def _tensor(shape, dtype) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
            "tensor": {"shape": {"dimensions": [str(d) for d in shape]}, "dtype": dtype, "encoding": "none"}}


def _scalar(dtype) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.scalar.Scalar",
            "tensor": {"shape": {}, "dtype": dtype, "encoding": "none"}}


def _text() -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}}


def _dict(features: dict) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
            "featuresDict": {"features": features}}


def rlds_features_json(image_shape, state_dim: int, action_dim: int, image_format: str = "jpeg") -> dict:
    """A TFDS ``features.json`` for the Bridge-like RLDS layout :func:`write_rlds` produces."""
    image = {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
             "image": {"shape": {"dimensions": [str(d) for d in image_shape]}, "dtype": "uint8", "encodingFormat": image_format}}
    step = _dict({
        "observation": _dict({"image_0": image, "state": _tensor([state_dim], "float32")}),
        "action": _tensor([action_dim], "float32"),
        "language_instruction": _text(),
        "is_first": _scalar("bool"), "is_last": _scalar("bool"), "is_terminal": _scalar("bool"),
        "reward": _scalar("float32"), "discount": _scalar("float32"),
    })
    return _dict({
        "steps": {"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
                  "sequence": {"feature": step, "length": "-1"}},
        "episode_metadata": _dict({"file_path": _text(), "episode_id": _scalar("int32")}),
    })


def episode_to_example(episode: Episode, episode_id: int, image_format: str = "jpeg") -> bytes:
    """One episode as a serialized ``tf.train.Example`` in the RLDS (Bridge) feature layout."""
    t = len(episode)
    is_first = np.zeros(t, np.int64)
    is_first[0] = 1
    is_last = np.zeros(t, np.int64)
    is_last[-1] = 1
    return serialize_example({
        "steps/observation/image_0": [encode_image(img, image_format) for img in episode.images],
        "steps/observation/state": episode.states.astype(np.float32),
        "steps/action": episode.actions.astype(np.float32),
        "steps/language_instruction": [episode.instruction.encode("utf-8")] * t,
        "steps/is_first": is_first,
        "steps/is_last": is_last,
        "steps/is_terminal": is_last.copy(),
        "steps/reward": is_last.astype(np.float32),
        "steps/discount": np.ones(t, np.float32),
        "episode_metadata/file_path": [episode.file_path.encode("utf-8")],
        "episode_metadata/episode_id": np.array([episode_id], np.int64),
    })


def _episode_id(episode: Episode, default: int) -> int:
    try:
        return int(episode.metadata.get("episode_id", default))
    except (TypeError, ValueError):
        return default


def write_rlds(out_dir: str | Path, episodes: Iterable[Episode], name: str = "ecot_sim", version: str = "1.0.0",
               split: str = "train", num_shards: int = 1, image_format: str = "jpeg") -> Path:
    """Write episodes as a prepared TFDS directory ``out_dir/name/version`` (returned)."""
    episodes = list(episodes)
    if not episodes:
        raise ValueError("cannot write an RLDS dataset of zero episodes")
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    root = Path(out_dir) / name / version
    root.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, min(num_shards, len(episodes)))
    shard_lengths = []
    per_shard = -(-len(episodes) // num_shards)
    for s in range(num_shards):
        chunk = list(enumerate(episodes))[s * per_shard:(s + 1) * per_shard]
        path = root / f"{name}-{split}.tfrecord-{s:05d}-of-{num_shards:05d}"
        shard_lengths.append(write_records(path, (episode_to_example(ep, _episode_id(ep, k), image_format) for k, ep in chunk)))
    first = episodes[0]
    features = rlds_features_json(first.images.shape[1:], first.states.shape[1], first.actions.shape[1], image_format)
    (root / "features.json").write_text(json.dumps(features, indent=2))
    info = {
        "citation": "", "description": f"{name} episodes in the RLDS layout, written by ecot", "fileFormat": "tfrecord",
        "moduleName": "ecot.data.rlds", "name": name, "version": version, "releaseNotes": {},
        "splits": [{"filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", "name": split,
                    "numBytes": str(sum(p.stat().st_size for p in root.glob(f"{name}-{split}.tfrecord-*"))),
                    "shardLengths": [str(n) for n in shard_lengths]}],
    }
    (root / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return root
