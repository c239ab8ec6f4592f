"""The prepared GPU benchmark (`benchmarks/policy_gpu.py`) runs end to end on a CPU with a tiny
preset, so a lent GPU's few minutes are not lost to a broken script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_policy_gpu_script_smoke_on_cpu(tmp_path):
    cmd = [sys.executable, "benchmarks/policy_gpu.py", "--preset", "tiny-siglip", "--device", "cpu", "--new-tokens", "8",
           "--no-compile"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OUT": str(tmp_path), "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "policy_gpu.json").read_text())
    value = result["value"]
    decode = value["decode"]
    assert decode["ours_eager_tokens_per_s"] > 0 and decode["generate_tokens_per_s"] > 0
    assert decode["same_ids_eager_vs_generate"]  # fp32 on a CPU: the same greedy ids as generate
    assert result["ratio"] == value["ratio_vs_generate"] > 0
    budgets = value["budgets"]
    assert sum(budgets["even"].values()) == sum(budgets["shaped"].values())
    assert budgets["shaped"]["GRIPPER POSITION:"] < budgets["shaped"]["VISIBLE OBJECTS:"]
    for key in ("full_step", "reuse_step", "reuse_step_shaped"):
        assert value[key]["mean_ms"] > 0 and value[key]["tokens_decoded"] > 0, key
    # A reuse step writes only the low-level part; the shaped budgets make that part shorter still.
    assert value["reuse_step"]["tokens_reused"] > 0
    assert value["reuse_step"]["tokens_decoded"] < value["full_step"]["tokens_decoded"]
    assert value["reuse_step_shaped"]["tokens_decoded"] <= value["reuse_step"]["tokens_decoded"]
