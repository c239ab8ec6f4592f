#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests exercise every optional backend that runs offline (LLM clients, Ray in local mode).
export ECOT_EXTRAS="${ECOT_EXTRAS:-test,llm,serve,ray,viz}"
export ECOT_BROWSER=1  # the viewer and report tests drive headless Chromium
bash scripts/setup.sh
export MUJOCO_GL="${MUJOCO_GL:-osmesa}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}"
exec "${VENV:-.venv}/bin/python" -m pytest -q --durations=25 "$@"
