"""Built-in MuJoCo tabletop: scene, tasks with language, scripted expert, data collection.

Public API (imported lazily, so ``import ecot.sim`` is cheap and does not start OpenGL):

* :class:`TabletopEnv`, :class:`SimConfig` -- gymnasium-style ``reset(seed, task)`` / ``step(action)``
* :func:`sample_task`, :class:`TaskSpec`, ``FAMILIES``, ``SPLITS`` -- task families and splits
* :class:`ScriptedExpert`, :class:`ExpertConfig` -- the demonstrator
* :func:`collect`, :class:`CollectConfig`, :func:`record_episode` -- datasets of demonstrations
* :func:`render_episode_gif` -- a GIF with the ground truth drawn
"""

from __future__ import annotations

import importlib
from typing import Any

# The scripted expert's motion styles (ecot.sim.expert), here so CLI options can name them without numpy.
EXPERT_STYLES = ("smooth", "axis", "grid", "sign")

_EXPORTS = {
    "TabletopEnv": "ecot.sim.env",
    "SimConfig": "ecot.sim.env",
    "sample_task": "ecot.sim.tasks",
    "TaskSpec": "ecot.sim.tasks",
    "FAMILIES": "ecot.sim.tasks",
    "SPLITS": "ecot.sim.tasks",
    "check_success": "ecot.sim.tasks",
    "ScriptedExpert": "ecot.sim.expert",
    "ExpertConfig": "ecot.sim.expert",
    "collect": "ecot.sim.collect",
    "CollectConfig": "ecot.sim.collect",
    "record_episode": "ecot.sim.collect",
    "render_episode_gif": "ecot.sim.render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ecot.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
