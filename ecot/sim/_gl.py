"""Pick a headless OpenGL backend for MuJoCo before ``mujoco`` is imported.

MuJoCo reads ``MUJOCO_GL`` once, when the ``mujoco`` package is imported. When the user has
not set it, we try EGL, then OSMesa, each in a short-lived subprocess (a failed GL context can
abort the process), and export the first that renders, so worker processes inherit it.
"""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom type="box" size=".1 .1 .1"/></worldbody></mujoco>')
d = mujoco.MjData(m)
r = mujoco.Renderer(m, 8, 8)
mujoco.mj_forward(m, d)
r.update_scene(d)
r.render()
r.close()
print("ok")
"""

CANDIDATES = ("egl", "osmesa")


def _works(backend: str) -> bool:
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and "ok" in proc.stdout


def ensure_gl_backend() -> str:
    """Return the MuJoCo GL backend in use, choosing and exporting one if none is set."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        if chosen in ("egl", "osmesa"):
            os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
        return chosen
    if "mujoco" in sys.modules:
        return ""  # too late to choose; MuJoCo already picked its default
    for backend in CANDIDATES:
        if _works(backend):
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
    raise RuntimeError(
        "no headless OpenGL backend works for MuJoCo rendering: tried MUJOCO_GL=egl and MUJOCO_GL=osmesa. "
        "Install EGL (apt-get install libegl1) or OSMesa (apt-get install libosmesa6), or set MUJOCO_GL yourself."
    )
