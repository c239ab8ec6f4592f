"""Two-process torchrun runs on CPU (gloo): DDP, and FSDP2 SIGKILLed mid-run and resumed, train the
same model; FSDP2 really shards the parameters (DTensors), so a silent fallback to DDP fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ecot.train import checkpoint as ckpt

RUN_TINY = Path(__file__).resolve().parent / "run_tiny.py"
REPO = Path(__file__).resolve().parents[2]
STEPS = 6
SAVE_EVERY = 2


def _cmd(out: Path, strategy: str, steps: int, save_every: int, report: Path | None) -> tuple[list[str], dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(RUN_TINY), str(out), str(steps), "--strategy", strategy, "--tag-dropout", "0", "--save-every", str(save_every)]
    if report is not None:
        cmd += ["--param-report", str(report)]
    return cmd, env


def _torchrun(out: Path, strategy: str, steps: int = STEPS, save_every: int = 0, report: Path | None = None) -> None:
    cmd, env = _cmd(out, strategy, steps, save_every, report)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _torchrun_killed(out: Path, strategy: str, steps: int, save_every: int) -> None:
    """Start the run and SIGKILL torchrun and both workers (their own process group) as soon as the
    first checkpoint is on disk."""
    cmd, env = _cmd(out, strategy, steps, save_every, None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoints" / ckpt.step_dir_name(save_every) / ckpt.STATE_FILE).exists():
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 240 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            import psutil

            # The group this test started holds torchrun; its workers are killed by pid as well, in case the
            # launcher put them in a session of their own (a surviving worker would go on logging and saving).
            workers = psutil.Process(proc.pid).children(recursive=True)
            os.killpg(proc.pid, signal.SIGKILL)
            for worker in workers:
                try:
                    worker.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(workers, timeout=30)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"torchrun ended with {proc.returncode} before it was killed"


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    _torchrun(root / "ddp", "ddp", report=root / "ddp_params")
    # FSDP2 is SIGKILLed after its first checkpoint and resumed: sharded optimizer state goes through the checkpoint.
    _torchrun_killed(root / "fsdp", "fsdp", STEPS, SAVE_EVERY)
    killed = {"logged": len(_rows(root / "fsdp")), "resumed_from": ckpt.list_checkpoints(root / "fsdp")[-1][0]}
    (root / "killed.json").write_text(json.dumps(killed))
    _torchrun(root / "fsdp", "fsdp", save_every=SAVE_EVERY, report=root / "fsdp_params")
    return root


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_run_completes(runs, strategy):
    from ecot.model.vla import VLA

    run = runs / strategy
    rows = _rows(run)
    if strategy == "fsdp":  # the steps logged before the kill, then every step after the checkpoint resumed from
        killed = json.loads((runs / "killed.json").read_text())
        assert 1 <= killed["resumed_from"] < STEPS and killed["logged"] < STEPS
        assert [r["step"] for r in rows[: killed["logged"]]] == list(range(1, killed["logged"] + 1))
        rows = rows[killed["logged"]:]
        assert [r["step"] for r in rows] == list(range(killed["resumed_from"] + 1, STEPS + 1))
    else:
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # rank 0 logs once per step
        assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    state = ckpt.load_state(ckpt.latest_checkpoint(run))
    assert state["world_size"] == 2 and state["step"] == STEPS
    model = VLA.from_pretrained(run / "final", progress=False)
    assert model.num_patches > 0


def test_fsdp_parameters_are_sharded_dtensors(runs):
    """Every parameter of the FSDP2 run is a DTensor sharded over the 2 ranks (the DDP run's are plain)."""
    for rank in (0, 1):
        fsdp = json.loads((runs / "fsdp_params" / f"params_rank{rank}.json").read_text())
        assert fsdp["strategy"] == "fsdp" and fsdp["world_size"] == 2
        params = fsdp["params"]
        assert len(params) > 10
        for name, p in params.items():
            assert p["dtensor"] and p["mesh_size"] == 2 and p["placements"] == [["Shard", 0]], (name, p)
        big = [p for p in params.values() if p["numel"] >= 1024]
        assert big and all(p["local_numel"] < p["numel"] for p in big)
        ddp = json.loads((runs / "ddp_params" / f"params_rank{rank}.json").read_text())
        assert ddp["strategy"] == "ddp" and not any(p["dtensor"] for p in ddp["params"].values())
    # the two ranks hold complementary shards: together they hold each parameter once
    r0 = json.loads((runs / "fsdp_params" / "params_rank0.json").read_text())["params"]
    r1 = json.loads((runs / "fsdp_params" / "params_rank1.json").read_text())["params"]
    assert r0.keys() == r1.keys()
    for name in r0:
        assert r0[name]["local_numel"] + r1[name]["local_numel"] == r0[name]["numel"], name


def test_ddp_and_fsdp_agree(runs):
    """The killed and resumed FSDP2 run ends with the weights and logs the losses of the uninterrupted DDP run."""
    ddp = ckpt.load_model_weights(runs / "ddp" / "final")
    fsdp = ckpt.load_model_weights(runs / "fsdp" / "final")
    assert ddp.keys() == fsdp.keys()
    for name in ddp:
        torch.testing.assert_close(ddp[name], fsdp[name], rtol=1e-4, atol=1e-5, msg=name)
    ddp_loss = {r["step"]: r["train/loss"] for r in _rows(runs / "ddp")}
    fsdp_rows = _rows(runs / "fsdp")
    assert sorted({r["step"] for r in fsdp_rows}) == sorted(ddp_loss) == list(range(1, STEPS + 1))
    for r in fsdp_rows:  # before the kill and after resuming
        assert r["train/loss"] == pytest.approx(ddp_loss[r["step"]], rel=1e-5), r
