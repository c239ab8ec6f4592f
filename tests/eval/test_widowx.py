"""The WidowX runner against a WidowXClient-compatible robot on the real MuJoCo tabletop:
control loop, safety clipping, operator stop, and a recording that ecot.data.open_dataset opens."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from ecot.data import open_dataset
from ecot.eval.widowx import (KeyboardStop, SimWidowXClient, WidowXRunConfig, observation_image, run_widowx,
                              safety_clip)
from ecot.reasoning import Reasoning

SIM_LOW, SIM_HIGH = (-0.28, -0.33, 0.008), (0.28, 0.33, 0.34)


class ExpertOverTheWire:
    """A policy with the PolicyClient interface whose actions come from the sim's scripted expert
    (what a server hosting a perfect policy would answer), with a reasoning text."""

    def __init__(self, robot: SimWidowXClient):
        self.robot = robot
        self.images: list[np.ndarray] = []

    def reset(self) -> None:
        from ecot.sim.expert import ScriptedExpert

        self.expert = ScriptedExpert(self.robot.env, np.random.default_rng(0))

    def infer(self, image, instruction, unnorm_key=None) -> dict:
        self.images.append(image)
        action = self.expert.act()
        text = Reasoning(task=instruction, subtask="grasp", move="move down").to_text()
        return {"actions": np.asarray(action)[None], "text": text, "server_timing": {"infer_ms": 1.0}}


def test_fake_robot_episode_is_recorded_and_opens(tmp_path):
    robot = SimWidowXClient(seed=3, task="pick_place", not_ready_polls=2)
    policy = ExpertOverTheWire(robot)
    slept = []
    config = WidowXRunConfig(instruction="put the block in the bowl", out=str(tmp_path / "run"), episodes=1,
                             max_steps=45, image_size=64, workspace_low=SIM_LOW, workspace_high=SIM_HIGH)
    results = run_widowx(robot, policy, config, judge=lambda i: robot.success(), sleep=slept.append)
    assert results["env"] == "widowx" and results["episodes"] == 1 and results["success_rate"] == 1.0
    assert robot.calls[:2] == ["init", "reset"] and robot.calls.count("step_action") == 45
    # The policy saw HxWx3 uint8 images reconstructed from the robot's flat CHW [0, 1] floats.
    assert policy.images[0].shape == (64, 64, 3) and policy.images[0].dtype == np.uint8
    assert all(0 <= s <= 0.2 for s in slept)  # the loop keeps the 5 Hz period (no real sleeping in the test)
    ds = open_dataset(tmp_path / "run" / "recording")
    assert len(ds) == 1 and ds.fps == 5
    ep = ds[0]
    assert len(ep) == 45 and ep.images.shape == (45, 64, 64, 3) and ep.instruction == "put the block in the bowl"
    assert ep.metadata["success"] is True and Reasoning.parse(ep.metadata["reasoning"][0]).move == "move down"
    np.testing.assert_array_equal(ep.images[0], policy.images[0])
    record = json.loads((tmp_path / "run" / "episodes.jsonl").read_text())
    assert record["steps"] == 45 and not any(s["clipped"] for s in record["per_step"])


def test_safety_clipping_keeps_the_gripper_in_the_workspace(tmp_path):
    robot = SimWidowXClient(seed=3, task="pick_place")
    policy = ExpertOverTheWire(robot)
    floor = 0.06  # the expert wants to grasp at ~2 cm: the workspace forbids it
    config = WidowXRunConfig(instruction="put the block in the bowl", out=str(tmp_path / "run"), episodes=1,
                             max_steps=30, image_size=48, workspace_low=(SIM_LOW[0], SIM_LOW[1], floor),
                             workspace_high=SIM_HIGH)
    results = run_widowx(robot, policy, config, judge=lambda i: robot.success(), sleep=lambda s: None)
    assert results["success_rate"] == 0.0
    ep = open_dataset(tmp_path / "run" / "recording")[0]
    assert ep.states[:, 2].min() > floor - 0.01
    record = json.loads((tmp_path / "run" / "episodes.jsonl").read_text())
    assert any(s["clipped"] for s in record["per_step"])
    raw = np.asarray(ep.metadata["policy_actions"])
    assert raw.shape == (30, 7) and not np.allclose(raw, ep.actions)


def test_safety_clip_and_image_conversion():
    config = WidowXRunConfig(instruction="x", workspace_low=(0, 0, 0), workspace_high=(1, 1, 1))
    state = np.array([0.5, 0.99, 0.5, 0, 0, 0, 1.0])
    a = safety_clip([0.2, 0.2, -0.01, 1.0, 0, 0, 3.0], state, config)
    np.testing.assert_allclose(a, [0.05, 0.01, -0.01, 0.25, 0, 0, 1.0], atol=1e-6)
    held = safety_clip([np.nan] * 7, state, config)
    np.testing.assert_allclose(held, [0, 0, 0, 0, 0, 0, 1.0])
    with pytest.raises(ValueError, match="7-D"):
        safety_clip([0.0] * 5, state, config)
    img = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    flat = (img.transpose(2, 0, 1).reshape(-1) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(observation_image({"image": flat}, 2), img)
    with pytest.raises(ValueError, match="workspace_low"):
        WidowXRunConfig(instruction="x", workspace_low=(1, 0, 0), workspace_high=(0, 1, 1))


def test_operator_stop_ends_the_episode(tmp_path, monkeypatch):
    class Typed(io.StringIO):  # an operator who presses Enter three times, then types q
        def isatty(self):
            return True

    import ecot.eval.widowx as widowx

    monkeypatch.setattr(widowx.select, "select", lambda r, w, x, t=None: (r, [], []))  # a StringIO has no fd
    robot = SimWidowXClient(seed=1, task="push")
    policy = ExpertOverTheWire(robot)
    config = WidowXRunConfig(instruction="push it", out=str(tmp_path / "run"), max_steps=20, image_size=32,
                             workspace_low=SIM_LOW, workspace_high=SIM_HIGH)
    run_widowx(robot, policy, config, judge=lambda i: False, stop=KeyboardStop(Typed("\n\n\nq\n")),
               sleep=lambda s: None)
    assert robot.calls.count("step_action") == 3
    ep = open_dataset(tmp_path / "run" / "recording")[0]
    assert len(ep) == 3 and ep.metadata["stopped_by_operator"] is True


def test_robot_side_runners_import_without_torch_or_mujoco():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None; sys.modules['mujoco'] = None\n"
            "import ecot.eval.widowx, ecot.eval.libero, ecot.data.lerobot, ecot.eval.results\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
