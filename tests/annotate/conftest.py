import sys
from pathlib import Path

# --import-mode=importlib puts no test directory on sys.path; the helpers live beside the tests.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# sim_dataset (4 sim episodes, one per family, 64 px) is in tests/conftest.py, shared with tests/sim/.
