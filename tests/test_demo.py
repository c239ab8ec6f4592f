"""`ecot demo` end to end, shrunk: sim -> annotate -> train -> closed-loop rollout with a GIF."""

import json
import os
import subprocess
import sys

from PIL import Image


def test_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "ecot", "demo", "--out", str(out), "--episodes", "4", "--train-steps", "3",
           "--batch-size", "2", "--rollouts", "1", "--rollout-steps", "2", "--workers", "1",
           "--locator-pretrain-steps", "3"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "dataset" / "meta" / "info.json").exists()
    assert (out / "annotations" / "embodied_features.json").exists()
    assert (out / "train" / "final" / "config.json").exists()
    assert "eval/action_accuracy" in summary["held_out_metrics"]
    assert summary["episodes"] == 1 and 0.0 <= summary["success_rate"] <= 1.0  # rollouts through ecot.eval
    assert (out / "eval" / "results.json").exists() and (out / "eval" / "episodes.jsonl").exists()
    rollout = summary["rollouts"][0]
    assert rollout["steps"] >= 1 and rollout["instruction"]
    assert Image.open(rollout["gif"]).n_frames == rollout["steps"]
    assert "instruction:" in first.stderr and "step  0 |" in first.stderr
    # Running again resumes every stage instead of redoing it: nothing a stage wrote is rewritten.
    before = _stage_outputs(out)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    after = _stage_outputs(out)
    for stage in before:
        assert after[stage] == before[stage], f"the {stage} stage redid its work on the second run"
    log = second.stdout + second.stderr
    assert "(0 new, 0 of them successful)" in log  # collect: nothing collected
    assert "annotated 0 episode(s) now; 4/4 done" in log  # annotate: nothing annotated
    assert "step  0 |" not in log and "instruction:" not in log  # eval: no rollout ran again
    assert json.loads((out / "summary.json").read_text())["rollouts"] == summary["rollouts"]


def _stage_outputs(out):
    """What each stage wrote: a redone stage changes its entry. Data files by modification time;
    small metadata files (which a finished stage may rewrite with the same content) by content."""
    import hashlib

    def files(root, pattern="**/*", by_content=False):
        found = {}
        for p in sorted(root.glob(pattern)):
            if p.is_file() and not p.name.startswith("."):
                found[str(p.relative_to(out))] = (hashlib.sha256(p.read_bytes()).hexdigest() if by_content
                                                  else (p.stat().st_mtime_ns, p.stat().st_size))
        assert found, f"no files under {root}/{pattern}"
        return found

    return {
        "collect": {**files(out / "dataset" / "data"), **files(out / "dataset" / "meta", by_content=True)},
        # annotate: the per-episode results; the assembled files are rebuilt from them, to the same bytes
        "annotate": {**files(out / "annotations" / "work" / "episodes"),
                     **files(out / "annotations", "embodied_features.json", by_content=True)},
        # train: the log of optimizer steps and the checkpoints (a rerun with nothing left only re-exports final/)
        "train": {**files(out / "train", "metrics.jsonl"), **files(out / "train" / "checkpoints")},
        "eval": {**files(out / "eval", "episodes.jsonl"), **files(out / "eval", "**/*.gif")},
    }
