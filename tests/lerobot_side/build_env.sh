#!/usr/bin/env bash
# Build (once, cached) the side environment with real LeRobot used by the cross-check tests
# (tests/data/test_lerobot_crosscheck.py). It is separate from the project's venv because
# lerobot 0.4.x pins an older torch/torchvision; here it gets the CPU torch 2.13.0 and
# torchvision 0.28.0, installed without their declared pins, plus what lerobot's dataset
# code imports. torchvision's compiled ops do not load beside this torch: tests/lerobot_side/shim.py
# papers over that for LeRobot's dataset code (test-only).
#
#   bash tests/lerobot_side/build_env.sh [VENV_DIR]      (default: .lerobot-venv in the repo root)
#
# Prints the venv's python path on its last line. Python 3.11 is required (lerobot 0.4.x).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-${ECOT_LEROBOT_VENV:-$root/.lerobot-venv}}"
stamp="$venv/.ecot-side-env-v2"
if [ -f "$stamp" ]; then echo "$venv/bin/python"; exit 0; fi
py="${ECOT_LEROBOT_PYTHON:-$(command -v python3.11 || true)}"
if [ -z "$py" ]; then echo "python3.11 not found (lerobot 0.4.x needs Python 3.11)" >&2; exit 3; fi
rm -rf "$venv"
"$py" -m venv "$venv"
pip="$venv/bin/pip"
"$pip" install -q --upgrade pip >&2
"$pip" install -q "torch==2.13.0" >&2
# lerobot and torchvision without their pins (they would pull another torch).
"$pip" install -q --no-deps "lerobot==0.4.4" "torchvision==0.28.0" >&2
# What lerobot.datasets imports (lerobot's own ranges where they admit this torch).
"$pip" install -q -r "$here/requirements.txt" >&2
touch "$stamp"
echo "$venv/bin/python"
