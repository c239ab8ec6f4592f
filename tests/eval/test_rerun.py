"""`ecot eval --rerun out.rrd` writes a Rerun recording that the Rerun CLI reads back (optional extra `viz`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

rr = pytest.importorskip("rerun", reason="optional extra viz (rerun-sdk) not installed")


def test_eval_writes_a_readable_rerun_recording(tmp_path):
    rrd = tmp_path / "run.rrd"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa"), "RERUN_ANALYTICS": "0"}
    run = subprocess.run([sys.executable, "-m", "ecot", "eval", "--policy", "oracle", "--episodes", "2", "--image-size",
                          "48", "--max-steps", "12", "--out", str(tmp_path / "out"), "--rerun", str(rrd), "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rrd.read_bytes()[:4] == b"RRF2"  # Rerun's file magic
    cli = shutil.which("rerun") or str(Path(sys.executable).with_name("rerun"))
    if not Path(cli).exists():
        pytest.skip("the rerun CLI is not on PATH")
    printed = subprocess.run([cli, "rrd", "print", str(rrd)], capture_output=True, text=True, env=env, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    paths = set(re.findall(r"episode_\d{4}/[a-z_/]+", printed.stdout))
    for ep in ("episode_0000", "episode_0001"):
        for entity in ("camera", "camera/objects", "camera/gripper", "camera/gt_gripper", "reasoning", "instruction"):
            assert f"{ep}/{entity}" in paths, (ep, entity, sorted(paths))
