"""Safe to repeat, safe to share (issue 15): every case is reproduced with real processes and files.

Locked output directories (a second writer fails at once naming the holder's PID; the lock dies
with its holder), provenance of features (stale / partial refused), explicit resume, validation
before work, one-line errors with the right exit code, disk full (a real tmpfs in a private mount
namespace), workers that die with their parent, ``model init --force``, typed features and configs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ecot.cli import main
from ecot.runlock import DirLock, DirectoryLocked, holder_of, locked_dir

PY = sys.executable
ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa"),
       "PYOPENGL_PLATFORM": os.environ.get("PYOPENGL_PLATFORM", "osmesa")}
TRAIN = ["--model", "tiny-siglip", "--batch-size", "2", "--log-every", "1", "--eval-batches", "1", "--no-progress",
         "--no-tensorboard"]


def ecot(*args: str, timeout: float = 300, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "ecot", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, cwd=cwd)


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "ecot", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or ENV)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def one_error_line(stderr: str) -> str:
    """The ``ecot: error:`` line; asserts there is no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("ecot: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def sim(annotated_sim):
    """3 episodes (32 px) collected and annotated (tests/conftest.py, shared: read only, copy to change)."""
    return annotated_sim


@pytest.fixture
def lock_holder(tmp_path):
    """Hold a directory's lock from another real process; yields (directory, holder Popen)."""
    procs = []

    def hold(directory: Path) -> subprocess.Popen:
        code = ("import sys, time; from ecot.runlock import DirLock; DirLock(sys.argv[1], 'test holder'); "
                "print('held', flush=True); time.sleep(120)")
        proc = subprocess.Popen([PY, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True, env=ENV)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- exclusive output directories


def test_two_collections_into_one_folder_second_fails_at_once(tmp_path):
    out = tmp_path / "ds"
    first = start("sim", "collect", "--episodes", "12", "--out", out, "--image-size", "32", "--seed", "0",
                  "--no-progress")
    try:
        holder = wait_for(lambda: (holder_of(out) or {}).get("pid"), what="the first collection to lock")
        assert holder == first.pid
        t0 = time.monotonic()
        second = ecot("sim", "collect", "--episodes", "12", "--out", out, "--image-size", "32", "--seed", "1",
                      "--no-progress")
        assert first.poll() is None, "the first collection must still be running for this test to mean anything"
        assert second.returncode == 1
        line = one_error_line(second.stderr)
        assert str(out) in line and f"PID {first.pid}" in line and "in use" in line
        assert time.monotonic() - t0 < 30
    finally:
        assert first.wait(timeout=300) == 0, first.stderr.read()
    # The dataset is the first collection's alone: settings, episode list and files agree.
    meta = json.loads((out / "meta" / "ecot_collect.json").read_text())
    assert meta["seed"] == 0
    from ecot.data import open_dataset

    ds = open_dataset(out)
    assert len(ds) == 12 and list((out / "data").rglob("*.parquet"))
    assert all(len(ds.episode(i)) == ds.episode_length(i) > 0 for i in range(12))  # every episode reads back whole
    assert not list(out.rglob("*.tmp"))  # no temp file left behind
    assert holder_of(out) is None  # released at exit


def test_every_writer_refuses_a_locked_directory(sim, tmp_path, lock_holder, capsys):
    root, data, ann = sim
    cases = {
        "collect": ["sim", "collect", "--episodes", "1", "--image-size", "32", "--no-progress", "--out"],
        "annotate": ["annotate", str(data), "--no-progress", "--out"],
        "train": ["train", "--data", str(data), "--features", str(ann), "--max-steps", "1", *TRAIN, "--out"],
        "model init": ["model", "init", "--out"],
    }
    for name, argv in cases.items():
        target = tmp_path / name.replace(" ", "_")
        holder = lock_holder(target)
        capsys.readouterr()
        assert main(argv + [str(target)]) == 1, name
        err = capsys.readouterr().err
        assert f"{target} is in use by another ecot process, PID {holder.pid}" in err, (name, err)
        assert [p.name for p in target.iterdir()] == [".ecot.lock"], name  # nothing was written


def test_lock_dies_with_its_holder_and_is_reentrant(tmp_path, lock_holder):
    target = tmp_path / "run"
    holder = lock_holder(target)
    with pytest.raises(DirectoryLocked, match=f"PID {holder.pid}"):
        DirLock(target)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert holder_of(target) is None  # the kernel released it
    with locked_dir(target, "outer"):
        with locked_dir(target, "inner"):  # the same process may nest (the demo runs stages in-process)
            assert holder_of(target)["pid"] == os.getpid()
        assert holder_of(target)["pid"] == os.getpid()  # still held by the outer block
    assert holder_of(target) is None
    with pytest.raises(RuntimeError):
        with locked_dir(tmp_path / "failed"):
            raise RuntimeError("boom")
    assert not (tmp_path / "failed").exists()  # a failed command leaves no empty directory behind


def test_second_train_into_running_run_fails_and_lock_is_released_by_kill(sim, tmp_path):
    root, data, ann = sim
    run = tmp_path / "run"
    first = start("train", "--data", data, "--features", ann, "--out", run, "--max-steps", "100000", *TRAIN)
    try:
        wait_for(lambda: (holder_of(run) or {}).get("pid") == first.pid, what="the first train to lock")
        second = ecot("train", "--data", data, "--features", ann, "--out", run, "--max-steps", "100000", *TRAIN)
        assert second.returncode == 1 and f"PID {first.pid}" in one_error_line(second.stderr)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert holder_of(run) is None


def test_annotation_shards_lock_only_their_shard(sim, tmp_path, lock_holder, capsys):
    root, data, _ = sim
    out = tmp_path / "shards"
    proc = subprocess.Popen([PY, "-c", "import sys, time; from ecot.runlock import DirLock; "
                             "DirLock(sys.argv[1], 'shard holder', scope='shard-1-of-2'); print('held', flush=True); "
                             "time.sleep(120)", str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert main(["annotate", str(data), "--out", str(out), "--shard", "0/2", "--no-progress"]) == 0
        capsys.readouterr()
        assert main(["annotate", str(data), "--out", str(out), "--shard", "1/2", "--no-progress"]) == 1
        assert f"PID {proc.pid}" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
    assert main(["annotate", str(data), "--out", str(out), "--shard", "1/2", "--no-progress"]) == 0
    assert (out / "embodied_features.json").is_file()


# ---------------------------------------------------------------------- provenance


def test_partial_reasoning_refused_then_accepted_explicitly_and_logged(sim, tmp_path, capsys):
    root, data, ann = sim
    grown = tmp_path / "grown"
    shutil.copytree(data, grown)
    # Annotate 3 episodes, then collect 2 more: 3 of the 4 training episodes have reasoning.
    assert main(["sim", "collect", "--episodes", "5", "--out", str(grown), "--image-size", "32", "--no-progress"]) == 0
    argv = ["train", "--data", str(grown), "--features", str(ann), "--out", str(tmp_path / "run"), "--max-steps", "1", *TRAIN]
    capsys.readouterr()
    assert main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "covers 3 of 4 training episodes" in line and "--allow-partial-reasoning" in line and "3" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written

    assert main(argv + ["--allow-partial-reasoning"]) == 0
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["data/allow_partial_reasoning"] == 1.0
    assert first["data/reasoning_coverage"] == pytest.approx(0.75)


def test_features_without_any_training_episode_are_refused(sim, tmp_path, capsys):
    root, data, _ = sim
    one = tmp_path / "ann1"
    assert main(["annotate", str(data), "--out", str(one), "--limit", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--features", str(one), "--out", str(tmp_path / "r"),
                 "--eval-episodes", "1", "--max-steps", "1", *TRAIN]) == 1
    assert "covers 1 of 2 training episodes" in capsys.readouterr().err


def test_stale_features_refused_with_both_fingerprints(sim, tmp_path, capsys):
    root, data, ann = sim
    other = tmp_path / "reseeded"
    assert main(["sim", "collect", "--episodes", "3", "--out", str(other), "--image-size", "32", "--seed", "5",
                 "--no-progress"]) == 0
    shutil.copy(ann / "embodied_features.json", tmp_path / "embodied_features.json")
    shutil.copy(ann / "provenance.json", tmp_path / "provenance.json")
    recorded = json.loads((ann / "provenance.json").read_text())["fingerprint"]
    from ecot.data import open_dataset
    from ecot.provenance import dataset_provenance

    now = dataset_provenance(open_dataset(other))["fingerprint"]
    assert now != recorded
    capsys.readouterr()
    assert main(["train", "--data", str(other), "--features", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--max-steps", "1", *TRAIN]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "stale features" in line and recorded in line and now in line and "seed" in line


def test_annotation_records_the_fingerprint_of_its_dataset(sim):
    root, data, ann = sim
    from ecot.data import open_dataset
    from ecot.provenance import dataset_provenance

    record = json.loads((ann / "provenance.json").read_text())
    assert record["fingerprint"] == dataset_provenance(open_dataset(data))["fingerprint"]
    assert [e[1] for e in record["episodes"]] == ["0", "1", "2"]


# ---------------------------------------------------------------------- explicit resume


def _metric_steps(run: Path, prefix: str) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if any(k.startswith(prefix) for k in r)]


def test_resume_rules(sim, tmp_path, capsys):
    root, data, ann = sim
    run = tmp_path / "run"
    base = ["train", "--data", str(data), "--features", str(ann), "--out", str(run), *TRAIN]
    assert main(base + ["--max-steps", "2", "--save-every", "1", "--keep-last", "0"]) == 0
    options = json.loads((run / "run_options.json").read_text())
    assert options["lr"] == 1e-3 and options["recipe"] == "ecot"
    before = (run / "metrics.jsonl").read_text()

    # A finished run re-run: a no-op that says so (no second eval line).
    capsys.readouterr()
    assert main(base + ["--max-steps", "2", "--save-every", "1", "--keep-last", "0"]) == 0
    assert "already finished (step 2 of 2): nothing to do" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == before

    # Changed options are refused, listing the differences; the run is untouched.
    assert main(base + ["--max-steps", "2", "--lr", "0.01", "--recipe", "no-reasoning"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--lr: 0.001 in the run, 0.01 now" in line and "--recipe: 'ecot' in the run, 'no-reasoning' now" in line
    assert main(base + ["--max-steps", "1"]) == 2
    assert "--max-steps may only grow" in capsys.readouterr().err
    assert main(base + ["--max-steps", "2", "--force-new"]) == 2
    assert "new or empty directory" in capsys.readouterr().err
    assert json.loads((run / "run_options.json").read_text()) == options
    assert (run / "metrics.jsonl").read_text() == before

    # Killed after logging step 2 but before its checkpoint: resume from step 1, no step twice.
    shutil.rmtree(run / "checkpoints" / "step_000002")
    shutil.rmtree(run / "final")
    assert main(base + ["--max-steps", "2", "--save-every", "1", "--keep-last", "0"]) == 0
    assert "resumed from step 1 of 2" in capsys.readouterr().err
    assert _metric_steps(run, "train/") == [1, 2] and _metric_steps(run, "eval/") == [2]

    # --max-steps may grow.
    assert main(base + ["--max-steps", "3", "--save-every", "1", "--keep-last", "0"]) == 0
    assert "resumed from step 2 of 3" in capsys.readouterr().err
    assert _metric_steps(run, "train/") == [1, 2, 3] and _metric_steps(run, "eval/") == [2, 3]
    assert json.loads((run / "run_options.json").read_text())["max_steps"] == 3


def test_force_new_and_foreign_directories(sim, tmp_path, capsys):
    root, data, ann = sim
    assert main(["train", "--data", str(data), "--features", str(ann), "--out", str(data), "--max-steps", "1", *TRAIN]) == 2
    assert "is not an ecot training run" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(data), "--features", str(ann), "--out", str(empty), "--max-steps", "1",
                 "--force-new", *TRAIN]) == 0
    assert (empty / "final" / "config.json").is_file()


def test_truncate_metrics_keeps_steps_up_to_the_checkpoint(tmp_path):
    from ecot.train.runstate import truncate_metrics

    rows = [{"step": s, "train/loss": 1.0} for s in (1, 2, 3, 4)] + [{"step": 2, "eval/loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "tr')
    assert truncate_metrics(tmp_path, 2) == 3
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 2]
    truncate_metrics(tmp_path, 0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


# ---------------------------------------------------------------------- validation before work, usage errors


def test_bad_options_never_reach_disk(sim, tmp_path, capsys):
    root, data, _ = sim
    meta = (data / "meta" / "ecot_collect.json").read_text()
    cases = [
        (["sim", "collect", "--episodes", "3", "--image-size", "0", "--out", str(data)], "--image-size must be"),
        (["sim", "collect", "--episodes", "2", "--image-size", "8", "--out", str(tmp_path / "a")], "at least 16"),
        (["sim", "collect", "--episodes", "0", "--out", str(tmp_path / "b")], "--episodes must be a positive integer"),
        (["sim", "collect", "--episodes", "2", "--workers", "0", "--out", str(tmp_path / "c")], "--workers must be"),
        (["annotate", str(data), "--out", str(tmp_path / "d"), "--limit", "-1"], "--limit must be a positive"),
        (["annotate", str(data), "--out", str(tmp_path / "e"), "--limit", "0"], "--limit must be a positive"),
        (["annotate", str(data), "--out", str(tmp_path / "f"), "--workers", "0"], "--workers must be"),
        (["train", "--data", str(data), "--out", str(tmp_path / "g"), "--max-steps", "0"], "--max-steps must be"),
        (["train", "--data", str(data), "--out", str(tmp_path / "h"), "--batch-size", "-2"], "--batch-size must be"),
        (["train", "--data", str(data), "--out", str(tmp_path / "i"), "--lr", "0"], "--lr must be"),
        (["train", "--data", str(data), "--out", str(tmp_path / "j"), "--model", "nope"], "neither a preset"),
        (["train", "--data", str(data), "--out", str(tmp_path / "k"), "--model", str(data)], "holds no config.json"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert expected in one_error_line(capsys.readouterr().err), argv
    assert (data / "meta" / "ecot_collect.json").read_text() == meta  # the bad image size was not recorded
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output directory was created
    # The dataset still resumes normally.
    assert main(["sim", "collect", "--episodes", "3", "--image-size", "32", "--out", str(data), "--no-progress"]) == 0


def test_one_error_line_exit_codes_and_debug(tmp_path):
    bad = ecot("sim", "collect", "--episodes", "0", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "episodes must be a positive integer" in one_error_line(bad.stderr)
    debug = ecot("--debug", "sim", "collect", "--episodes", "0", "--out", tmp_path / "x")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UsageError" in debug.stderr
    late = ecot("sim", "collect", "--episodes", "0", "--out", tmp_path / "x", "--debug")
    assert "Traceback" in late.stderr
    env_debug = ecot("sim", "collect", "--episodes", "0", "--out", tmp_path / "x", env={**ENV, "ECOT_DEBUG": "1"})
    assert "Traceback" in env_debug.stderr
    missing = ecot("annotate", tmp_path / "missing", "--out", tmp_path / "o")
    assert missing.returncode == 1 and str(tmp_path / "missing") in one_error_line(missing.stderr)
    usage = ecot("sim", "collect", "--episodes", "two", "--out", tmp_path / "x")
    assert usage.returncode == 2 and "invalid int value" in usage.stderr


def test_unsupported_device_is_one_line(sim, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is supported")
    root, data, ann = sim
    for argv in (["train", "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cuda"],
                 ["annotate", str(data), "--out", str(tmp_path / "a"), "--device", "cuda"],
                 ["model", "predict", str(tmp_path), "--image", "x.png", "--instruction", "go", "--device", "cuda"]):
        capsys.readouterr()
        assert main(argv) == 2
        assert "--device cuda: this torch build" in one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- model: init, config, images, instructions


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    assert main(["model", "init", "--out", str(out)]) == 0
    return out


def test_model_init_refuses_to_overwrite_without_force(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, out)
    before = (out / "model-00001-of-00001.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["model", "init", "--out", str(out), "--seed", "3"]) == 2
    assert "refusing to overwrite it without --force" in one_error_line(capsys.readouterr().err)
    assert (out / "model-00001-of-00001.safetensors").read_bytes() == before
    assert main(["model", "init", "--out", str(out), "--seed", "3", "--force"]) == 0
    assert (out / "model-00001-of-00001.safetensors").read_bytes() != before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging dir, no lock file


def test_malformed_config_field_types_are_one_line(tiny_checkpoint, tmp_path, capsys):
    for field, value, expected in [("image_sizes", "224", "field 'image_sizes' must be a list"),
                                   ("pad_token_id", "1024", "field 'pad_token_id' must be an integer"),
                                   ("use_fused_vision_backbone", "no", "must be true or false"),
                                   ("text_config", {"hidden_size": "64"}, "text_config.hidden_size")]:
        ck = tmp_path / field
        shutil.copytree(tiny_checkpoint, ck)
        config = json.loads((ck / "config.json").read_text())
        config[field] = {**config[field], **value} if isinstance(value, dict) else value
        (ck / "config.json").write_text(json.dumps(config))
        capsys.readouterr()
        assert main(["model", "info", str(ck)]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert expected in line and str(ck / "config.json") in line


def test_bad_images_and_long_instructions_are_refused(tiny_checkpoint, tmp_path, capsys):
    from PIL import Image

    from ecot.model import VLA

    vla = VLA.from_pretrained(tiny_checkpoint, progress=False)
    for shape in [(0, 0, 3), (1, 1, 3), (15, 64, 3)]:
        with pytest.raises(ValueError, match=r"expected at least 16x16"):
            vla.predict_action(np.zeros(shape, np.uint8), "pick up the block", max_new_tokens=2)
    with pytest.raises(ValueError, match="the instruction is too long.*expected an instruction of at most"):
        vla.predict_action(np.zeros((64, 64, 3), np.uint8), "pick up the block " * 2000, max_new_tokens=2)
    vla.processor.image_transform(np.zeros((16, 16, 3), np.uint8))  # the minimum size is accepted

    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    capsys.readouterr()
    assert main(["model", "predict", str(tiny_checkpoint), "--image", str(tmp_path / "dot.png"), "--instruction", "go"]) == 2
    assert "is 1x1 pixels; expected at least 16x16" in one_error_line(capsys.readouterr().err)
    (tmp_path / "junk.png").write_bytes(b"not a png")
    assert main(["model", "predict", str(tiny_checkpoint), "--image", str(tmp_path / "junk.png"), "--instruction", "go"]) == 2
    assert "not a readable image" in capsys.readouterr().err


# ---------------------------------------------------------------------- features validated on read


def test_malformed_features_fields_name_episode_and_step(sim, tmp_path):
    from ecot.data.features import FeaturesFormatError, ReasoningIndex

    root, data, ann = sim
    original = json.loads((ann / "embodied_features.json").read_text())
    file_path = next(iter(original))
    episode = next(iter(original[file_path]))
    cases = [
        (lambda e: e["reasoning"]["1"].__setitem__("task", ["a", "list"]), "reasoning field 'task' must be a string"),
        (lambda e: e["reasoning"]["2"].__setitem__("plan", 123), "reasoning field 'plan' must be a string"),
        (lambda e: e["features"]["gripper_position"].__setitem__(1, "12,3"), "must be an [x, y] pair"),
        (lambda e: e["features"]["bboxes"].__setitem__(2, [[0.9, 7, [1, 2, 3, 4]]]), "bboxes item must be"),
        (lambda e: e["features"]["move_primitive"].__setitem__(1, 5), "move_primitive must be a string"),
    ]
    for mutate, expected in cases:
        broken = json.loads(json.dumps(original))
        mutate(broken[file_path][episode])
        path = tmp_path / "features.json"
        path.write_text(json.dumps(broken))
        with pytest.raises(FeaturesFormatError) as info:
            ReasoningIndex.from_file(path)
        message = str(info.value)
        assert expected in message and f"episode {file_path!r}/{episode!r}, step" in message, message


# ---------------------------------------------------------------------- disk full (a real tmpfs)


def _tmpfs_available() -> bool:
    if not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_on_full_disk(mount: Path, size: str, argv: list[str]) -> tuple[int, str, list[str]]:
    """Run ``python -m ecot ARGV`` with a ``size`` tmpfs at ``mount`` (private mount namespace).
    Returns the exit code, stderr and what was left on the tmpfs."""
    mount.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(f"'{a}'" for a in [PY, "-m", "ecot", *map(str, argv)])
    script = (f"mount -t tmpfs -o size={size} tmpfs '{mount}' || exit 99; {cmd}; rc=$?; "
              f"echo '--listing--' >&2; find '{mount}' -mindepth 1 | sort >&2; exit $rc")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode != 99, proc.stderr
    err, _, listing = proc.stderr.partition("--listing--\n")
    return proc.returncode, err, [line[len(str(mount)) + 1:] for line in listing.splitlines()]


needs_tmpfs = pytest.mark.skipif(not _tmpfs_available(), reason="cannot mount a tmpfs in a user namespace here")


@needs_tmpfs
def test_disk_full_in_model_init_leaves_nothing(tmp_path):
    rc, err, left = run_on_full_disk(tmp_path / "mnt", "2m", ["model", "init", "--out", tmp_path / "mnt" / "ck"])
    assert rc == 1 and "disk full: no space left on device" in one_error_line(err), err
    assert left == [], left  # neither .saving/ nor a half checkpoint nor an empty directory


@needs_tmpfs
def test_disk_full_during_a_training_checkpoint(sim, tmp_path):
    root, data, ann = sim
    mount = tmp_path / "mnt"
    # 24 MB holds the 16 MB of weights but not the optimizer state: torch.save fails mid-file.
    rc, err, left = run_on_full_disk(mount, "24m", ["train", "--data", data, "--features", ann, "--out", mount / "run",
                                                    "--max-steps", "1", *TRAIN])
    assert rc == 1 and "disk full" in one_error_line(err), err
    assert not [p for p in left if ".tmp-" in p or "step_" in p or p.startswith("run/final")], left
    assert "run/run_options.json" in left  # the run itself is intact and resumable


# ---------------------------------------------------------------------- workers die with their parent


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for c in map(int, children):
                if c not in out:
                    out.add(c)
                    todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_parent_check_orphans(proc: subprocess.Popen, n_workers: int) -> None:
    workers = wait_for(lambda: (lambda d: d if len(d) >= n_workers else None)(_descendants(proc.pid)),
                       timeout=120, what=f"{n_workers} worker processes")
    time.sleep(1.0)
    workers |= _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(5.0)
    orphans = [p for p in workers if _alive(p)]
    for p in orphans:
        os.kill(p, signal.SIGKILL)
    assert not orphans, f"worker processes outlived their killed parent: {orphans}"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_kill9_of_annotate_leaves_no_worker_running(sim, tmp_path):
    root, data, _ = sim
    server = socket.socket()  # an LLM server that accepts and never answers: the workers stay busy
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        port = server.getsockname()[1]
        proc = start("annotate", data, "--out", tmp_path / "ann", "--workers", "2", "--reasoning", "openai",
                     "--llm-base-url", f"http://127.0.0.1:{port}/v1", "--no-progress",
                     env={**ENV, "OPENAI_API_KEY": "test"})
        _kill_parent_check_orphans(proc, 2)
    finally:
        server.close()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_kill9_of_collect_leaves_no_worker_running(tmp_path):
    proc = start("sim", "collect", "--episodes", "40", "--workers", "2", "--image-size", "32", "--out", tmp_path / "ds",
                 "--no-progress")
    _kill_parent_check_orphans(proc, 2)


def test_fingerprint_of_an_rlds_dataset_uses_its_episode_keys(tmp_path):
    from ecot.data import open_dataset
    from ecot.data.episode import Episode
    from ecot.data.rlds import write_rlds
    from ecot.provenance import dataset_provenance

    rng = np.random.default_rng(0)
    eps = [Episode(images=rng.integers(0, 256, (4 + i, 16, 16, 3), dtype=np.uint8),
                   states=np.zeros((4 + i, 7), np.float32), actions=np.zeros((4 + i, 7), np.float32),
                   instruction="put the carrot on the plate",
                   metadata={"file_path": f"/raw/traj{i}", "episode_id": str(10 + i)}) for i in range(2)]
    write_rlds(tmp_path, eps, name="bridge_orig", version="1.0.0", num_shards=1, image_format="png")
    record = dataset_provenance(open_dataset(tmp_path / "bridge_orig"))
    assert sorted(record["episodes"]) == [["/raw/traj0", "10", 4], ["/raw/traj1", "11", 5]]


def test_annotation_resume_refuses_a_recollected_dataset(tmp_path, capsys):
    data = tmp_path / "data"
    collect = ["sim", "collect", "--episodes", "2", "--image-size", "32", "--no-progress", "--out", str(data)]
    assert main(collect) == 0
    assert main(["annotate", str(data), "--out", str(tmp_path / "ann"), "--limit", "1", "--no-progress"]) == 0
    shutil.rmtree(data)
    assert main(collect + ["--seed", "9"]) == 0  # same place, other demonstrations
    capsys.readouterr()
    assert main(["annotate", str(data), "--out", str(tmp_path / "ann"), "--no-progress"]) == 1
    assert "seed: 0 then, 9 now" in one_error_line(capsys.readouterr().err)


def test_demo_refuses_an_unknown_model_before_collecting(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "ecot", "demo", "--out", str(out), "--model", "nope"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "nope" in done.stderr and "Traceback" not in done.stderr and done.stderr.count("ecot: error:") == 1
    assert not out.exists()  # nothing collected, no demo_config.json written


@pytest.mark.parametrize("argv", [
    ["eval", "--policy", "expert", "--env", "sim", "--episodes", "1", "--max-steps", "2", "--out", "{out}"],
    ["data", "convert", "{src}", "{out}", "--to", "lerobot-v3", "--no-progress"],
])
def test_eval_and_convert_refuse_a_locked_output_directory(tmp_path, argv):
    """A directory another live process is writing (here: holding its lock) is refused at once, naming the holder."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from ecot.runlock import locked_dir\n"
                               f"with locked_dir({str(out)!r}, 'holder'):\n    print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = [a.format(out=out, src=tmp_path / "missing") for a in argv]
        done = subprocess.run([sys.executable, "-m", "ecot", *args], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")})
        assert done.returncode == 1, done.stderr
        assert f"PID {holder.pid}" in one_error_line(done.stderr)
    finally:
        holder.kill()
        holder.wait()
