"""The policies ``ecot eval`` can evaluate, behind one small interface.

* ``expert``  -- the sim's scripted expert (privileged object poses);
* ``oracle``  -- the expert's actions plus the reasoning the template annotator builds from the
  ground truth of the executed episode (the faithfulness metrics' sanity check: ≈ perfect);
* ``random``  -- uniform random actions;
* a checkpoint directory -- :class:`ecot.policy.ECoTPolicy`, loaded once per worker process;
* ``ws://HOST:PORT`` -- a running ``ecot serve``, through the torch-free client.

A policy is reset at the start of every episode (``reset(env, seed)``), called once per control
step (``act(obs, instruction) -> StepOutput``) and shown the finished episode (``finish``), which
is where the oracle writes its reasoning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ecot.errors import UsageError
from ecot.policy.modes import MODES
from ecot.reasoning import Reasoning

BUILTIN = ("expert", "oracle", "random")


@dataclass
class StepOutput:
    action: np.ndarray
    reasoning: Reasoning | None = None  # None: the policy wrote no reasoning
    text: str = ""
    latency_ms: float | None = None
    timings: dict[str, Any] = field(default_factory=dict)


def has_reasoning(r: Reasoning | None) -> bool:
    return r is not None and any([r.task, r.plan, r.visible_objects, r.subtask_reasoning, r.subtask,
                                  r.move_reasoning, r.move, r.gripper_positions])


def hold_action(obs: dict) -> np.ndarray:
    """No motion, gripper kept as it is."""
    return np.array([0, 0, 0, 0, 0, 0, 1.0 if float(obs["state"][6]) > 0.5 else 0.0], dtype=np.float32)


class EvalPolicy:
    name = "policy"
    done = False  # True: the policy has nothing more to do (the episode ends)
    writes_reasoning = False

    def reset(self, env: Any, seed: int) -> None:
        self.done = False

    def act(self, obs: dict, instruction: str) -> StepOutput:
        raise NotImplementedError

    def finish(self, episode: Any, outputs: list[StepOutput]) -> None:
        """Called with the executed episode (T+1 observations, ground truth) and the T step outputs."""

    def close(self) -> None:
        pass


class ExpertPolicy(EvalPolicy):
    name = "expert"

    def reset(self, env: Any, seed: int) -> None:
        from ecot.sim.expert import ScriptedExpert

        super().reset(env, seed)
        self.expert = ScriptedExpert(env, np.random.default_rng([seed, 7]))

    def act(self, obs: dict, instruction: str) -> StepOutput:
        t0 = time.perf_counter()
        action = self.expert.act()
        if self.expert.done:
            self.done = True
            action = hold_action(obs)
        return StepOutput(np.asarray(action, dtype=np.float32), latency_ms=(time.perf_counter() - t0) * 1e3)


class OraclePolicy(ExpertPolicy):
    """Expert actions; reasoning from ground truth by the template annotator (``ecot.annotate``)."""

    name = "oracle"
    writes_reasoning = True

    def finish(self, episode: Any, outputs: list[StepOutput]) -> None:
        from ecot.annotate.pipeline import AnnotateConfig, annotate_episode, build_stages
        from ecot.data.features import step_reasoning_text

        if not hasattr(self, "_stages"):
            self._stages = build_stages(AnnotateConfig())  # ground-truth boxes and gripper, template reasoning
        entry = annotate_episode(episode, self._stages)
        for t, out in enumerate(outputs):
            out.text = step_reasoning_text(entry, str(t))
            out.reasoning = Reasoning.parse(out.text)


class RandomPolicy(EvalPolicy):
    name = "random"

    def reset(self, env: Any, seed: int) -> None:
        super().reset(env, seed)
        self.rng = np.random.default_rng([seed, 11])
        self.max_pos = float(env.config.max_delta_pos)
        self.max_yaw = float(env.config.max_delta_yaw)

    def act(self, obs: dict, instruction: str) -> StepOutput:
        r = self.rng
        xyz = r.uniform(-self.max_pos, self.max_pos, size=3)
        action = np.array([*xyz, 0.0, 0.0, r.uniform(-self.max_yaw, self.max_yaw), float(r.integers(0, 2))],
                          dtype=np.float32)
        return StepOutput(action, latency_ms=0.0)


class CheckpointPolicy(EvalPolicy):
    """A local checkpoint run by :class:`ecot.policy.ECoTPolicy` (greedy)."""

    writes_reasoning = True

    def __init__(self, path: str, mode: str = "full", reuse_steps: int = 5, device: str | None = None,
                 dtype: str = "float32", unnorm_key: str | None = None, action_decoding: str = "argmax"):
        from ecot.policy import ECoTPolicy

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.name = str(path)
        self.mode = mode
        self.writes_reasoning = mode != "no-reasoning"
        self.unnorm_key = unnorm_key
        self.policy = ECoTPolicy.from_pretrained(path, mode=mode, reuse_steps=reuse_steps, device=device, dtype=dtype,
                                                 action_decoding=action_decoding)

    def reset(self, env: Any, seed: int) -> None:
        super().reset(env, seed)
        self.policy.reset()

    def act(self, obs: dict, instruction: str) -> StepOutput:
        t0 = time.perf_counter()
        out = self.policy.step(obs["image"], instruction, unnorm_key=self.unnorm_key)
        wall = (time.perf_counter() - t0) * 1e3
        timings = dict(getattr(out, "timings", {}) or {})
        reasoning = out.reasoning if has_reasoning(out.reasoning) else None
        action = hold_action(obs) if out.action is None else np.asarray(out.action, dtype=np.float32).reshape(-1)
        return StepOutput(action, reasoning, out.text or "", float(timings.get("total_ms", wall)), timings)


def parse_ws(spec: str) -> tuple[str, int]:
    """``ws://HOST:PORT`` -> (host, port), with a clear error for anything else."""
    rest = spec[len("ws://"):] if spec.startswith("ws://") else None
    host, _, port = (rest or "").rpartition(":")
    if not rest or not host or not port.isdigit():
        raise UsageError(f"remote policy must look like ws://HOST:PORT, got {spec!r}")
    return host, int(port)


def reasoning_from_reply(reply: dict) -> tuple[Reasoning | None, str]:
    """The reasoning of a server reply: parsed from its text, else built from its fields."""
    text = str(reply.get("text") or "")
    if text:
        r = Reasoning.parse(text)
        return (r if has_reasoning(r) else None), text
    fields = reply.get("reasoning") or {}
    if not fields:
        return None, ""
    known = {k: fields[k] for k in ("task", "plan", "subtask_reasoning", "subtask", "move_reasoning", "move") if k in fields}
    try:
        r = Reasoning(**known, visible_objects=[tuple(o) for o in fields.get("visible_objects") or []],
                      gripper_positions=[tuple(p) for p in fields.get("gripper_positions") or []])
    except (TypeError, ValueError):
        return None, ""
    return (r if has_reasoning(r) else None), r.to_text()


class RemotePolicy(EvalPolicy):
    """A policy served by ``ecot serve`` (openpi websocket protocol), via ``ecot.serve.client.PolicyClient``."""

    writes_reasoning = True

    def __init__(self, spec: str, api_key: str | None = None, unnorm_key: str | None = None):
        from ecot.serve.client import PolicyClient

        host, port = parse_ws(spec)
        self.name = spec
        self.unnorm_key = unnorm_key
        self.client = PolicyClient(host, port, api_key=api_key)

    def reset(self, env: Any, seed: int) -> None:
        super().reset(env, seed)
        self.client.reset()

    def act(self, obs: dict, instruction: str) -> StepOutput:
        t0 = time.perf_counter()
        reply = (self.client.infer(obs["image"], instruction) if self.unnorm_key is None
                 else self.client.infer(obs["image"], instruction, unnorm_key=self.unnorm_key))
        wall = (time.perf_counter() - t0) * 1e3
        action = np.asarray(reply["actions"], dtype=np.float32)
        action = action[0] if action.ndim == 2 else action.reshape(-1)
        reasoning, text = reasoning_from_reply(reply)
        timings = {k: v for k, v in (reply.get("server_timing") or {}).items() if isinstance(v, (int, float))}
        return StepOutput(action, reasoning, text, wall, timings)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def make_policy(spec: str, mode: str = "full", reuse_steps: int = 5, device: str | None = None,
                unnorm_key: str | None = None, api_key: str | None = None, action_decoding: str = "argmax") -> EvalPolicy:
    """The policy named by ``--policy``: a built-in name, ``ws://HOST:PORT`` or a checkpoint directory."""
    from pathlib import Path

    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if spec in BUILTIN:
        return {"expert": ExpertPolicy, "oracle": OraclePolicy, "random": RandomPolicy}[spec]()
    if spec.startswith("ws://"):
        if mode != "full":
            raise UsageError("--mode applies to local checkpoints; a served policy reasons as `ecot serve --mode` says")
        return RemotePolicy(spec, api_key=api_key, unnorm_key=unnorm_key)
    path = Path(spec)
    if not path.is_dir() or not (path / "config.json").exists():
        raise UsageError(f"--policy {spec!r} is neither {', '.join(BUILTIN)}, ws://HOST:PORT, "
                         "nor a checkpoint directory (with config.json)")
    return CheckpointPolicy(str(path), mode=mode, reuse_steps=reuse_steps, device=device, unnorm_key=unnorm_key,
                            action_decoding=action_decoding)


def validate_spec(spec: str) -> None:
    """Fail fast (in the parent, before workers start) on a malformed --policy."""
    from pathlib import Path

    if spec in BUILTIN:
        return
    if spec.startswith("ws://"):
        parse_ws(spec)
        return
    path = Path(spec)
    if not path.is_dir() or not (path / "config.json").exists():
        raise UsageError(f"--policy {spec!r} is neither {', '.join(BUILTIN)}, ws://HOST:PORT, "
                         "nor a checkpoint directory (with config.json)")


def actions_of(outputs: Sequence[StepOutput]) -> np.ndarray:
    return np.stack([o.action for o in outputs]) if outputs else np.zeros((0, 7), np.float32)
