"""`ecot annotate` on a real (tiny) sim dataset with the offline backends."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ecot.sim.env")  # picks a headless GL backend before mujoco loads


def test_cli_annotates_every_step(sim_dataset, tmp_path, capsys):
    from ecot.cli import main
    from ecot.data import open_dataset
    from ecot.data.features import ReasoningIndex, iter_feature_episodes
    from ecot.reasoning import Reasoning

    out = tmp_path / "out"
    assert main(["annotate", str(sim_dataset), "--out", str(out), "--no-progress"]) == 0
    assert "validation: 4 episodes" in capsys.readouterr().err
    report = json.loads((out / "validation.json").read_text())
    assert report["complete"], report
    assert report["consistency"]["boxes_inside_image"] == 1.0
    assert report["consistency"]["primitive_action_agreement"] > 0.9
    assert report["consistency"]["gripper_error_px_mean"] < 1.0

    ds = open_dataset(sim_dataset)
    index = ReasoningIndex.from_file(out / "embodied_features.json")
    families = set()
    for i in range(len(ds)):
        ep = ds[i]
        families.add(ep.metadata["task_family"])
        for t in range(len(ep)):
            text = index.get(ep.file_path, ep.episode_id, t)
            parsed = Reasoning.parse(text)
            assert not parsed.problems and parsed.subtask in parsed.plan.split(", "), text
            assert parsed.task == ep.instruction
    assert families == {"pick_place", "move_relation", "stack", "push"}
    entries = {ep_id: e for _, ep_id, e in iter_feature_episodes(out / "embodied_features.json")}
    for ep_id, entry in entries.items():
        subtasks = [entry["reasoning"][str(t)]["subtask"] for t in range(len(entry["reasoning"]))]
        plan = entry["reasoning"]["0"]["plan"].split(", ")
        positions = [plan.index(s) for s in subtasks]
        assert positions == sorted(positions) and positions[0] == 0 and positions[-1] == len(plan) - 1, (ep_id, subtasks)

    # Same command again: nothing to do, same bytes.
    before = (out / "embodied_features.json").read_bytes()
    assert main(["annotate", str(sim_dataset), "--out", str(out), "--no-progress"]) == 0
    assert (out / "embodied_features.json").read_bytes() == before


def test_moves_from_actions_labels_each_step_with_its_command(sim_dataset, tmp_path):
    from ecot.annotate.primitives import commanded_move_vectors, describe_all
    from ecot.cli import main
    from ecot.data import open_dataset
    from ecot.data.features import iter_feature_episodes

    out = tmp_path / "cmd"
    assert main(["annotate", str(sim_dataset), "--out", str(out), "--moves-from", "actions", "--no-progress"]) == 0
    ds = open_dataset(sim_dataset)
    entries = {ep_id: e for _, ep_id, e in iter_feature_episodes(out / "embodied_features.json")}
    for i in range(len(ds)):
        ep = ds[i]
        moves = [entries[ep.episode_id]["reasoning"][str(t)]["move"] for t in range(len(ep))]
        assert moves == describe_all(commanded_move_vectors(ep.states, ep.actions))
        assert entries[ep.episode_id]["features"]["move_primitive"] == moves


def test_cli_reports_bad_input(tmp_path, capsys):
    from ecot.cli import main

    # A missing input is a failure (exit 1); an invalid option a usage error (exit 2).
    assert main(["annotate", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "3/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_projection_fit_on_sim_camera_with_noisy_outlying_detections(sim_dataset):
    """The fit used by the detector backend, on the sim's real camera: noisy points + 25% outliers."""
    import numpy as np

    from ecot.annotate.gripper import points_from_detections
    from ecot.data import open_dataset

    ds = open_dataset(sim_dataset)
    for i in range(len(ds)):
        ep = ds[i]
        gt = ep.ground_truth.gripper_points.astype(np.float64)
        rng = np.random.default_rng(i)
        det = gt + rng.normal(0, 0.5, gt.shape)
        bad = rng.choice(len(det), len(det) // 4, replace=False)
        det[bad] = rng.uniform(0, ep.images.shape[1], (len(bad), 2))
        points, report = points_from_detections(ep.states, det, threshold_px=2.0)
        assert report["fit"], report
        err = np.linalg.norm(points - gt, axis=1)
        assert err.mean() < 1.0 and err.max() < 2.5, (ep.metadata["task_family"], err.max())


def test_ray_local_cluster_gives_the_same_bytes(sim_dataset, tmp_path):
    pytest.importorskip("ray")
    from ecot.annotate.runner import FEATURES_NAME, RunConfig, run_annotation

    plain = run_annotation(RunConfig(dataset_dir=str(sim_dataset), out_dir=str(tmp_path / "plain"), progress=False))
    with_ray = run_annotation(RunConfig(dataset_dir=str(sim_dataset), out_dir=str(tmp_path / "ray"), progress=False,
                                        use_ray=True, workers=2))
    assert plain.complete and with_ray.complete and with_ray.annotated_now == 4 and not with_ray.failed
    assert (tmp_path / "ray" / FEATURES_NAME).read_bytes() == (tmp_path / "plain" / FEATURES_NAME).read_bytes()


ORIGINAL_TAGS = ["TASK:", "PLAN:", "VISIBLE OBJECTS:", "SUBTASK REASONING:", "SUBTASK:", "MOVE REASONING:", "MOVE:",
                 "GRIPPER POSITION:"]
ORIGINAL_KEYS = ["task", "plan", "bboxes", "subtask_reason", "subtask", "move_reason", "move", "gripper"]


def original_style_join(raw: dict) -> dict:
    """The original training loader's join, per docs/formats.md §2/§4, written step by step: a plain
    ``json.load`` of the whole file, ``gripper_position`` look-ahead, boxes, "@"-join and split."""
    out = {}
    for file_path, episodes in raw.items():
        for episode_id, episode in episodes.items():
            if "reasoning" not in episode:
                continue
            feats = episode["features"]
            for step, fields in episode["reasoning"].items():
                i = int(step)
                d = dict(fields)
                d["gripper"] = ""
                pos = feats.get("gripper_position")
                if pos is not None and 0 <= i < len(pos):
                    flat = []
                    for j in range(5):
                        flat += pos[i + j] if i + j < len(pos) else flat[-2:]
                    d["gripper"] = str(flat)
                boxes = feats.get("bboxes")
                d["bboxes"] = ", ".join(f"{b[1]} {b[2]}" for b in boxes[i]) if boxes and i < len(boxes) and boxes[i] else ""
                parts = "@".join(f"{t}@{d[k]}" for t, k in zip(ORIGINAL_TAGS, ORIGINAL_KEYS)).split("@")
                out[f"{file_path}_{episode_id}_{step}"] = " ".join(f"{parts[k]} {parts[k + 1]}" for k in range(0, len(parts), 2))
    return out


def test_output_reads_the_same_with_an_original_style_loader(sim_dataset, tmp_path):
    from ecot.annotate.runner import RunConfig, run_annotation
    from ecot.data.features import ReasoningIndex

    summary = run_annotation(RunConfig(dataset_dir=str(sim_dataset), out_dir=str(tmp_path), progress=False))
    path = summary.features_path
    original = original_style_join(json.loads(path.read_text()))
    ours = ReasoningIndex.from_file(path).texts
    assert original == ours and len(ours) > 50
    for text in ours.values():
        assert len(text.split(" ")) > 20 and "@" not in text
