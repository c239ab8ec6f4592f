"""The streaming benchmark runs end to end at CI size and records figures, baselines and ratios.

Each of ours is paired with a baseline doing the same work (both keep an index / both build
every string and drop it); the file must show that the pairs did the same work and that every
recorded figure is the measured runs', recomputed here from the raw numbers.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.features_stream import main
    finally:
        sys.path.remove(str(ROOT))
    main(["--scale", "0.002", "--out", str(tmp_path), "--workdir", str(tmp_path)])
    return json.loads((tmp_path / "features_stream.json").read_text())


def test_features_stream_benchmark_small(tmp_path):
    result = _run(tmp_path)
    runs, shape = result["runs"], result["file"]
    assert set(runs) == {"stream", "stream_index", "json_load_discard", "json_load"}
    assert result["pairs"] == {"stream_index": "json_load", "stream": "json_load_discard"}
    assert shape["episodes"] == 106  # 0.002 x 53k
    # Every reader saw every step the generator wrote (20 to 73 steps per episode), and nothing else.
    assert 106 * 20 <= shape["steps"] <= 106 * 73
    assert {run["steps"] for run in runs.values()} == {shape["steps"]}
    # Equal work: every reader built the same number of characters (each step's string is a few
    # hundred characters), and the two index builders kept the very same index.
    chars = {run["chars"] for run in runs.values()}
    assert len(chars) == 1 and chars.pop() > 100 * shape["steps"]
    assert len(runs["stream_index"]["index_digest"]) == 32
    assert runs["stream_index"]["index_digest"] == runs["json_load"]["index_digest"]
    assert "index_digest" not in runs["stream"] and "index_digest" not in runs["json_load_discard"]
    assert "mismatch" not in result
    for mode, run in runs.items():
        assert 0 < run["seconds"] < 120 and 0 < run["cpu_seconds"] < 120, (mode, run)
        assert 10 < run["peak_rss_mib"] < 4096, (mode, run)  # a Python process, not a unit mix-up (KiB/bytes)
        assert len(run["load_average_before"]) == 3
    # The recorded figures are the measured runs', recomputed here from the raw numbers.
    mib = shape["bytes"] / 2**20
    assert shape["bytes"] > 0 and result["file"]["mib"] == round(mib, 1)
    for section, modes in (("value", ("stream", "stream_index")), ("baseline", ("json_load", "json_load_discard"))):
        assert set(result[section]) == set(modes)
        for mode in modes:
            run = runs[mode]
            assert result[section][mode] == {
                "seconds": round(run["seconds"], 2),
                "cpu_seconds": round(run["cpu_seconds"], 2),
                "peak_rss_mib": round(run["peak_rss_mib"], 1),
                "steps_per_s": round(run["steps"] / run["seconds"]),
                "mib_per_s": round(mib / run["seconds"], 1),
            }
    assert result["target"]["met"] == (runs["stream"]["peak_rss_mib"] <= result["target"]["stream_peak_rss_mib_max"])
    expected = {}
    for ours, base in (("stream_index", "json_load"), ("stream", "json_load_discard")):
        a, b = runs[ours], runs[base]
        expected[f"speed_cpu_{ours}_over_{base}"] = round(b["cpu_seconds"] / a["cpu_seconds"], 3)
        expected[f"speed_wall_{ours}_over_{base}"] = round(b["seconds"] / a["seconds"], 3)
        expected[f"peak_rss_{ours}_over_{base}"] = round(a["peak_rss_mib"] / b["peak_rss_mib"], 4)
    assert result["ratio"] == expected
    assert result["machine"]["cpu_count"] >= 1


def test_features_stream_benchmark_reports_unequal_work(tmp_path, monkeypatch):
    """A baseline that does less work than ours is reported, not silently compared."""
    sys.path.insert(0, str(ROOT))
    try:
        import benchmarks.features_stream as bench
    finally:
        sys.path.remove(str(ROOT))
    real = bench.measure

    def short_baseline(mode, path):
        run = real(mode, path)
        if mode == "json_load":
            run["steps"] -= 1
            run["index_digest"] = "0" * 32
        return run

    monkeypatch.setattr(bench, "measure", short_baseline)
    result = _run(tmp_path)
    assert any("steps" in m for m in result["mismatch"]) and any("index_digest" in m for m in result["mismatch"])
    assert all(m.startswith("stream_index and json_load") for m in result["mismatch"])
