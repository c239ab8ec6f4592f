"""LeRobot v2.1 layout (written with version="v2.1"): exact on-disk facts, round trip, random access, errors."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ecot.data import open_dataset
from ecot.data.episode import Episode, GroundTruth
from ecot.data.lerobot import LeRobotLayoutDataset, LeRobotWriter


def make_episode(rng, t, k=3, size=16, instruction="put the red block in the blue bowl", with_gt=True, idx=0):
    gt = None
    if with_gt:
        gt = GroundTruth(
            object_names=[f"the object {j}" for j in range(k)],
            object_boxes=rng.uniform(0, size, (t, k, 4)).astype(np.float32),
            object_visible=rng.random((t, k)) > 0.3,
            object_poses=rng.normal(size=(t, k, 7)).astype(np.float32),
            gripper_points=rng.uniform(0, size, (t, 2)).astype(np.float32),
            gripper_visible=rng.random(t) > 0.2,
            gripper_open=rng.random(t) > 0.5,
        )
    return Episode(
        images=rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
        states=rng.normal(size=(t, 7)).astype(np.float32),
        actions=np.concatenate([rng.normal(0, 0.02, (t, 6)), rng.integers(0, 2, (t, 1))], 1).astype(np.float32),
        instruction=instruction,
        metadata={"file_path": "sim/pick_place/seen", "episode_id": str(idx), "task_family": "pick_place",
                  "split": "seen", "seed": 123 + idx, "success": True,
                  "task": {"family": "pick_place", "object": "the object 0", "target": "the object 1"}},
        ground_truth=gt,
    )


@pytest.fixture()
def written(tmp_path):
    rng = np.random.default_rng(0)
    eps = [make_episode(rng, t, idx=i, instruction=ins) for i, (t, ins) in
           enumerate([(5, "put a in b"), (3, "stack c on d"), (4, "put a in b")])]
    with LeRobotWriter(tmp_path / "ds", fps=5, dataset_name="toy", version="v2.1") as w:
        for ep in eps:
            w.add_episode(ep)
    return tmp_path / "ds", eps


def test_round_trip_preserves_everything(written):
    root, eps = written
    ds = open_dataset(root)
    assert isinstance(ds, LeRobotLayoutDataset) and len(ds) == 3 and ds.fps == 5 and ds.root == root
    for i, ep in enumerate(eps):
        got = ds[i]
        np.testing.assert_array_equal(got.images, ep.images)
        np.testing.assert_array_equal(got.states, ep.states)
        np.testing.assert_array_equal(got.actions, ep.actions)
        assert got.instruction == ep.instruction
        for key, value in ep.metadata.items():
            assert got.metadata[key] == value
        g, e = got.ground_truth, ep.ground_truth
        assert g.object_names == e.object_names
        for name in ("object_boxes", "object_visible", "object_poses", "gripper_points", "gripper_visible", "gripper_open"):
            np.testing.assert_array_equal(getattr(g, name), getattr(e, name))
        assert ds.episode_length(i) == len(ep)
    assert [e.episode_id for e in ds] == ["0", "1", "2"]
    assert ds[-1].episode_id == "2"
    stats = ds.norm_stats
    assert stats.keys() == ["toy"] and stats["toy"].num_transitions == 12
    np.testing.assert_allclose(stats["toy"].action.q99, np.quantile(np.concatenate([e.actions for e in eps]), 0.99, axis=0), rtol=1e-5)


def test_step_random_access_matches_episode(written):
    root, eps = written
    ds = open_dataset(root)
    for i, t in [(0, 0), (0, 4), (1, 2), (2, 1), (2, -1)]:
        step = ds.step(i, t)
        tt = t % len(eps[i])
        np.testing.assert_array_equal(step.image, eps[i].images[tt])
        np.testing.assert_array_equal(step.state, eps[i].states[tt])
        np.testing.assert_array_equal(step.action, eps[i].actions[tt])
        assert step.instruction == eps[i].instruction and step.episode_id == str(i)
        assert step.frame_index == tt and step.episode_index == i and step.timestamp == pytest.approx(tt / 5)
    with pytest.raises(IndexError, match="step 5 out of range"):
        ds.step(0, 5)
    with pytest.raises(IndexError, match="out of range"):
        ds[3]


def test_layout_facts(written):
    root, eps = written
    info = json.loads((root / "meta/info.json").read_text())
    assert list(info) == ["codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "total_videos",
                          "total_chunks", "chunks_size", "fps", "splits", "data_path", "video_path", "features"]
    assert info["codebase_version"] == "v2.1" and info["total_episodes"] == 3 and info["total_frames"] == 12
    assert info["total_tasks"] == 2 and info["splits"] == {"train": "0:3"} and info["video_path"] is None
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    feats = info["features"]
    assert feats["observation.image"] == {"dtype": "image", "shape": [16, 16, 3], "names": ["height", "width", "channel"]}
    assert list(feats)[-5:] == ["timestamp", "frame_index", "episode_index", "index", "task_index"]
    tasks = [json.loads(line) for line in (root / "meta/tasks.jsonl").read_text().splitlines()]
    assert tasks == [{"task_index": 0, "task": "put a in b"}, {"task_index": 1, "task": "stack c on d"}]
    episodes = [json.loads(line) for line in (root / "meta/episodes.jsonl").read_text().splitlines()]
    assert episodes[1] == {"episode_index": 1, "tasks": ["stack c on d"], "length": 3}
    stats = [json.loads(line) for line in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    first_index = 0
    for e, (ep, st) in enumerate(zip(eps, stats)):
        assert st["episode_index"] == e and set(st["stats"]) == set(feats)  # every feature covered
        img = st["stats"]["observation.image"]
        assert np.asarray(img["mean"]).shape == (3, 1, 1) and img["count"] == [len(ep)]
        np.testing.assert_allclose(np.asarray(img["max"]).reshape(3), ep.images.max((0, 1, 2)) / 255.0)
        assert st["stats"]["timestamp"]["count"] == [len(ep)] and len(st["stats"]["timestamp"]["min"]) == 1
        table = pq.read_table(root / f"data/chunk-000/episode_{e:06d}.parquet")
        assert table.column_names == list(feats)  # column order = features order
        hf = json.loads(table.schema.metadata[b"huggingface"])
        assert list(hf["info"]["features"]) == list(feats)
        assert hf["info"]["features"]["observation.image"] == {"_type": "Image"}
        assert hf["info"]["features"]["action"] == {"feature": {"dtype": "float32", "_type": "Value"}, "length": 7, "_type": "Sequence"}
        assert str(table.schema.field("observation.state").type) == "fixed_size_list<element: float>[7]"
        assert str(table.schema.field("timestamp").type) == "float"
        rows = table.to_pylist()
        for t, row in enumerate(rows):
            assert row["frame_index"] == t and row["episode_index"] == e and row["index"] == first_index + t
            assert abs(row["timestamp"] - t / 5) < 1e-6
            assert row["observation.image"]["path"] == f"frame_{t:06d}.png"
            with Image.open(io.BytesIO(row["observation.image"]["bytes"])) as im:
                assert im.format == "PNG" and im.mode == "RGB"
        first_index += len(ep)


def test_dataset_without_ground_truth_or_ecot_meta(tmp_path):
    rng = np.random.default_rng(1)
    with LeRobotWriter(tmp_path / "plain", dataset_name="plain", version="v2.1") as w:
        w.add_episode(make_episode(rng, 3, with_gt=False))
    (tmp_path / "plain/meta/ecot_episodes.jsonl").unlink()
    (tmp_path / "plain/meta/ecot_norm_stats.json").unlink()
    ds = open_dataset(tmp_path / "plain")
    ep = ds[0]
    assert ep.ground_truth is None
    assert ep.file_path == "lerobot/plain" and ep.episode_id == "0"
    assert ds.norm_stats.keys() == ["plain"]  # computed from the parquet columns


def test_writer_rejects_mismatched_episodes(tmp_path):
    rng = np.random.default_rng(2)
    with LeRobotWriter(tmp_path / "ds", version="v2.1") as w:
        w.add_episode(make_episode(rng, 3))
        with pytest.raises(ValueError, match="do not match"):
            w.add_episode(make_episode(rng, 3, size=8))


def test_clear_errors_for_non_datasets(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a LeRobot dataset"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "half/meta").mkdir(parents=True)
    (tmp_path / "half/meta/info.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks 'features' or 'fps'"):
        open_dataset(tmp_path / "half")
    (tmp_path / "half/meta/info.json").write_text(json.dumps(
        {"codebase_version": "v2.1", "fps": 5, "features": {"observation.image": {"dtype": "image", "shape": [8, 8, 3]},
                                                             "action": {"dtype": "float32", "shape": [7]}}}))
    with pytest.raises(FileNotFoundError, match="meta/episodes.jsonl is missing"):
        open_dataset(tmp_path / "half")


def test_truncated_parquet_is_reported(written):
    root, _ = written
    path = root / "data/chunk-000/episode_000001.parquet"
    path.write_bytes(path.read_bytes()[:100])
    ds = open_dataset(root)
    ds[0]
    with pytest.raises(ValueError, match="episode_000001.parquet.*corrupt or truncated"):
        ds[1]
