"""LeRobot v3.0 (and v2.1) datasets: our writer's layout, round trips in image and video mode,
datasets written by LeRobot itself (tests/fixtures/lerobot), conversion, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecot.cli import main
from ecot.data import detect_format, open_dataset
from ecot.data.convert import convert
from ecot.data.episode import Episode, GroundTruth
from ecot.data.lerobot import LeRobotLayoutDataset, LeRobotWriter, read_tasks_parquet
from ecot.data.lerobot_v3 import STAGING
from ecot.data.source import EpisodeSource, Step

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "lerobot"
LEROBOT_WRITTEN = ["v30_image", "v30_video", "v21_image", "v21_video"]


def smooth_images(rng, t, size):
    """Camera-like frames (smooth, moving), so lossy video stays close to them."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 6)
    frames = [np.stack([128 + 90 * np.sin((x + 2 * k) / 8 + phase), 128 + 90 * np.cos((y - k) / 6 + phase),
                        (x + y + 5 * k) % 200 + 20], -1) for k in range(t)]
    return np.clip(frames, 0, 255).astype(np.uint8)


def make_episode(rng, t, size=64, instruction="put a in b", idx=0, k=2):
    gt = GroundTruth(object_names=[f"the thing {j}" for j in range(k)],
                     object_boxes=rng.uniform(0, size, (t, k, 4)).astype(np.float32),
                     object_visible=rng.random((t, k)) > 0.3, object_poses=rng.normal(size=(t, k, 7)).astype(np.float32),
                     gripper_points=rng.uniform(0, size, (t, 2)).astype(np.float32),
                     gripper_visible=rng.random(t) > 0.2, gripper_open=rng.random(t) > 0.5)
    return Episode(images=smooth_images(rng, t, size), states=rng.normal(size=(t, 7)).astype(np.float32),
                   actions=rng.normal(size=(t, 7)).astype(np.float32), instruction=instruction,
                   metadata={"file_path": "sim/x/seen", "episode_id": str(idx), "seed": idx}, ground_truth=gt)


@pytest.fixture(scope="module")
def episodes():
    rng = np.random.default_rng(0)
    return [make_episode(rng, t, instruction=s, idx=i) for i, (t, s) in enumerate([(6, "put a in b"), (4, "stack c"), (5, "put a in b")])]


def write(root, eps, **kw):
    with LeRobotWriter(root, fps=5, dataset_name="toy", **kw) as w:
        for ep in eps:
            w.add_episode(ep)
    return root


# ----------------------------------------------------------------------------- our writer


def test_v3_layout_facts(tmp_path, episodes):
    root = write(tmp_path / "ds", episodes)
    info = json.loads((root / "meta/info.json").read_text())
    assert list(info) == ["codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
                          "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path", "features"]
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 15
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet" and info["video_path"] is None
    assert list(info["features"])[-5:] == ["timestamp", "frame_index", "episode_index", "index", "task_index"]
    assert read_tasks_parquet(root / "meta/tasks.parquet") == {0: "put a in b", 1: "stack c"}
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]  # pandas index
    meta = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [m["episode_index"] for m in meta] == [0, 1, 2] and [m["length"] for m in meta] == [6, 4, 5]
    assert [(m["dataset_from_index"], m["dataset_to_index"]) for m in meta] == [(0, 6), (6, 10), (10, 15)]
    assert meta[1]["tasks"] == ["stack c"] and meta[1]["data/file_index"] == 0
    img = meta[0]
    assert np.asarray(img["stats/observation.image/mean"]).shape == (3, 1, 1) and img["stats/observation.image/count"] == [6]
    for q in ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"):
        assert f"stats/action/{q}" in img
    np.testing.assert_allclose(img["stats/action/max"], episodes[0].actions.max(0), rtol=1e-6)
    data = pq.ParquetFile(root / "data/chunk-000/file-000.parquet")
    assert data.metadata.num_rows == 15 and data.metadata.num_row_groups == 3  # one row group per episode
    table = data.read()
    assert table.column("index").to_pylist() == list(range(15))
    assert table.column("frame_index").to_pylist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0, 1, 2, 3, 4]
    hf = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["observation.image"] == {"_type": "Image"} and hf["action"]["_type"] == "List"
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(info["features"]) and stats["action"]["count"] == [15]
    np.testing.assert_allclose(stats["action"]["mean"], np.concatenate([e.actions for e in episodes]).mean(0), rtol=1e-5)
    assert not (root / STAGING).exists()


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_round_trip(tmp_path, episodes, video):
    root = write(tmp_path / "ds", episodes, video=video)
    ds = open_dataset(root)
    assert isinstance(ds, EpisodeSource) and len(ds) == 3 and ds.fps == 5 and ds.camera_names == ["observation.image"]
    assert detect_format(root) == "lerobot-v3.0"
    for i, ep in enumerate(episodes):
        got = ds[i]
        if video:
            assert np.abs(got.images.astype(float) - ep.images).mean() < 6.0  # lossy AV1 (crf 30): close, not equal
        else:
            np.testing.assert_array_equal(got.images, ep.images)
        np.testing.assert_array_equal(got.actions, ep.actions)
        np.testing.assert_array_equal(got.states, ep.states)
        np.testing.assert_array_equal(got.ground_truth.object_boxes, ep.ground_truth.object_boxes)
        assert got.ground_truth.object_names == ep.ground_truth.object_names
        assert got.instruction == ep.instruction and got.metadata["seed"] == i
        for t in (0, len(ep) - 1, 2):
            step = ds.step(i, t)
            assert isinstance(step, Step) and step.frame_index == t and step.timestamp == pytest.approx(t / 5)
            np.testing.assert_array_equal(step.image, got.images[t])  # the per-step path decodes the same frame
            np.testing.assert_array_equal(step.action, ep.actions[t])
    if video:
        info = json.loads((root / "meta/info.json").read_text())
        assert info["features"]["observation.image"]["dtype"] == "video"
        assert info["features"]["observation.image"]["info"]["video.codec"] == "av1"
        meta = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
        assert [m["videos/observation.image/from_timestamp"] for m in meta] == [0.0, 1.2, 2.0]
        assert [m["videos/observation.image/to_timestamp"] for m in meta] == [1.2, 2.0, 3.0]
        assert "observation.image" not in pq.read_table(root / "data/chunk-000/file-000.parquet").column_names


def test_resume_appends_new_files_and_recovers_staged_episodes(tmp_path, episodes):
    root = tmp_path / "ds"
    write(root, episodes[:1])
    w = LeRobotWriter(root, fps=5, dataset_name="toy")
    assert len(w) == 1
    w.add_episode(episodes[1])  # staged, then "killed": no close()
    del w
    assert len(open_dataset(root)) == 1  # readers see finished files only
    w = LeRobotWriter(root, fps=5, dataset_name="toy")
    assert len(w) == 2  # the staged episode is recovered
    w.add_episode(episodes[2])
    w.close()
    ds = open_dataset(root)
    assert len(ds) == 3 and [ds.episode_path(i).name for i in range(3)] == ["file-000.parquet", "file-001.parquet", "file-001.parquet"]
    for i, ep in enumerate(episodes):
        np.testing.assert_array_equal(ds[i].images, ep.images)
    with pytest.raises(ValueError, match="fps"):
        LeRobotWriter(root, fps=10)
    with pytest.raises(ValueError, match="cannot append episodes as v2.1"):
        LeRobotWriter(root, version="v2.1")


def test_small_file_size_splits_files(tmp_path, episodes):
    root = write(tmp_path / "ds", episodes, video=True, data_file_size_mb=0.0001)
    ds = open_dataset(root)
    assert sorted(p.name for p in (root / "videos/observation.image/chunk-000").iterdir()) == [
        "file-000.mp4", "file-001.mp4", "file-002.mp4"]
    assert [ds.video_path(i).name for i in range(3)] == ["file-000.mp4", "file-001.mp4", "file-002.mp4"]
    assert np.abs(ds[2].images.astype(float) - episodes[2].images).mean() < 6.0


# ----------------------------------------------------------------------------- written by LeRobot


@pytest.mark.parametrize("name", LEROBOT_WRITTEN)
def test_reads_datasets_written_by_lerobot(name):
    """Frames equal LeRobot's own decoding (npz made by LeRobot), actions/states exact."""
    want = np.load(FIXTURES / f"{name}.npz")
    ds = open_dataset(FIXTURES / name)
    assert detect_format(FIXTURES / name) == ("lerobot-v3.0" if name.startswith("v30") else "lerobot-v2.1")
    images = np.concatenate([ds[i].images for i in range(len(ds))])
    diff = np.abs(images.astype(np.float64) - want["images"]).mean() / 255
    assert diff <= 1 / 255 if "video" in name else diff == 0
    np.testing.assert_array_equal(np.concatenate([ds[i].actions for i in range(len(ds))]), want["actions"])
    np.testing.assert_array_equal(np.concatenate([ds[i].states for i in range(len(ds))]), want["states"])
    steps = [ds.step(i, t) for i in range(len(ds)) for t in range(ds.episode_length(i))]
    assert [s.instruction for s in steps] == [str(t) for t in want["task"]]
    assert [s.frame_index for s in steps] == want["frame_index"].tolist()
    np.testing.assert_array_equal(np.stack([s.image for s in steps]), images)
    assert ds.norm_stats[name].action.q99.shape == (7,)  # computed from the parquet columns


def test_v21_to_v30_conversion_round_trip(tmp_path, episodes):
    src = write(tmp_path / "v21", episodes, version="v2.1")
    for source in (src, FIXTURES / "v21_image"):
        dst = tmp_path / f"v3_{source.name}"
        summary = convert(source, dst, progress=False)
        assert summary["episodes"] == 3 and detect_format(dst) == "lerobot-v3.0"
        a, b = open_dataset(source), open_dataset(dst)
        assert len(a) == len(b)
        for i in range(len(a)):
            x, y = a[i], b[i]
            np.testing.assert_array_equal(x.images, y.images)
            np.testing.assert_array_equal(x.states, y.states)
            np.testing.assert_array_equal(x.actions, y.actions)
            assert x.instruction == y.instruction and x.metadata == y.metadata
            if x.ground_truth is not None:
                np.testing.assert_array_equal(x.ground_truth.object_poses, y.ground_truth.object_poses)
            for t in range(len(x)):
                sx, sy = a.step(i, t), b.step(i, t)
                assert (sx.instruction, sx.file_path, sx.episode_id) == (sy.instruction, sy.file_path, sy.episode_id)
                np.testing.assert_array_equal(sx.image, sy.image)


def test_conversion_resumes_and_refuses_other_settings(tmp_path, episodes, capsys):
    src = write(tmp_path / "v21", episodes, version="v2.1")
    dst = tmp_path / "out"
    assert convert(src, dst, progress=False, limit=2)["episodes"] == 2  # an interrupted run
    assert main(["data", "convert", str(src), str(dst), "--to", "lerobot-v3", "--no-progress"]) == 0
    assert "1 converted now" in capsys.readouterr().out
    assert len(open_dataset(dst)) == 3
    assert main(["data", "convert", str(src), str(dst), "--video", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_rlds_to_v30_video(tmp_path, episodes, capsys):
    from ecot.data.rlds import write_rlds

    rlds = write_rlds(tmp_path / "rlds", episodes, image_format="png")
    dst = tmp_path / "out"
    convert(rlds.parent, dst, video=True, progress=False)  # the dataset folder (holds 1.0.0/)
    ds = open_dataset(dst)
    assert len(ds) == 3 and ds.video_cameras == ["observation.image"]
    np.testing.assert_array_equal(ds[1].actions, episodes[1].actions)
    assert ds[1].episode_id == "1" and ds[1].instruction == "stack c"
    capsys.readouterr()
    assert main(["data", "info", str(rlds.parent), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "rlds" and info["episodes"] == 3 and info["frames"] == 15


def test_data_info_cli(tmp_path, capsys):
    assert main(["data", "info", str(FIXTURES / "v30_video"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "lerobot-v3.0" and out["episodes"] == 3 and out["frames"] == 23 and out["tasks"] == 2
    assert out["cameras"] == {"observation.image": {"stored_as": "video", "shape": [64, 64, 3], "codec": "av1"}}
    assert main(["data", "info", str(FIXTURES / "v21_image")]) == 0
    text = capsys.readouterr().out
    assert "lerobot-v2.1" in text and "stored_as=image" in text
    assert main(["data", "info", str(tmp_path / "nope")]) == 1  # a missing input is a failure, not a usage error
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input


def copy_fixture(name, tmp_path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def test_truncated_data_parquet_names_the_file(tmp_path):
    root = copy_fixture("v30_image", tmp_path)
    path = root / "data/chunk-000/file-000.parquet"
    path.write_bytes(path.read_bytes()[:-200])
    ds = open_dataset(root)  # metadata is fine; the data file is read when a frame is asked for
    with pytest.raises(ValueError, match=r"file-000\.parquet.*corrupt or truncated"):
        ds[0]


def test_corrupt_episode_meta_names_the_file(tmp_path):
    root = copy_fixture("v30_image", tmp_path)
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match=r"meta/episodes/chunk-000/file-000\.parquet.*corrupt or truncated"):
        open_dataset(root)


def test_truncated_video_names_the_file(tmp_path):
    root = copy_fixture("v30_video", tmp_path)
    path = root / "videos/observation.image/chunk-000/file-000.mp4"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    ds = open_dataset(root)
    with pytest.raises(ValueError, match=r"file-000\.mp4"):
        for i in range(len(ds)):
            ds[i]


def test_garbage_video_names_the_file(tmp_path):
    root = copy_fixture("v21_video", tmp_path)
    path = root / "videos/chunk-000/observation.image/episode_000001.mp4"
    path.write_bytes(b"\x00" * 1000)
    ds = open_dataset(root)
    ds[0]
    with pytest.raises(ValueError, match=r"episode_000001\.mp4"):
        ds[1]


def test_missing_video_and_timestamp_mismatch(tmp_path):
    root = copy_fixture("v30_video", tmp_path)
    table = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    col = table.column_names.index("videos/observation.image/from_timestamp")
    import pyarrow as pa

    shifted = pa.array([x + 0.05 for x in table.column(col).to_pylist()], pa.float64())
    pq.write_table(table.set_column(col, table.field(col), shifted), root / "meta/episodes/chunk-000/file-000.parquet")
    with pytest.raises(ValueError, match=r"file-000\.mp4: no frame within 0\.0001 s"):
        open_dataset(root)[1]
    (root / "videos/observation.image/chunk-000/file-000.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=r"file-000\.mp4 is missing"):
        open_dataset(root)[0]


def test_video_memory_stays_bounded(tmp_path, episodes):
    root = write(tmp_path / "ds", episodes, video=True, data_file_size_mb=0.0001)  # 3 video files
    ds = LeRobotLayoutDataset(root, cache_episodes=1, open_files=1)
    for i in range(3):
        for t in range(ds.episode_length(i)):
            ds.step(i, t)
    assert len(ds._videos._cache) == 1 and len(ds._tables) == 1 and len(ds._files) == 1
    import pickle

    copy = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives: empty caches
    assert len(copy._videos._cache) == 0 and len(copy._tables) == 0
    np.testing.assert_array_equal(copy.step(2, 1).image, ds.step(2, 1).image)


def test_two_cameras_written_by_lerobot():
    want = np.load(FIXTURES / "v30_two_cameras.npz")
    ds = open_dataset(FIXTURES / "v30_two_cameras")
    assert ds.camera_names == ["observation.image", "observation.images.wrist"] and ds.video_cameras == ["observation.image"]
    assert ds.image_key == "observation.image"
    steps = [ds.step(i, t, cameras=["observation.images.wrist"]) for i in range(len(ds)) for t in range(ds.episode_length(i))]
    np.testing.assert_array_equal(np.stack([s.image for s in steps]), want["images"])
    np.testing.assert_array_equal(np.stack([s.extra_images["observation.images.wrist"] for s in steps]), want["wrist"])
    wrist = open_dataset(FIXTURES / "v30_two_cameras", image_key="observation.images.wrist")
    np.testing.assert_array_equal(np.concatenate([wrist[i].images for i in range(len(wrist))]), want["wrist"])
    with pytest.raises(ValueError, match="camera 'observation.images.top' not found"):
        open_dataset(FIXTURES / "v30_two_cameras", image_key="observation.images.top")


def test_forked_workers_decode_independently():
    """A DataLoader-style fork after the parent decoded: the child opens its own decoders."""
    import multiprocessing as mp

    ds = open_dataset(FIXTURES / "v30_video")
    want = np.load(FIXTURES / "v30_video.npz")["images"]
    ds.step(0, 3)  # the parent holds an open decoder, which the forked children inherit
    _INHERITED["ds"] = ds
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.starmap(_step_sum, [(i, t) for i in range(3) for t in range(ds.episode_length(i))])
    assert got == [int(x.sum(dtype=np.int64)) for x in want]
    np.testing.assert_array_equal(ds.step(2, 4).image, want[9 + 6 + 4])  # the parent still reads correctly


_INHERITED: dict = {}


def _step_sum(i, t):
    return int(_INHERITED["ds"].step(i, t).image.sum(dtype=np.int64))
