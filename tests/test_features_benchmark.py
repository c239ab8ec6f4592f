"""The streaming benchmark runs end to end at CI size and records figure, baseline and ratio."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_features_stream_benchmark_small(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.features_stream import main
    finally:
        sys.path.remove(str(ROOT))
    main(["--scale", "0.002", "--out", str(tmp_path), "--workdir", str(tmp_path)])
    result = json.loads((tmp_path / "features_stream.json").read_text())
    runs = result["runs"]
    assert runs["stream"]["steps"] == runs["json_load"]["steps"] == runs["stream_index"]["steps"] > 0
    assert result["file"]["episodes"] == 106
    assert set(result["ratio"]) == {"peak_rss_stream_over_json_load", "speed_stream_over_json_load"}
    assert result["machine"]["cpu_count"] >= 1
