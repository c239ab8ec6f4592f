"""Robot-side runner for a WidowX on the bridge_data_robot stack, driven by a policy behind ``ecot serve``.

Runs on the robot computer, next to ``widowx_envs`` (which provides
``widowx_envs.widowx_env_service.WidowXClient``, talking to the ``WidowXActionServer`` over ZMQ).
It needs numpy, pyarrow/pillow (for the recording) and the torch-free client -- no torch, no MuJoCo::

    python -m ecot.eval.widowx --server ws://gpu-box:8000 --instruction "put the carrot on the plate" \\
        --episodes 5 --out runs/widowx

Per control step (``--hz``, 5 by default like Bridge): read the observation, send the image to the
server, receive the Bridge-convention action (end-effector delta xyz + rpy, absolute gripper),
clip it for safety (per-step delta limits, and the commanded position kept inside the workspace
box), send it with ``step_action``, and keep the control period. Type ``q`` + Enter (or press
Ctrl-C) to stop an episode. Each episode is recorded (images, states, executed actions, the raw
policy actions and the reasoning text of every step) into a LeRobot-layout dataset that
``ecot.data.open_dataset`` opens; ``episodes.jsonl`` / ``results.json`` use the layout of
``ecot eval``, with success judged by the operator.

:class:`SimWidowXClient` implements the same client interface on the built-in MuJoCo tabletop, for
dry runs of the whole loop without hardware (and for the tests).
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ecot.eval.results import EpisodeLog, aggregate, write_atomic, RESULTS_NAME

# Status codes of widowx_envs.widowx_env_service.
NO_CONNECTION, SUCCESS, EXECUTION_FAILURE, NOT_INITIALIZED = 0, 1, 2, 3


class WidowXClientLike(Protocol):
    """The part of ``widowx_envs.widowx_env_service.WidowXClient`` the runner uses."""

    def init(self, env_params: dict, image_size: int = 256) -> int: ...
    def reset(self) -> int: ...
    def get_observation(self) -> dict | None: ...
    def step_action(self, action: np.ndarray, blocking: bool = False) -> int: ...
    def move(self, pose: np.ndarray, duration: float = 1.0, blocking: bool = False) -> int: ...
    def move_gripper(self, state: float) -> int: ...


@dataclass
class WidowXRunConfig:
    instruction: str
    out: str = "runs/widowx"
    episodes: int = 1
    max_steps: int = 60
    hz: float = 5.0  # control rate
    image_size: int = 256  # size of the observation image the robot server sends
    unnorm_key: str | None = "bridge_orig"
    # Safety: per-step limits and the box the commanded end-effector position must stay in (m, robot base frame).
    max_delta_pos: float = 0.05
    max_delta_rot: float = 0.25
    workspace_low: tuple[float, float, float] = (0.1, -0.25, 0.02)
    workspace_high: tuple[float, float, float] = (0.45, 0.25, 0.30)
    blocking: bool = False
    env_params: dict = field(default_factory=dict)  # passed to WidowXClient.init (e.g. camera topics, start state)
    observation_timeout: float = 30.0  # seconds to wait for the first observation after a reset

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError("an instruction is required")
        if self.episodes < 1 or self.max_steps < 1:
            raise ValueError("episodes and max_steps must be at least 1")
        if self.hz <= 0:
            raise ValueError(f"hz must be positive, got {self.hz}")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"workspace_low {self.workspace_low} must be below workspace_high {self.workspace_high}")


def observation_image(obs: dict, image_size: int) -> np.ndarray:
    """HxWx3 uint8 from a bridge observation: ``image`` is flat CHW floats in [0, 1] (or already HWC uint8)."""
    image = np.asarray(obs["image"])
    if image.ndim == 1:
        image = image.reshape(3, image_size, image_size).transpose(1, 2, 0)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"unexpected observation image shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def safety_clip(action: np.ndarray, state: np.ndarray, config: WidowXRunConfig) -> np.ndarray:
    """The action made safe: finite, deltas within the per-step limits, the target position inside the workspace."""
    a = np.asarray(action, dtype=np.float64).reshape(-1).copy()
    if a.shape[0] != 7:
        raise ValueError(f"expected a 7-D Bridge action (xyz, rpy, gripper), got {a.shape[0]} numbers")
    if not np.all(np.isfinite(a)):
        a = np.zeros(7)
        a[6] = float(state[-1]) if len(state) else 1.0
    a[:3] = np.clip(a[:3], -config.max_delta_pos, config.max_delta_pos)
    a[3:6] = np.clip(a[3:6], -config.max_delta_rot, config.max_delta_rot)
    pos = np.asarray(state[:3], dtype=np.float64)
    target = np.clip(pos + a[:3], config.workspace_low, config.workspace_high)
    a[:3] = target - pos
    a[6] = float(np.clip(a[6], 0.0, 1.0))
    return a.astype(np.float32)


class KeyboardStop:
    """``q`` + Enter on an interactive stdin stops the episode (checked without blocking)."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdin
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

    def pressed(self) -> bool:
        if not self.enabled:
            return False
        ready, _, _ = select.select([self.stream], [], [], 0)
        return bool(ready) and self.stream.readline().strip().lower() in ("q", "quit", "stop")


def run_widowx(robot: WidowXClientLike, policy: Any, config: WidowXRunConfig,
               judge: Callable[[int], bool] | None = None, stop: KeyboardStop | None = None,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Run ``config.episodes`` episodes; ``policy`` has ``infer(image, instruction, unnorm_key=) -> dict`` and ``reset()``
    (an ``ecot.serve.client.PolicyClient``). ``judge(index)`` says whether an episode succeeded (default: ask)."""
    from ecot.data.episode import Episode
    from ecot.data.lerobot import LeRobotWriter
    from ecot.reasoning import Reasoning

    out = Path(config.out)
    stop = stop or KeyboardStop()
    judge = judge or _ask_operator
    status = robot.init(config.env_params, image_size=config.image_size)
    if status not in (None, SUCCESS):
        raise RuntimeError(f"WidowXClient.init failed with status {status} (0 no connection, 2 execution failure, 3 not initialized)")
    log = EpisodeLog(out)
    writer = LeRobotWriter(out / "recording", fps=int(round(config.hz)), robot_type="widowx", dataset_name="widowx_ecot")
    period = 1.0 / config.hz
    try:
        for _ in range(config.episodes):
            index = len(writer)  # the recording's episode index (an episode stopped before its first step is not kept)
            robot.reset()
            policy.reset()
            obs = _wait_for_observation(robot, config.observation_timeout, sleep)
            images, states, actions, raw, texts, latencies, per_step = [], [], [], [], [], [], []
            stopped = False
            for t in range(config.max_steps):
                tick = time.perf_counter()
                if stop.pressed():
                    stopped = True
                    break
                image = observation_image(obs, config.image_size)
                state = np.asarray(obs["state"], dtype=np.float32).reshape(-1)
                t0 = time.perf_counter()
                reply = policy.infer(image, config.instruction, unnorm_key=config.unnorm_key)
                latencies.append(round((time.perf_counter() - t0) * 1e3, 3))
                policy_action = np.asarray(reply.get("action", np.asarray(reply["actions"])[0]), dtype=np.float32).reshape(-1)
                action = safety_clip(policy_action, state, config)
                robot.step_action(action, blocking=config.blocking)
                text = str(reply.get("text") or "")
                r = Reasoning.parse(text) if text else None
                images.append(image)
                states.append(state)
                actions.append(action)
                raw.append(policy_action)
                texts.append(text)
                per_step.append({"t": t, "action": [round(float(v), 6) for v in action],
                                 "policy_action": [round(float(v), 6) for v in policy_action],
                                 "clipped": bool(np.any(np.abs(action - policy_action) > 1e-6)),
                                 "latency_ms": latencies[-1],
                                 "reasoning": None if r is None else {"subtask": r.subtask, "move": r.move, "plan": r.plan},
                                 "metrics": None})
                sleep(max(0.0, period - (time.perf_counter() - tick)))
                nxt = robot.get_observation()
                if nxt is not None:
                    obs = nxt
            if not images:
                continue
            success = bool(judge(index))
            episode = Episode(images=np.stack(images), states=np.stack(states), actions=np.stack(actions),
                              instruction=config.instruction,
                              metadata={"file_path": "widowx", "episode_id": str(index), "success": success,
                                        "stopped_by_operator": stopped, "policy_actions": np.stack(raw).tolist(),
                                        "reasoning": texts, "control_hz": config.hz})
            writer.add_episode(episode)
            writer.flush()
            log.append({"index": index, "seed": None, "task": "widowx", "split": None, "instruction": config.instruction,
                        "task_spec": None, "success": success, "steps": len(images), "latency_ms": latencies,
                        "faithfulness": None, "per_step": per_step, "gif": None})
    finally:
        writer.close()
    results = aggregate(log.ordered(), policy=str(getattr(policy, "uri", type(policy).__name__)), env="widowx",
                        split=None, faithfulness=None)
    write_atomic(out / RESULTS_NAME, json.dumps(results, indent=2))
    return results


def _wait_for_observation(robot: WidowXClientLike, timeout: float, sleep: Callable[[float], None]) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        obs = robot.get_observation()
        if obs is not None:
            return obs
        if time.monotonic() > deadline:
            raise TimeoutError(f"the robot sent no observation within {timeout} s of the reset")
        sleep(0.1)


def _ask_operator(index: int) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"episode {index}: success? [y/N] ").strip().lower()
    return answer in ("y", "yes")


class SimWidowXClient:
    """The ``WidowXClient`` interface on the built-in MuJoCo tabletop (a dry run without hardware).

    Observations follow bridge_data_robot: ``image`` flat CHW float32 in [0, 1] at ``image_size``,
    ``full_image`` HxWx3 uint8, ``state`` the 7-D end-effector state. Actions are the sim's
    (Bridge convention, world frame). Records every call in ``calls``.
    """

    def __init__(self, seed: int = 0, task: str = "pick_place", split: str = "seen", not_ready_polls: int = 1):
        self.seed, self.task, self.split = seed, task, split
        self.not_ready_polls = not_ready_polls
        self.env = None
        self.calls: list[str] = []
        self._pending = 0
        self._obs: dict | None = None
        self._episode = 0

    def init(self, env_params: dict, image_size: int = 256) -> int:
        from ecot.sim.env import SimConfig, TabletopEnv

        self.calls.append("init")
        self.image_size = image_size
        self.env = TabletopEnv(SimConfig(image_size=image_size, max_steps=10_000))
        return SUCCESS

    def reset(self) -> int:
        self.calls.append("reset")
        if self.env is None:
            return NOT_INITIALIZED
        self._obs, _ = self.env.reset(seed=self.seed + self._episode, task=self.task, split=self.split)
        self._episode += 1
        self._pending = self.not_ready_polls  # like the real robot: no observation for a moment after a reset
        return SUCCESS

    def get_observation(self) -> dict | None:
        self.calls.append("get_observation")
        if self._obs is None or self._pending > 0:
            self._pending -= 1
            return None
        img = self._obs["image"]
        return {"image": (img.transpose(2, 0, 1).reshape(-1) / 255.0).astype(np.float32), "full_image": img,
                "state": self._obs["state"].copy()}

    def step_action(self, action: np.ndarray, blocking: bool = False) -> int:
        self.calls.append("step_action")
        self._obs, _, _, _, _ = self.env.step(np.asarray(action, dtype=np.float64))
        return SUCCESS

    def move(self, pose: np.ndarray, duration: float = 1.0, blocking: bool = False) -> int:
        self.calls.append("move")
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        state = self.env.state()
        delta = np.zeros(7)
        delta[:3] = pose[:3] - state[:3]
        delta[6] = 1.0 if self.env.gripper_open else 0.0
        self._obs, _, _, _, _ = self.env.step(delta)
        return SUCCESS

    def move_gripper(self, state: float) -> int:
        self.calls.append("move_gripper")
        self._obs, _, _, _, _ = self.env.step(np.array([0, 0, 0, 0, 0, 0, float(state)]))
        return SUCCESS

    def stop(self) -> int:
        self.calls.append("stop")
        return SUCCESS

    def success(self) -> bool:
        return bool(self.env.success())

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ecot.eval.widowx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="ws://HOST:PORT of `ecot serve`")
    p.add_argument("--api-key", default=None)
    p.add_argument("--instruction", required=True)
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--hz", type=float, default=5.0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--unnorm-key", default="bridge_orig")
    p.add_argument("--robot-host", default="localhost")
    p.add_argument("--robot-port", type=int, default=5556)
    p.add_argument("--sim", action="store_true", help="dry run on the built-in MuJoCo tabletop instead of the robot")
    p.add_argument("--out", default="runs/widowx")
    args = p.parse_args(argv)
    from ecot.eval.policies import parse_ws
    from ecot.serve.client import PolicyClient

    host, port = parse_ws(args.server)
    config = WidowXRunConfig(instruction=args.instruction, out=args.out, episodes=args.episodes,
                             max_steps=args.max_steps, hz=args.hz, image_size=args.image_size,
                             unnorm_key=args.unnorm_key or None)
    if args.sim:
        robot = SimWidowXClient()
        config.workspace_low, config.workspace_high = (-0.28, -0.33, 0.008), (0.28, 0.33, 0.34)
        judge = lambda _i: robot.success()  # noqa: E731
    else:
        from widowx_envs.widowx_env_service import WidowXClient  # from bridge_data_robot, on the robot computer

        robot = WidowXClient(host=args.robot_host, port=args.robot_port)
        judge = None
    policy = PolicyClient(host, port, api_key=args.api_key)
    try:
        results = run_widowx(robot, policy, config, judge=judge)
    finally:
        policy.close()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
