import sys
from pathlib import Path

# The train tests share small builders in train_helpers.py (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).resolve().parent))
