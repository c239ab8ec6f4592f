"""Scripted expert: closed-loop waypoints over privileged object poses, with human-like variation.

Each family is a short script of phases (hover, descend, close, lift, carry, lower, open,
retreat; or for pushing: line up, lower, push, retreat). A move phase steps towards its
waypoint at an episode-specific speed with small noise, re-reading object poses every step, so
the noise is corrected and the demonstrations stay successful. Per episode the speed, hover
and lift heights, the approach point, grasp offsets, an optional via point on the carry path
and occasional pauses vary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ecot.sim import EXPERT_STYLES
from ecot.sim.scene import PUSH_HEIGHT
from ecot.sim.tasks import DIRECTIONS, PUSH_GOAL, relation_goal


AXIS_DEADBAND = 0.003  # "axis" style: an axis within this of its waypoint does not move (no 1-mm corrections)
# Planar pushing ("table" start) holds the yaw: errors under this (rad) are left alone. Contact nudges
# the yaw by ~0.001 rad, and with no other yaw motion in the data, correcting that would spread the
# dataset's tiny yaw range (its q01..q99 normalization) over every action bin.
PLANAR_YAW_DEADBAND = 0.02


@dataclass
class ExpertConfig:
    speed: tuple[float, float] = (0.032, 0.045)  # m per control step while moving (sampled per episode)
    yaw_speed: float = 0.35  # rad per control step
    noise: float = 0.003  # std of the per-step position noise (m) while far from a waypoint
    hover: tuple[float, float] = (0.07, 0.11)  # height above the object's top before descending
    lift: tuple[float, float] = (0.13, 0.18)  # carry height of the fingertips
    pause_prob: float = 0.03  # chance of a zero-motion step inside a move phase
    tolerance: float = 0.006  # a waypoint is reached within this distance (m)
    # "smooth": straight-line moves at a per-episode speed with noise and pauses (human-like);
    # "axis": each axis steps at most a fixed ``axis_speed`` towards the waypoint, with no noise or
    # pauses, so an action dimension takes few values (mostly -speed, 0, +speed): what a small policy
    # learns from few demonstrations.
    # "grid": as "axis", but every step is a whole number of ``grid_step`` (the error rounded, so an axis
    # stops within half a grid step of its waypoint): an action dimension takes a handful of values
    # (0, +-1, ..., +-4 cm), each seen often, instead of a continuum of last steps (docs/quality.md, round twelve).
    # "sign": every step moves each axis by exactly ``sign_step`` towards its waypoint, or not at all when
    # within half of it: an action dimension takes three values (-step, 0, +step), so choosing an action
    # is choosing a direction, and closed loop corrects an overshoot by a step back.
    style: str = "smooth"
    axis_speed: float = 0.04
    grid_step: float = 0.01
    sign_step: float = 0.02

    def __post_init__(self) -> None:
        if self.style not in EXPERT_STYLES:
            raise ValueError(f"unknown expert style {self.style!r}; expected one of {', '.join(EXPERT_STYLES)}")
        if not 0 < self.axis_speed <= 0.05:
            raise ValueError(f"axis_speed must be in (0, 0.05] m per step (the env's clip), got {self.axis_speed}")
        if not 0 < self.grid_step <= self.axis_speed:
            raise ValueError(f"grid_step must be in (0, axis_speed] m, got {self.grid_step}")
        if not 0 < self.sign_step <= 0.05:
            raise ValueError(f"sign_step must be in (0, 0.05] m per step (the env's clip), got {self.sign_step}")


def _grid_translation(err: np.ndarray, speed: float, unit: float) -> np.ndarray:
    """The "grid" style's translation: each axis's error rounded to whole ``unit`` steps, capped at ``speed``."""
    units = np.minimum(np.round(np.abs(err) / unit), math.floor(speed / unit + 1e-9))
    return np.sign(err) * units * unit


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def grasp_yaw(kind: str, object_yaw: float) -> float:
    """Gripper yaw that puts the fingers across the object's narrow side."""
    if kind == "block":
        period = math.pi / 2
    elif kind == "bar":
        period = math.pi
    else:
        return 0.0
    return (object_yaw + period / 2) % period - period / 2


def _extent_along(kind: str, yaw: float, d) -> float:
    """Half extent of an object along the unit direction ``d`` in the table plane."""
    half = {"block": (0.02, 0.02), "bar": (0.05, 0.016)}.get(kind)
    if half is None:
        return {"cylinder": 0.02, "ball": 0.022}.get(kind, 0.03)
    c, s = math.cos(yaw), math.sin(yaw)
    return abs(half[0] * (c * d[0] + s * d[1])) + abs(half[1] * (-s * d[0] + c * d[1]))


@dataclass
class _Phase:
    name: str
    target: Callable[[], tuple[np.ndarray, float]] | None  # -> (tcp position, yaw); None = hold
    gripper: float
    hold_steps: int = 0  # for gripper phases: steps to wait
    max_steps: int = 40
    done: Callable[[], bool] | None = None  # extra completion test
    skip: Callable[[], bool] | None = None  # skip the phase when this holds on entry
    speed: float | None = None  # cap on the episode's speed for this phase
    tolerance: float | None = None  # reach tolerance (default: the config's)


class ScriptedExpert:
    """Call :meth:`act` once per control step until :attr:`done`."""

    def __init__(self, env, rng: np.random.Generator | int | None = None, config: ExpertConfig | None = None):
        self.env = env
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.config = config or ExpertConfig()
        task = env.task
        if task is None:
            raise RuntimeError("reset the environment before creating the expert")
        c, r = self.config, self.rng
        self.speed = float(r.uniform(*c.speed))
        self.hover = float(r.uniform(*c.hover))
        self.lift = float(r.uniform(*c.lift))
        self.grasp_offset = r.normal(0.0, 0.002, size=2)
        self.hover_offset = r.uniform(-0.02, 0.02, size=2)  # approach slightly off-centre, descend diagonally
        self.via = r.random() < 0.4  # sometimes carry through a via point (a curved path)
        self.via_offset = float(r.normal(0.0, 0.04))
        self.via_lift = float(r.uniform(0.0, 0.03))
        self.planar = env.config.start == "table"  # planar pushing: no height or yaw motion
        self.phases = self._script(task)
        self.index = 0
        self.phase_steps = 0

    # ------------------------------------------------------------------ scripts

    def _obj(self, k: int) -> np.ndarray:
        return self.env.object_positions()[k]

    def _script(self, task) -> list[_Phase]:
        if task.family == "push":
            return self._push_script(task)
        main = task.main
        spec = task.objects[main]
        yaw0 = grasp_yaw(spec.kind, self.env.object_yaw(main))
        if abs(yaw0) < 0.03:
            yaw0 = 0.0
        top = spec.height
        grasp_z = max(spec.height / 2.0, 0.016)

        def above_object():
            p = self._obj(main)
            xy = p[:2] + self.grasp_offset + self.hover_offset
            return np.array([xy[0], xy[1], top + self.hover]), yaw0

        def at_object():
            p = self._obj(main)
            return np.array([p[0] + self.grasp_offset[0], p[1] + self.grasp_offset[1], grasp_z]), yaw0

        grasp_xy: dict[str, np.ndarray] = {}

        def lifted():
            p = self.env.tcp_position()
            grasp_xy.setdefault("xy", p[:2].copy())
            return np.array([grasp_xy["xy"][0], grasp_xy["xy"][1], self.lift]), yaw0

        goal_xy, goal_z = self._place_goal(task)

        def above_goal():
            g = goal_xy()
            return np.array([g[0], g[1], self.lift]), yaw0

        def via_point():
            start, g = grasp_xy["xy"], goal_xy()
            d = g - start
            normal = np.array([-d[1], d[0]]) / max(float(np.linalg.norm(d)), 1e-9)
            xy = start + 0.5 * d + self.via_offset * normal
            return np.array([xy[0], xy[1], self.lift + self.via_lift]), yaw0

        def at_goal():
            g = goal_xy()
            return np.array([g[0], g[1], goal_z()]), yaw0

        retreat_z = {}

        def retreat():
            p = self.env.tcp_position()
            retreat_z.setdefault("z", p[2] + float(self.rng.uniform(0.06, 0.1)))
            retreat_z.setdefault("xy", p[:2].copy())
            return np.array([retreat_z["xy"][0], retreat_z["xy"][1], retreat_z["z"]]), yaw0

        return [
            _Phase("approach", above_object, 1.0),
            _Phase("descend", at_object, 1.0, max_steps=15),
            _Phase("close", None, 0.0, hold_steps=2),
            _Phase("lift", lifted, 0.0),
            _Phase("via", via_point, 0.0, max_steps=12, skip=lambda: not self.via, tolerance=0.02),
            _Phase("carry", above_goal, 0.0),
            _Phase("lower", at_goal, 0.0, max_steps=15),
            _Phase("open", None, 1.0, hold_steps=1),
            _Phase("retreat", retreat, 1.0, max_steps=6),
        ]

    def _place_goal(self, task):
        main = task.main
        spec = task.objects[main]
        tgt = task.objects[task.target]
        jitter = self.rng.normal(0.0, 0.003, size=2)
        if task.family == "move_relation":
            fixed = {}

            def goal_xy():
                if "xy" not in fixed:  # decide once, from the reference's pose at that time
                    q = self._obj(task.target)
                    fixed["xy"] = np.array(relation_goal(task, q[:2], spec.radius, tgt.radius)) + jitter
                return fixed["xy"]

            return goal_xy, lambda: spec.height / 2.0 + 0.012

        def goal_xy():
            return self._obj(task.target)[:2] + (jitter if task.family == "pick_place" else 0.0)

        if task.family == "stack":
            return goal_xy, lambda: self._obj(task.target)[2] + tgt.height / 2 + spec.height / 2 + 0.01
        # pick_place: drop a little above the receptacle's floor
        floor = 0.008 if tgt.kind == "bowl" else 0.008
        return goal_xy, lambda: floor + spec.height / 2.0 + 0.02

    def _push_script(self, task) -> list[_Phase]:
        main = task.main
        spec = task.objects[main]
        d = np.array(DIRECTIONS[task.relation])
        ax = 1 if task.relation in ("left", "right") else 0
        sign = d[ax]
        # Fingers one behind the other: one solid face pushes. A planar push keeps the start's yaw:
        # closed fingers side by side are as good a face, and the policy has one motion fewer to learn.
        yaw0 = math.pi / 2 if ax == 0 and not self.planar else 0.0
        push_z = PUSH_HEIGHT

        def behind(z):
            def f():
                p = self._obj(main)
                ext = _extent_along(spec.kind, self.env.object_yaw(main), d)
                xy = p[:2] - d * (ext + 0.03)
                return np.array([xy[0], xy[1], z]), yaw0
            return f

        lat = 1 - ax

        def push():
            p = self._obj(main)
            tcp = self.env.tcp_position()
            ext = _extent_along(spec.kind, self.env.object_yaw(main), d)
            goal = tcp.copy()
            goal[ax] = sign * (PUSH_GOAL + 0.02) - d[ax] * (ext + 0.01)
            # Follow the object's sideways drift gently; chasing it fast slips the finger past it.
            goal[lat] = tcp[lat] + float(np.clip(p[lat] - tcp[lat], -0.006, 0.006))
            goal[2] = push_z
            return goal, yaw0

        def pushed_far_enough():
            return sign * self._obj(main)[ax] >= PUSH_GOAL

        def lost_contact():
            p = self._obj(main)
            tcp = self.env.tcp_position()
            ext = _extent_along(spec.kind, self.env.object_yaw(main), d)
            return float((p[:2] - tcp[:2]) @ d) < 0.3 * ext or abs(p[lat] - tcp[lat]) > ext + 0.012

        def push_done():
            return pushed_far_enough() or lost_contact()

        back = {}

        def back_off():  # move away from the object before lifting, so it is not dragged up
            p = self.env.tcp_position()
            back.setdefault("xy", (p[:2] - d * 0.035).copy())
            return np.array([back["xy"][0], back["xy"][1], push_z]), yaw0

        def retreat():
            return np.array([back["xy"][0], back["xy"][1], 0.1]), yaw0

        if self.planar:
            return self._planar_push_phases(behind(push_z), push, push_done, back_off, yaw0)
        phases = []
        for attempt in range(3):  # line up again when the object slipped off the finger
            skip = None if attempt == 0 else pushed_far_enough
            phases += [
                _Phase("line_up", behind(0.09 if attempt == 0 else 0.07), 0.0, skip=skip),
                _Phase("lower", behind(push_z), 0.0, max_steps=15, skip=skip),
                _Phase("push", push, 0.0, max_steps=25, done=push_done, skip=skip, speed=0.03),
            ]
        return phases + [
            _Phase("back_off", back_off, 0.0, max_steps=3),
            _Phase("retreat", retreat, 0.0, max_steps=6),
        ]

    def _planar_push_phases(self, behind, push, push_done, back_off, yaw0) -> list[_Phase]:
        """From a "table" start: slide sideways along the start line until in line with the push's
        near side, then forward to it, then push; the height never changes (``tasks.table_route``)."""
        line = {}

        def sideways():
            line.setdefault("x", float(self.env.tcp_position()[0]))
            goal, _ = behind()
            return np.array([line["x"], goal[1], goal[2]]), yaw0

        return [
            _Phase("line_up", sideways, 0.0),
            _Phase("approach", lambda: (behind()[0], yaw0), 0.0, max_steps=15),
            _Phase("push", push, 0.0, max_steps=25, done=push_done, speed=0.03),
            _Phase("back_off", back_off, 0.0, max_steps=3),
        ]

    # ------------------------------------------------------------------ acting

    @property
    def done(self) -> bool:
        return self.index >= len(self.phases)

    @property
    def phase(self) -> str:
        return self.phases[self.index].name if not self.done else "done"

    def act(self) -> np.ndarray:
        """The next action ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``."""
        c = self.config
        while not self.done:
            ph = self.phases[self.index]
            state = self.env.state()
            if self.phase_steps == 0 and ph.skip is not None and ph.skip():
                self._next()
                continue
            if ph.target is None:
                if self.phase_steps < ph.hold_steps:
                    self.phase_steps += 1
                    return np.array([0, 0, 0, 0, 0, 0, ph.gripper], dtype=np.float32)
                self._next()
                continue
            goal, yaw_goal = ph.target()
            err = goal - state[:3]
            yaw_err = _wrap(yaw_goal - float(state[5]))
            speed = min(c.axis_speed, ph.speed) if ph.speed else c.axis_speed
            grid = None
            if c.style == "grid":
                grid = _grid_translation(err, speed, c.grid_step)
            elif c.style == "sign":  # one whole step of sign_step, or none (the phase's speed is ignored)
                grid = _grid_translation(err, c.sign_step, c.sign_step)
            reached = np.linalg.norm(err) < (ph.tolerance or c.tolerance) and abs(yaw_err) < 0.05
            if grid is not None and abs(yaw_err) < 0.05 and not grid.any():
                reached = True  # every axis within half a grid step: the grid cannot get closer
            if ph.done is not None and ph.done():
                reached = True
            if reached or self.phase_steps >= ph.max_steps:
                self._next()
                continue
            self.phase_steps += 1
            if c.style in ("axis", "grid", "sign"):
                if grid is not None:
                    step = grid
                else:
                    step = np.where(np.abs(err) < AXIS_DEADBAND, 0.0, np.clip(err, -speed, speed))
                dyaw = float(np.clip(yaw_err, -c.yaw_speed, c.yaw_speed))
                if self.planar and abs(yaw_err) < PLANAR_YAW_DEADBAND:
                    dyaw = 0.0
                return np.array([step[0], step[1], step[2], 0.0, 0.0, dyaw, ph.gripper], dtype=np.float32)
            if self.rng.random() < c.pause_prob and self.phase_steps > 1:
                return np.array([0, 0, 0, 0, 0, 0, ph.gripper], dtype=np.float32)
            dist = float(np.linalg.norm(err))
            speed = min(self.speed, ph.speed) if ph.speed else self.speed
            step = err * min(1.0, speed / max(dist, 1e-9))
            if dist > 3 * speed:  # noise only far from the waypoint, where it does not matter
                step = step + self.rng.normal(0.0, c.noise, size=3)
            dyaw = float(np.clip(yaw_err, -c.yaw_speed, c.yaw_speed))
            return np.array([step[0], step[1], step[2], 0.0, 0.0, dyaw, ph.gripper], dtype=np.float32)
        return np.array([0, 0, 0, 0, 0, 0, 1.0 if self.env.gripper_open else 0.0], dtype=np.float32)

    def _next(self) -> None:
        self.index += 1
        self.phase_steps = 0
