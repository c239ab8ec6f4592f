#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install ecot into it.
# torch goes first: on this CPU machine the pinned 2.13.0 build; on a GPU machine install your
# CUDA torch (>= 2.6) into the venv before running this, and it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
EXTRAS="${ECOT_EXTRAS:-test,llm,serve}"

# Headless rendering for the MuJoCo scene (OSMesa), when missing and we may install it.
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6 libgl1 libegl1 >/dev/null) \
    || echo "warning: could not install OSMesa; MuJoCo rendering may fail" >&2
fi

# Headless Chromium + ChromeDriver for the browser tests (viewer page, HTML report), when asked for.
if [ "${ECOT_BROWSER:-0}" = 1 ] && ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; browser tests will fail" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q torch==2.13.0
fi
# Pin whatever torch is installed so no dependency swaps it for another build.
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
grep -v '^torch==' constraints.txt > "$CONSTRAINTS" || true
echo "torch==$TORCH_VERSION" >> "$CONSTRAINTS"
"$PY" -m pip install -q -c "$CONSTRAINTS" -e ".[$EXTRAS]"
# The serve tests drive the unmodified openpi-client (declares numpy<2 but runs on numpy 2: no deps).
case ",$EXTRAS," in
  *,test,*) "$PY" -m pip install -q -c "$CONSTRAINTS" --no-deps "openpi-client==0.1.2" ;;
esac
echo "ecot installed in $VENV (torch $TORCH_VERSION)"
