"""A trained tiny checkpoint (``trained_checkpoint``, tests/conftest.py) evaluated closed-loop:
locally, and through a live `ecot serve` on 127.0.0.1 with equal results for the same seeds (greedy)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time

import pytest

from ecot.eval.sim import EvalConfig, evaluate

from .helpers import episodes

COMMON = dict(episodes=1, image_size=64, max_steps=1, gifs=1, device="cpu")


def test_checkpoint_runs_closed_loop_and_its_reasoning_is_scored(trained_checkpoint, tmp_path):
    results = evaluate(EvalConfig(policy=str(trained_checkpoint), out=str(tmp_path / "local"), **COMMON),
                       progress=False)
    assert results["episodes"] == 1 and results["latency_ms"]["mean"] > 0
    recs = episodes(tmp_path / "local")
    assert all(r["steps"] == 1 for r in recs)  # it does not solve a sim task in 1 step
    steps = [s for r in recs for s in r["per_step"]]
    assert all(len(s["action"]) == 7 for s in steps)
    # It writes ECoT reasoning every step (the grammar makes it parse; what it says about a sim scene it
    # never saw depends on the weights); each is scored against the sim's ground truth.
    fields = {"task", "plan", "visible_objects", "subtask_reasoning", "subtask", "move_reasoning", "move",
              "gripper_positions"}
    assert all(set(s["reasoning"]) == fields and any(s["reasoning"].values()) for s in steps)
    assert all(s["metrics"] is not None and s["metrics"]["move_gt"] for s in steps)
    f = results["faithfulness"]
    assert f["steps"] == 1 and f["plan_coverage"] == 0.0  # its plans are about other scenes
    assert f["box_precision"] is not None and f["box_precision"] < 1.0


def _has_serve() -> bool:
    """`ecot serve` is a subcommand of this tree (not just importable from another install)."""
    from ecot.cli import STAGE_MODULES

    return importlib.util.find_spec("ecot.policy") is not None and "ecot.serve.cli" in STAGE_MODULES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not _has_serve(), reason="needs the policy runtime (ecot.policy) and `ecot serve` (ecot.serve)")
def test_local_and_served_checkpoint_give_equal_results(trained_checkpoint, tmp_path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "ecot", "serve", str(trained_checkpoint), "--port", str(port),
                               "--device", "cpu", "--max-batch", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        local = evaluate(EvalConfig(policy=str(trained_checkpoint), out=str(tmp_path / "local"), **COMMON),
                         progress=False)
        remote = evaluate(EvalConfig(policy=f"ws://127.0.0.1:{port}", out=str(tmp_path / "remote"), **COMMON),
                          progress=False)
    finally:
        os.killpg(server.pid, 9)
        server.wait()
    assert episodes(tmp_path / "local") == episodes(tmp_path / "remote")
    for key in ("success_rate", "by_task", "faithfulness", "episodes"):
        assert local[key] == remote[key]
