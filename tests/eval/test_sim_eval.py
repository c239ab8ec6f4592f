"""`ecot eval` in the real MuJoCo tabletop: success of the built-in policies, the oracle's
faithfulness, determinism across worker counts, resume after kill -9, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecot.eval.sim import EvalConfig, evaluate

from .helpers import episodes, results_without_timing

RESULT_KEYS = {"policy", "env", "split", "episodes", "success_rate", "success_ci95", "by_task", "faithfulness", "latency_ms"}
EPISODE_KEYS = {"index", "seed", "task", "split", "instruction", "task_spec", "success", "steps", "latency_ms",
                "faithfulness", "per_step", "gif"}


def test_expert_succeeds_and_random_does_not(tmp_path):
    expert = evaluate(EvalConfig(policy="expert", out=str(tmp_path / "expert"), episodes=20, image_size=64,
                                 max_steps=60, gifs=1), progress=False)
    assert set(expert) == RESULT_KEYS
    assert expert["episodes"] == 20 and expert["success_rate"] >= 0.95, expert
    assert set(expert["by_task"]) == {"pick_place", "move_relation", "stack", "push"}
    assert all(v["episodes"] == 5 for v in expert["by_task"].values())
    lo, hi = expert["success_ci95"]
    assert lo < expert["success_rate"] <= hi and lo > 0.7
    assert expert["faithfulness"] is None  # the expert writes no reasoning
    assert set(expert["latency_ms"]) == {"mean", "p50", "p95"}
    random = evaluate(EvalConfig(policy="random", out=str(tmp_path / "random"), episodes=20, image_size=64,
                                 max_steps=40, gifs=1), progress=False)
    assert random["success_rate"] <= 0.10, random
    assert random["success_ci95"][0] == 0.0 or random["success_rate"] > 0
    # One line per episode with the documented keys; GIFs of a success and a failure.
    recs = episodes(tmp_path / "expert")
    assert [r["index"] for r in recs] == list(range(20))
    assert set(json.loads((tmp_path / "expert" / "episodes.jsonl").read_text().splitlines()[0])) == EPISODE_KEYS
    assert all(r["steps"] == len(r["per_step"]) > 0 for r in recs)
    assert (tmp_path / "expert" / "gifs" / "success_0000.gif").exists()
    failures = [r for r in episodes(tmp_path / "random") if r["gif"]]
    assert len(failures) == 1 and not failures[0]["success"]
    assert (tmp_path / "random" / failures[0]["gif"]).exists()


def test_oracle_reasoning_is_faithful_and_workers_give_identical_episodes(tmp_path):
    common = dict(policy="oracle", episodes=6, image_size=128, max_steps=60, gifs=1)
    two = evaluate(EvalConfig(out=str(tmp_path / "w2"), workers=2, **common), progress=False)
    f = two["faithfulness"]
    assert f["box_iou"] >= 0.9 and f["move_agree"] >= 0.9 and f["gripper_err_px"] <= 3, f
    assert f["box_precision"] == 1.0 and f["box_recall"] == 1.0
    assert f["subtask_correct"] >= 0.9 and f["plan_coverage"] == 1.0
    assert two["success_rate"] >= 5 / 6
    step = episodes(tmp_path / "w2")[0]["per_step"][3]
    assert step["reasoning"]["subtask"] == step["metrics"]["subtask_gt"]
    assert step["reasoning"]["move"] == step["metrics"]["move_gt"]
    one = evaluate(EvalConfig(out=str(tmp_path / "w1"), workers=1, **common), progress=False)
    assert episodes(tmp_path / "w1") == episodes(tmp_path / "w2")
    assert results_without_timing(tmp_path / "w1") == results_without_timing(tmp_path / "w2")
    assert one["faithfulness"] == two["faithfulness"]


def _cmd(out: Path, episodes: int = 10) -> list[str]:
    return [sys.executable, "-m", "ecot", "eval", "--policy", "random", "--episodes", str(episodes), "--image-size", "48",
            "--max-steps", "25", "--out", str(out), "--no-progress", "--gifs", "1"]


def test_resume_after_kill_9_gives_the_same_results(tmp_path):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    reference = subprocess.run(_cmd(tmp_path / "ref"), capture_output=True, text=True, env=env, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    log = killed / "episodes.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(log.read_text().splitlines())
    assert 3 <= n_before < 10, "the run must be killed part-way"
    assert not (killed / "results.json").exists()
    resumed = subprocess.run(_cmd(killed), capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert episodes(killed) == episodes(tmp_path / "ref")
    assert results_without_timing(killed) == results_without_timing(tmp_path / "ref")
    # Raising --episodes adds episodes; the first ten are untouched.
    more = subprocess.run(_cmd(killed, 12), capture_output=True, text=True, env=env, timeout=300)
    assert more.returncode == 0, more.stderr[-2000:]
    assert episodes(killed)[:10] == episodes(tmp_path / "ref") and len(episodes(killed)) == 12


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    first = evaluate(EvalConfig(policy="random", out=str(out), episodes=3, image_size=32, max_steps=5), progress=False)
    lines = (out / "episodes.jsonl").read_text().splitlines(keepends=True)
    (out / "episodes.jsonl").write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # crash mid-write
    again = evaluate(EvalConfig(policy="random", out=str(out), episodes=3, image_size=32, max_steps=5), progress=False)
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 3
    assert {k: v for k, v in again.items() if k != "latency_ms"} == {k: v for k, v in first.items() if k != "latency_ms"}


def test_bad_input_gives_clear_errors(tmp_path):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    run = subprocess.run([sys.executable, "-m", "ecot", "eval", "--policy", str(tmp_path / "nope"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2 and "neither expert, oracle, random, ws://HOST:PORT" in run.stderr
    run = subprocess.run([sys.executable, "-m", "ecot", "eval", "--policy", "ws://localhost", "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2 and "ws://HOST:PORT" in run.stderr
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        EvalConfig(policy="expert", episodes=0)
    with pytest.raises(ValueError, match="unknown task family"):
        EvalConfig(policy="expert", task="juggle")
    evaluate(EvalConfig(policy="random", out=str(tmp_path / "r"), episodes=1, image_size=32, max_steps=3), progress=False)
    with pytest.raises(ValueError, match="different settings"):
        evaluate(EvalConfig(policy="random", out=str(tmp_path / "r"), episodes=1, image_size=48, max_steps=3), progress=False)
    with pytest.raises(FileNotFoundError, match="results.json"):
        from ecot.viz.report import write_report

        write_report([tmp_path / "o"], tmp_path / "x.html")


def test_an_older_run_without_a_newer_setting_resumes_at_its_default(tmp_path):
    """eval_config.json written before --num-objects / --action-decoding existed: resuming with the
    defaults continues it, asking for other values is refused."""
    config = EvalConfig(policy="expert", out=str(tmp_path), task="push", episodes=1, max_steps=3, image_size=32)
    old = config.identity()
    del old["num_objects"], old["action_decoding"]
    (tmp_path / "eval_config.json").write_text(json.dumps(old))
    assert evaluate(config)["episodes"] == 1
    with pytest.raises(ValueError, match="num_objects"):
        evaluate(EvalConfig(policy="expert", out=str(tmp_path), task="push", episodes=1, max_steps=3, image_size=32,
                            num_objects=3))
