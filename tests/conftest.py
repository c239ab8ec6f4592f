"""Fixtures shared by every test package.

``trained_checkpoint``: a tiny ECoT policy overfit on three scenes (``tests/tiny_policy.py``), so
tests of the runtime, the server and evaluation see a model that writes real ECoT reasoning and
memorized actions. Trained once per test session (about a minute on 2 CPU cores).
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
