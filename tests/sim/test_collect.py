"""``ecot sim collect`` / ``render``: a real small collection, resumed, read back, drawn."""

import json

import numpy as np
import pytest

from ecot.cli import main
from ecot.data import open_dataset
from ecot.sim.collect import CollectConfig, collect


@pytest.fixture
def dataset(sim_collection):
    """collect(task="all", episodes=4, image_size=64), collected once per session (tests/conftest.py, shared read-only)."""
    out, summary = sim_collection
    assert summary["episodes"] == 4 and summary["new_successes"] == 4
    return out


def test_collected_episodes_carry_schema_metadata_and_ground_truth(dataset):
    ds = open_dataset(dataset)
    assert len(ds) == 4 and ds.fps == 5
    families = []
    for i, ep in enumerate(ds):
        m = ep.metadata
        families.append(m["task_family"])
        assert m["file_path"] == f"sim/{m['task_family']}/seen"
        assert m["episode_id"] == str(i) and m["split"] == "seen" and m["success"] is True
        assert isinstance(m["seed"], int) and m["task"]["family"] == m["task_family"]
        assert m["task"]["object"] in ep.ground_truth.object_names
        assert ep.images.shape[1:] == (64, 64, 3) and ep.states.shape[1] == 7 and ep.actions.shape[1] == 7
        assert ds.episode_length(i) == len(ep)
        gt = ep.ground_truth
        assert gt.object_boxes.shape == (len(ep), 4, 4) and gt.gripper_points.shape == (len(ep), 2)
        assert np.all(gt.object_boxes[gt.object_visible] >= 0) and np.all(gt.object_boxes[gt.object_visible] <= 64)
        # Commanded deltas are what the gripper achieves (annotation derives moves from states).
        achieved = ep.states[1:, :3] - ep.states[:-1, :3]
        assert np.abs(achieved - ep.actions[:-1, :3]).max() < 0.01
        assert np.abs(ep.actions[:, :3]).max() > 0.025  # moves of a few cm per step
        # Ground truth describes the observation: step t shows the gripper as commanded at t - 1.
        np.testing.assert_array_equal(gt.gripper_open[1:], ep.actions[:-1, 6] > 0.5)
        assert gt.gripper_open[0]
    assert families == ["pick_place", "move_relation", "stack", "push"]
    stats = ds.norm_stats
    assert stats.keys() == ["ecot_sim"]
    assert list(stats["ecot_sim"].action.effective_mask) == [True] * 6 + [False]
    assert stats["ecot_sim"].num_trajectories == 4


def test_resume_adds_only_missing_episodes_and_is_reproducible(dataset, tmp_path):
    out = tmp_path / "ds"
    collect(out, CollectConfig(task="all", episodes=2, image_size=64), progress=False)
    summary = collect(out, CollectConfig(task="all", episodes=4, image_size=64), progress=False)
    assert summary["new_episodes"] == 2 and summary["episodes"] == 4
    a, b = open_dataset(out), open_dataset(dataset)
    for i in range(4):
        np.testing.assert_array_equal(a[i].images, b[i].images)  # same seeds -> same episodes
        assert a[i].instruction == b[i].instruction
    with pytest.raises(ValueError, match="different settings"):
        collect(out, CollectConfig(task="stack", episodes=5, image_size=64), progress=False)


def test_interrupted_collection_is_invisible_then_resumed(dataset, tmp_path, monkeypatch):
    from ecot.data.lerobot_v3 import STAGING, LeRobotV3Writer

    out = tmp_path / "ds"
    collect(out, CollectConfig(task="push", episodes=2, image_size=64), progress=False)
    # Simulate a kill after episode 2 was staged but before its data file and meta were written.
    with monkeypatch.context() as m:
        m.setattr(LeRobotV3Writer, "close", lambda self: None)
        m.setattr(LeRobotV3Writer, "flush", lambda self: None)
        collect(out, CollectConfig(task="push", episodes=3, image_size=64), progress=False)
    (out / STAGING / ".episode_000003.parquet.tmp123").write_bytes(b"PAR1 half")
    assert (out / STAGING / "episode_000002.parquet").exists()
    assert len(open_dataset(out)) == 2  # readers see only finished files listed in meta
    summary = collect(out, CollectConfig(task="push", episodes=4, image_size=64), progress=False)
    assert summary["new_episodes"] == 1  # episode 2 was recovered from the staging area
    ds = open_dataset(out)
    assert len(ds) == 4 and [ds[i].metadata["episode_id"] for i in range(4)] == ["0", "1", "2", "3"]
    assert not (out / STAGING).exists()
    assert sorted(p.name for p in (out / "data/chunk-000").iterdir()) == ["file-000.parquet", "file-001.parquet"]
    assert [ds.episode_path(i).name for i in range(4)] == ["file-000.parquet"] * 2 + ["file-001.parquet"] * 2


def test_video_collection_matches_image_collection(dataset, tmp_path):
    out = tmp_path / "vid"
    collect(out, CollectConfig(task="pick_place", episodes=1, image_size=64, video=True), progress=False)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["features"]["observation.image"]["dtype"] == "video"
    assert (out / "videos/observation.image/chunk-000/file-000.mp4").exists()
    a, b = open_dataset(out)[0], open_dataset(dataset)[0]  # same family and seed
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.ground_truth.object_boxes, b.ground_truth.object_boxes)
    diff = np.abs(a.images.astype(np.float64) - b.images.astype(np.float64)).mean()
    assert 0 < diff < 4.0, diff  # lossy AV1 (crf 30), close to the PNG frames
    with pytest.raises(ValueError, match="different settings.*video"):
        collect(out, CollectConfig(task="pick_place", episodes=2, image_size=64, video=False), progress=False)


def test_cli_collect_and_render_gif(tmp_path, capsys):
    out = tmp_path / "cli_ds"
    rc = main(["sim", "collect", "--task", "stack", "--split", "heldout", "--episodes", "1", "--out", str(out),
               "--image-size", "48", "--no-progress"])
    assert rc == 0
    ds = open_dataset(out)
    assert ds[0].metadata["split"] == "heldout" and ds[0].metadata["file_path"] == "sim/stack/heldout"
    gif = tmp_path / "ep.gif"
    assert main(["sim", "render", str(out), "--episode", "0", "--out", str(gif)]) == 0
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == len(ds[0])
        assert im.size == (96, 96)
    assert main(["sim", "render", str(out), "--episode", "5", "--out", str(gif)]) == 2
    assert "ecot: error: --episode 5 is out of range" in capsys.readouterr().err  # usage error: exit 2, one line
    assert main(["sim", "collect", "--task", "juggle", "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown task family 'juggle'" in capsys.readouterr().err and not (tmp_path / "x").exists()
