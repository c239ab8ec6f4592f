"""The `ecot` command: installed entry point, help, and the features subcommands."""

import json
import shutil
import subprocess
import sys

from ecot.data.features import FeaturesWriter


def run(*args):
    exe = shutil.which("ecot") or None
    cmd = [exe, *args] if exe else [sys.executable, "-m", "ecot", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_help_lists_the_stages():
    out = run("--help")
    assert out.returncode == 0, out.stderr
    assert "usage: ecot" in out.stdout and "features" in out.stdout


def test_unknown_command_fails_clearly():
    out = run("no-such-command")
    assert out.returncode != 0
    assert "invalid choice" in out.stderr


def test_features_show_and_stats(tmp_path):
    path = tmp_path / "features.json"
    entry = {
        "reasoning": {"0": {"task": "stack the cups", "plan": "p", "subtask": "s", "subtask_reason": "r", "move": "stop", "move_reason": "m"}},
        "features": {"gripper_position": [[3, 4]], "bboxes": [[[0.9, "the cup", [1, 2, 3, 4]]]]},
        "metadata": {},
    }
    with FeaturesWriter(path) as writer:
        writer.add("sim/stack", 0, entry)
        writer.add("sim/stack", 1, {"features": {}, "metadata": {}})
    shown = run("features", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "TASK: stack the cups PLAN: p VISIBLE OBJECTS: the cup [1, 2, 3, 4]" in shown.stdout
    stats = run("features", "stats", str(path), "--json")
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["episodes"] == 2 and counts["episodes_with_reasoning"] == 1 and counts["steps_with_boxes"] == 1


def test_features_on_a_missing_file_fails():
    out = run("features", "stats", "/nonexistent/features.json")
    assert out.returncode != 0
    assert "No such file" in out.stderr
