#!/usr/bin/env bash
# Set up (if needed) and run the end-to-end demo on built-in defaults (outputs in runs/demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL="${MUJOCO_GL:-osmesa}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}"
exec "${VENV:-.venv}/bin/ecot" demo "$@"
