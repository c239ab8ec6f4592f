"""The README's main job, measured: ``ecot demo`` on built-in defaults, wall time per stage and the
closed-loop figures, beside the trivial predictors of its held-out metrics.

    python benchmarks/demo_run.py --out runs/demo_bench     # ~15 min on 2 CPU cores

Writes ``benchmarks/results/demo.json``. Run it from a fresh clone (a new --out directory): a
resumed demo skips finished stages and would time nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_result  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo_bench", help="a new run directory")
    p.add_argument("extra", nargs="*", help="extra `ecot demo` flags (the defaults are what the README reports)")
    args = p.parse_args()
    out = Path(args.out)
    if (out / "summary.json").exists():
        raise SystemExit(f"{out} already holds a finished demo; choose a new --out (a resumed demo times nothing)")
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ecot", "demo", "--out", str(out), *args.extra], check=True, env=env)
    wall = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    write_result("demo", summary_result(summary, wall))


def summary_result(summary: dict, wall_s: float) -> dict:
    m = summary.get("held_out_metrics", {})
    pick = lambda prefix: {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith(prefix)}  # noqa: E731
    return {
        "what": "ecot demo on built-in defaults (collect, annotate, train, closed-loop rollouts), wall time",
        "value": {"wall_s": round(wall_s, 1), "stages_s": summary.get("seconds"), "success_rate": summary.get("success_rate"),
                  "episodes": summary.get("episodes"), "faithfulness": summary.get("faithfulness"),
                  "held_out": {k: v for k, v in pick("eval/").items() if not k.startswith(("majority", "zero_motion"))}},
        "baseline": {"held_out_majority_token": pick("eval/majority_"), "held_out_zero_motion": pick("eval/zero_motion_"),
                     "goal": "success_rate >= 0.5 in <= 15 min on 2 CPU cores"},
        "ratio": None,
    }


if __name__ == "__main__":
    main()
