"""The resumable runner: outputs, sharding, workers, failures, and kill -9 at random points."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ecot.annotate.runner import FEATURES_NAME, REPORT_NAME, STEPS_NAME, RunConfig, run_annotation
from ecot.data.features import iter_feature_episodes, iter_reasoning_strings
from ecot.reasoning import Reasoning

from annotate_synthetic import SyntheticDataset

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def run(out, n=6, **kw):
    fail_on = kw.pop("fail_on", ())
    config = RunConfig(dataset_dir="synthetic", out_dir=str(out), progress=False, **kw)
    return run_annotation(config, lambda: SyntheticDataset(n=n, fail_on=fail_on))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    summary = run(out)
    return out, summary


def test_outputs_complete_and_readable(reference):
    out, summary = reference
    assert summary.complete and not summary.failed and summary.annotated_now == 6
    dataset = SyntheticDataset(n=6)
    total = sum(len(dataset[i]) for i in range(6))
    strings = list(iter_reasoning_strings(out / FEATURES_NAME))
    assert len(strings) == total
    for _, _, _, text in strings:
        parsed = Reasoning.parse(text)
        assert not parsed.problems, parsed.problems
        assert parsed.task and parsed.plan and parsed.subtask and parsed.move and parsed.move_reasoning
        assert len(parsed.gripper_positions) == 5 and parsed.visible_objects
    # Episodes of one file_path are grouped (the layout nests them) and sorted.
    keys = [(fp, ep) for fp, ep, _ in iter_feature_episodes(out / FEATURES_NAME)]
    assert keys == sorted(keys, key=lambda k: (k[0], int(k[1])))
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["complete"] and report["coverage"]["reasoning"] == 1.0 and report["coverage"]["reasoning_strings"] == 1.0
    assert report["consistency"]["boxes_inside_image"] == 1.0
    assert report["consistency"]["primitive_action_agreement"] > 0.95
    assert report["consistency"]["gripper_error_px_mean"] < 0.5
    table = pq.read_table(out / STEPS_NAME)
    assert table.num_rows == total
    assert table.column("reasoning").to_pylist()[0] == strings_by_key(strings)[("synthetic/shard_0.tfrecord", "0", 0)]


def test_annotation_entry_layout(reference):
    """The per-episode entry our annotator writes (docs/formats.md, "Our annotation output")."""
    out, _ = reference
    dataset = SyntheticDataset(n=6)
    lengths = {(dataset[i].file_path, str(dataset[i].episode_id)): len(dataset[i]) for i in range(6)}
    seen = set()
    for file_path, episode_id, entry in iter_feature_episodes(out / FEATURES_NAME):
        t = lengths[file_path, episode_id]
        seen.add((file_path, episode_id))
        assert set(entry) == {"reasoning", "features", "metadata"}
        assert list(entry["reasoning"]) == [str(i) for i in range(t)]
        for step in entry["reasoning"].values():
            assert set(step) == {"task", "plan", "subtask", "subtask_reason", "move", "move_reason"}
            assert all(isinstance(v, str) and "@" not in v for v in step.values())
        feats = entry["features"]
        assert set(feats) == {"gripper_position", "bboxes", "move_primitive", "move_vector", "caption", "state_3d"}
        assert "gripper_positions" not in feats  # the loader's singular key, not the original generator's plural
        assert all(len(feats[k]) == t for k in ("gripper_position", "bboxes", "move_primitive", "move_vector", "state_3d"))
        assert all(len(p) == 2 and all(isinstance(c, int) for c in p) for p in feats["gripper_position"])
        for boxes in feats["bboxes"]:
            for score, name, box in boxes:
                assert isinstance(score, float) and isinstance(name, str) and len(box) == 4
                assert all(isinstance(c, int) for c in box) and box[0] <= box[2] and box[1] <= box[3]
        assert all(len(v) == 7 and set(v) <= {-1, 0, 1} for v in feats["move_vector"])
        assert [entry["reasoning"][str(i)]["move"] for i in range(t)] == feats["move_primitive"]
        assert entry["metadata"]["file_path"] == file_path and str(entry["metadata"]["episode_id"]) == episode_id
    assert seen == set(lengths)
    table = pq.read_table(out / STEPS_NAME)
    assert table.column_names == ["episode_index", "frame_index", "file_path", "episode_id", "reasoning", "move_primitive",
                                  "gripper_x", "gripper_y", "bboxes_json", "task", "plan", "subtask", "subtask_reason",
                                  "move", "move_reason"]


def strings_by_key(strings):
    return {(fp, ep, step): text for fp, ep, step, text in strings}


def test_workers_and_shards_give_identical_bytes(reference, tmp_path):
    ref_bytes = (reference[0] / FEATURES_NAME).read_bytes()
    run(tmp_path / "pool", workers=2)
    assert (tmp_path / "pool" / FEATURES_NAME).read_bytes() == ref_bytes
    first = run(tmp_path / "shards", num_shards=2, shard_index=1)
    assert not first.complete and first.total == 3
    assert not (tmp_path / "shards" / FEATURES_NAME).exists()
    second = run(tmp_path / "shards", num_shards=2, shard_index=0)
    assert second.complete
    assert (tmp_path / "shards" / FEATURES_NAME).read_bytes() == ref_bytes
    assert (tmp_path / "shards" / STEPS_NAME).read_bytes() == (reference[0] / STEPS_NAME).read_bytes()


def test_failures_are_summarized_and_retried(reference, tmp_path):
    from ecot.annotate.runner import WorkDir, failure_summary

    summary = run(tmp_path, fail_on=(2, 4))
    assert set(summary.failed) == {2, 4} and summary.annotated_now == 4
    assert "corrupt" in summary.failed[2]
    assert not summary.complete
    text = failure_summary(summary, WorkDir(tmp_path))
    assert "episode 2:" in text and "episode 4:" in text
    again = run(tmp_path)  # fixed data: only the failed ones are redone
    assert again.annotated_now == 2 and again.complete and not WorkDir(tmp_path).failures()
    assert (tmp_path / FEATURES_NAME).read_bytes() == (reference[0] / FEATURES_NAME).read_bytes()


def test_resume_with_other_settings_is_refused(tmp_path):
    from ecot.annotate.pipeline import AnnotateConfig

    run(tmp_path, n=2)
    with pytest.raises(ValueError, match="other settings"):
        run(tmp_path, n=2, annotate=AnnotateConfig(reasoning="openai", llm_base_url="http://127.0.0.1:9/v1"))
    more = run(tmp_path, n=3)  # a larger dataset / --limit resumes and only adds the new episode
    assert more.annotated_now == 1 and more.complete
    with pytest.raises(ValueError, match="unknown reasoning backend"):
        AnnotateConfig(reasoning="gpt")


SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {here!r})
    from annotate_synthetic import SyntheticDataset
    from ecot.annotate.runner import RunConfig, run_annotation

    class Slow(SyntheticDataset):
        def __getitem__(self, i):
            time.sleep(0.05)
            return super().__getitem__(i)

    out, workers = sys.argv[1], int(sys.argv[2])
    run_annotation(RunConfig(dataset_dir="synthetic", out_dir=out, workers=workers, progress=False),
                   lambda: Slow(n=12))
    """
)


def _spawn(script, out, workers):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), str(out), str(workers)], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_at_random_points_then_resume_is_byte_identical(tmp_path, workers):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(here=str(HERE)))
    clean = tmp_path / "clean"
    proc = _spawn(script, clean, 1)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    want = (clean / FEATURES_NAME).read_bytes()

    out = tmp_path / "killed"
    episodes = out / "work" / "episodes"
    rng = random.Random(workers)
    kills = 0
    for round_ in range(3):
        done = len(list(episodes.glob("*.json"))) if episodes.exists() else 0
        # Kill once a random number of further episodes is finished (round 0: at a random time,
        # possibly before the first one), so that every kill lands mid-run.
        target = rng.randint(min(done + 1, 11), 11)
        proc = _spawn(script, out, workers)
        deadline = time.monotonic() + 60
        if round_ == 0:
            time.sleep(rng.uniform(0.2, 1.0))
        else:
            while proc.poll() is None and time.monotonic() < deadline:
                if episodes.exists() and len(list(episodes.glob("*.json"))) >= target:
                    break
                time.sleep(0.005)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: workers die too
            kills += 1
        proc.wait(timeout=60)
    proc = _spawn(script, out, workers)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    assert kills >= 2
    assert (out / FEATURES_NAME).read_bytes() == want
    results = sorted(p.name for p in (out / "work" / "episodes").iterdir())
    assert results == [f"{i:08d}.json" for i in range(12)]  # no lost, duplicated or temp files


def test_resume_removes_only_dead_processes_temp_files(tmp_path):
    from ecot.annotate.runner import WorkDir, temp_path

    work = WorkDir(tmp_path)
    work.make()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = temp_path(work.result_path(1))  # this process's own name: alive
    stale = live.with_name(live.name.replace(f".{os.getpid()}.", f".{dead.pid}."))
    foreign = live.with_name(live.name.replace(".tmp", "").rsplit(".", 2)[0] + ".otherhost.123.tmp")
    for p in (live, stale, foreign):
        p.write_text("partial")
    work.clean_temps()
    assert live.exists() and foreign.exists() and not stale.exists()


def test_dataset_without_ground_truth_fails_fast(tmp_path):
    class NoGT(SyntheticDataset):
        has_ground_truth = False

    config = RunConfig(dataset_dir="synthetic", out_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="--gripper detector"):
        run_annotation(config, lambda: NoGT(n=2))


def test_duplicate_episode_keys_are_a_clear_error(tmp_path):
    class Duplicated(SyntheticDataset):
        def __getitem__(self, i):
            episode = super().__getitem__(i)
            episode.metadata.update(file_path="same", episode_id="0")
            return episode

    config = RunConfig(dataset_dir="synthetic", out_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="share file_path 'same' and episode_id '0'"):
        run_annotation(config, lambda: Duplicated(n=2))
    assert not (tmp_path / FEATURES_NAME).exists()
