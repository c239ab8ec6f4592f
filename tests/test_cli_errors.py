"""One error reporter for every `ecot` subcommand (ecot.cli.report_error).

A bad flag value exits 2 with a message naming the flag; a failing run exits 1 with one
``ecot: error:`` line and no traceback, unless ``--debug`` is given.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from ecot.cli import main

# (subcommand, extra argv giving a bad value, the flag the message must name). Each subcommand twice where it
# can: a value argparse refuses (type or choice), and one the subcommand's config refuses (range).
BAD_VALUES = [
    (["data", "convert", "S", "D"], ["--limit", "x"], "--limit"),
    (["data", "convert", "S", "D"], ["--to", "zarr"], "--to"),
    (["features", "show", "F"], ["--limit", "x"], "--limit"),
    (["sim", "collect", "--out", "O"], ["--episodes", "x"], "--episodes"),
    (["sim", "collect", "--out", "O"], ["--episodes", "0"], "--episodes"),
    (["sim", "collect", "--episodes", "1", "--out", "O"], ["--image-size", "8"], "--image-size"),
    (["sim", "collect", "--episodes", "1", "--out", "O"], ["--name", "a/b"], "--name"),
    (["sim", "render", "DS", "--out", "o.gif"], ["--scale", "0"], "--scale"),
    (["annotate", "DS", "--out", "O"], ["--workers", "x"], "--workers"),
    (["annotate", "DS", "--out", "O"], ["--workers", "0"], "--workers"),
    (["annotate", "DS", "--out", "O"], ["--reasoning", "oracle"], "--reasoning"),
    (["model", "init", "--out", "O"], ["--seed", "x"], "--seed"),
    (["model", "init", "--out", "O"], ["--max-shard-size", "lots"], "--max-shard-size"),
    (["model", "predict", "P", "--image", "i.png", "--instruction", "x"], ["--max-new-tokens", "0"], "--max-new-tokens"),
    (["train", "--data", "D", "--out", "O"], ["--max-steps", "x"], "--max-steps"),
    (["train", "--data", "D", "--out", "O"], ["--max-steps", "0"], "--max-steps"),
    (["train", "--data", "D", "--out", "O"], ["--min-lr-ratio", "2"], "--min-lr-ratio"),
    (["train", "--data", "D", "--out", "O"], ["--schedule", "linear"], "--schedule"),
    (["train", "--data", "D", "--out", "O"], ["--model", "no-such-preset"], "--model"),
    (["policy", "bench", "C"], ["--steps", "0"], "--steps"),
    (["policy", "bench", "C"], ["--reuse-steps", "0"], "--reuse-steps"),
    (["policy", "bench", "C"], ["--modes", "fastest"], "--modes"),
    (["serve", "C"], ["--port", "x"], "--port"),
    (["serve", "C"], ["--max-batch", "0"], "--max-batch"),
    (["eval", "--policy", "expert", "--out", "O"], ["--episodes", "x"], "--episodes"),
    (["eval", "--policy", "expert", "--out", "O"], ["--episodes", "0"], "--episodes"),
    (["eval", "--policy", "expert", "--out", "O"], ["--mode", "fastest"], "--mode"),
    (["report", "D"], ["--gallery", "x"], "--gallery"),
    (["demo"], ["--episodes", "0"], "--episodes"),
]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own errors
        return exit_.code


@pytest.mark.parametrize("base, bad, flag", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_a_bad_flag_value_exits_2_naming_the_flag(base, bad, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing is written, but relative paths would land here
    assert _exit_code(base + bad) == 2
    err = capsys.readouterr().err
    assert flag in err and "error:" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "a usage error must stop before anything is written"


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A file (a directory cannot be made under it), an empty directory (not a checkpoint), a 224 px image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("places")
    (root / "file").write_text("not a directory")
    (root / "empty").mkdir()
    Image.new("RGB", (224, 224)).save(root / "image.png")
    return root


FAILING_RUNS = [
    ["data", "info", "{missing}"],
    ["data", "convert", "{missing}", "{tmp}/dst"],
    ["features", "show", "{missing}"],
    ["features", "stats", "{missing}"],
    ["sim", "collect", "--episodes", "1", "--out", "{file}/x"],
    ["sim", "render", "{missing}", "--out", "{tmp}/x.gif"],
    ["annotate", "{missing}", "--out", "{tmp}/annotations"],
    ["model", "init", "--out", "{file}/x"],
    ["model", "info", "{missing}"],
    ["model", "predict", "{empty}", "--image", "{image}", "--instruction", "pick"],
    ["train", "--data", "{missing}", "--out", "{tmp}/run"],
    ["policy", "bench", "{empty}"],
    ["serve", "{empty}"],
    ["eval", "--policy", "expert", "--out", "{file}/x", "--episodes", "1"],
    ["report", "{missing}"],
    ["demo", "--out", "{file}/x"],
]


def _fill(argv, places, tmp_path):
    where = {"missing": str(tmp_path / "missing"), "tmp": str(tmp_path), "file": str(places / "file"),
             "empty": str(places / "empty"), "image": str(places / "image.png")}
    return [a.format(**where) for a in argv]


@pytest.mark.parametrize("argv", FAILING_RUNS, ids=lambda v: " ".join(v[:2]))
def test_a_failing_run_exits_1_with_one_line_and_a_traceback_only_with_debug(argv, places, tmp_path, capsys):
    argv = _fill(argv, places, tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ecot: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "unexpected" not in lines[0], f"an expected failure reported as unexpected: {lines[0]}"
    with pytest.raises(Exception):  # --debug: the exception propagates (Python prints its traceback)
        main(["--debug", *argv])


def test_debug_prints_the_traceback_from_the_shell(tmp_path):
    argv = [sys.executable, "-m", "ecot", "features", "stats", str(tmp_path / "missing.json")]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    debug = subprocess.run(argv + ["--debug"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and "ecot: error:" in plain.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ecot: error:" not in debug.stderr
