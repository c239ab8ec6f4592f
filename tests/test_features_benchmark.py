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
    runs, shape = result["runs"], result["file"]
    assert shape["episodes"] == 106  # 0.002 x 53k
    # Every reader saw every step the generator wrote (20 to 73 steps per episode), and nothing else.
    assert 106 * 20 <= shape["steps"] <= 106 * 73
    assert runs["stream"]["steps"] == runs["json_load"]["steps"] == runs["stream_index"]["steps"] == shape["steps"]
    assert "mismatch" not in result
    for mode, run in runs.items():
        assert 0 < run["seconds"] < 120, (mode, run)
        assert 10 < run["peak_rss_mib"] < 4096, (mode, run)  # a Python process, not a unit mix-up (KiB/bytes)
    # The recorded figures are the measured runs', recomputed here from the raw numbers.
    stream, base = runs["stream"], runs["json_load"]
    mib = shape["bytes"] / 2**20
    assert shape["bytes"] > 0 and result["file"]["mib"] == round(mib, 1)
    assert result["value"]["stream_steps_per_s"] == round(stream["steps"] / stream["seconds"])
    assert result["value"]["stream_mib_per_s"] == round(mib / stream["seconds"], 1)
    assert result["value"]["stream_peak_rss_mib"] == round(stream["peak_rss_mib"], 1)
    assert result["target"]["met"] == (stream["peak_rss_mib"] <= result["target"]["stream_peak_rss_mib_max"])
    assert result["baseline"]["json_load_peak_rss_mib"] == round(base["peak_rss_mib"], 1)
    assert result["ratio"] == {
        "peak_rss_stream_over_json_load": round(stream["peak_rss_mib"] / base["peak_rss_mib"], 4),
        "speed_stream_over_json_load": round(base["seconds"] / stream["seconds"], 3),
    }
    assert result["machine"]["cpu_count"] >= 1
