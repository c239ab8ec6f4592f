"""Fixtures shared by every test package.

``trained_checkpoint``: a tiny ECoT policy overfit on three scenes (``tests/tiny_policy.py``), so
tests of the runtime, the server and evaluation see a model that writes real ECoT reasoning and
memorized actions. Trained once per test session (about a minute on 2 CPU cores).

The sim data below is made once per session and shared read-only by several modules (a test
that changes a dataset or its annotations copies it first):

``sim_collection`` / ``sim_dataset``: 4 episodes (one per task family, 64 px) from ``collect``;
``annotated_sim``: 3 episodes (32 px) collected and annotated through the ``ecot`` CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_policy.py (pytest uses importlib mode)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    from tiny_policy import train_tiny_policy

    return train_tiny_policy(tmp_path_factory.mktemp("trained_policy") / "ckpt")


@pytest.fixture(scope="session")
def sim_collection(tmp_path_factory) -> tuple[Path, dict]:
    """4 sim episodes, one per task family, 64 px, default settings: ``(dataset dir, collect's summary)``.

    Used by tests/sim/test_collect.py and (as ``sim_dataset``) tests/annotate/."""
    pytest.importorskip("ecot.sim.env")  # picks a headless GL backend before mujoco loads
    from ecot.sim.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("sim_collection") / "ds"
    summary = collect(out, CollectConfig(task="all", episodes=4, image_size=64), progress=False)
    return out, summary


@pytest.fixture(scope="session")
def sim_dataset(sim_collection) -> Path:
    """The directory of ``sim_collection``'s dataset."""
    return sim_collection[0]


@pytest.fixture(scope="session")
def annotated_sim(tmp_path_factory) -> tuple[Path, Path, Path]:
    """3 sim episodes (32 px) collected and annotated with the ``ecot`` CLI: ``(root, data, annotations)``.

    Used by tests/test_safety.py and tests/train/test_cli.py."""
    from ecot.cli import main

    root = tmp_path_factory.mktemp("annotated_sim")
    data = root / "data"
    assert main(["sim", "collect", "--episodes", "3", "--out", str(data), "--image-size", "32", "--no-progress"]) == 0
    assert main(["annotate", str(data), "--out", str(root / "ann"), "--no-progress"]) == 0
    return root, data, root / "ann"
