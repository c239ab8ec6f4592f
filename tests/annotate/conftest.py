import sys
from pathlib import Path

# --import-mode=importlib puts no test directory on sys.path; the helpers live beside the tests.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory):
    """A tiny real sim dataset: 4 episodes (one per task family), 64 px, collected once."""
    pytest.importorskip("ecot.sim.env")  # picks a headless GL backend before mujoco loads
    from ecot.sim.collect import CollectConfig, collect

    root = tmp_path_factory.mktemp("annotate_sim") / "ds"
    collect(root, CollectConfig(episodes=4, image_size=64, max_steps=60), progress=False)
    return root
