"""The dataset_read benchmark runs end to end at CI size (ecot's reader only) and records its figures."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dataset_read_benchmark_small(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.dataset_read import main
    finally:
        sys.path.remove(str(ROOT))
    main(["--episodes", "2", "--image-size", "64", "--workers", "1", "--shuffled", "10", "--skip-lerobot",
          "--out", str(tmp_path), "--dataset", str(tmp_path / "ds")])
    result = json.loads((tmp_path / "dataset_read.json").read_text())
    runs = result["runs"]
    frames = result["dataset"]["frames"]
    assert result["dataset"]["episodes"] == 2 and result["dataset"]["codec"] == "av1"
    assert runs["ecot_steps"]["frames"] == runs["ecot_episodes"]["frames"] == frames > 0
    assert runs["ecot_steps"]["checksum"] == runs["ecot_episodes"]["checksum"]  # both paths decode the same frames
    assert runs["ecot_shuffled"]["frames"] == 10 and result["value"]["ecot_steps_frames_per_s"] > 0
    assert "lerobot" not in runs
