"""`ecot demo` end to end, shrunk: sim -> annotate -> train -> closed-loop rollout with a GIF."""

import json
import os
import subprocess
import sys

from PIL import Image


def test_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "ecot", "demo", "--out", str(out), "--episodes", "4", "--train-steps", "3",
           "--batch-size", "2", "--rollouts", "1", "--rollout-steps", "2", "--workers", "1"]
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
    # Running again resumes every stage instead of redoing it.
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 new" in second.stdout + second.stderr
