"""The tabletop environment: gymnasium-style ``reset`` / ``step`` around one MuJoCo scene.

Actions are Bridge-convention end-effector deltas in the world frame, one per 0.2 s control
step (5 Hz): ``[dx, dy, dz, droll, dpitch, dyaw, gripper]`` with the gripper absolute
(1 open, 0 closed). The gripper always points down, so roll and pitch stay 0 and their deltas
are ignored. The state is ``[x, y, z, roll, pitch, yaw, gripper]`` of the fingertip centre,
with the gripper the measured opening in [0, 1] (1 fully open).

The commanded pose integrates the deltas (target += delta) and is tracked by stiff position
servos, so ``state[t+1][:6] - state[t][:6]`` is ``action[t][:6]`` up to small tracking error.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecot.sim._gl import ensure_gl_backend

ensure_gl_backend()

import mujoco  # noqa: E402  (the GL backend must be chosen first)

from ecot.sim import scene as scene_mod  # noqa: E402
from ecot.sim.camera import Camera  # noqa: E402
from ecot.sim.scene import ANYWHERE_START, CAMERAS, START_REGIONS, TABLE_START  # noqa: E402
from ecot.sim.tasks import FAMILIES, TABLE_REGIONS, TaskSpec, check_start, check_success, sample_task  # noqa: E402

# Reachable fingertip box (x, y, z) the commanded pose is clipped to.
TCP_LIMITS = np.array([[-0.28, 0.28], [-0.33, 0.33], [0.008, 0.34]])
HOME_TCP = np.array([-0.14, 0.0, 0.20])


@dataclass
class SimConfig:
    """Environment settings; the defaults are what datasets and tests use."""

    image_size: int = 224  # square camera image, pixels
    control_hz: float = 5.0
    max_steps: int = 80  # episode truncation
    num_objects: int = 4  # objects per scene (task objects + distractors)
    max_delta_pos: float = 0.05  # |dx|, |dy|, |dz| clip per control step (m)
    max_delta_yaw: float = 0.5  # |dyaw| clip per control step (rad)
    render: bool = True  # render the camera image at every control step
    start: str = "home"  # gripper start region, one of START_REGIONS
    camera: str = "main"  # the camera observations and ground truth come from, one of CAMERAS

    def __post_init__(self) -> None:
        if int(self.image_size) < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if self.control_hz <= 0:
            raise ValueError(f"control_hz must be positive, got {self.control_hz}")
        self.image_size = int(self.image_size)
        if self.start not in START_REGIONS:
            raise ValueError(f"unknown start region {self.start!r}; expected one of {', '.join(START_REGIONS)}")
        if self.camera not in CAMERAS:
            raise ValueError(f"unknown camera {self.camera!r}; expected one of {', '.join(CAMERAS)}")


def _yaw_of_quat(q) -> float:
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class TabletopEnv:
    """A table, a parallel-jaw gripper on a Cartesian gantry, a fixed camera and 4 objects."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self._renderer: mujoco.Renderer | None = None
        self._renderer_model = None
        self.task: TaskSpec | None = None
        self._points: list[np.ndarray] = []
        self._steps = 0
        self._target = HOME_TCP.copy()
        self._target_yaw = 0.0
        self._gripper_cmd = 1.0
        self.substeps = 0

    # ------------------------------------------------------------------ lifecycle

    def reset(self, seed: int | None = None, task: TaskSpec | str | None = None, split: str = "seen") -> tuple[dict, dict]:
        """Start an episode. ``task`` is a TaskSpec, a family name, or None (random family)."""
        rng = np.random.default_rng(seed)
        if task is None:
            task = str(rng.choice(FAMILIES))
        if isinstance(task, str):
            task = sample_task(rng, task, split, self.config.num_objects, self.config.start)
        if not isinstance(task, TaskSpec):
            raise TypeError(f"task must be a TaskSpec, a family name or None, got {type(task).__name__}")
        self.task = task
        size = self.config.image_size
        xml, self._points = scene_mod.build_scene_xml(task.objects, (size, size))
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.substeps = max(1, int(round(1.0 / (self.config.control_hz * self.model.opt.timestep))))
        self._ids()
        check_start(task.family, self.config.start)  # a TaskSpec passed in is checked too
        if self.config.start == "table" and task.relation not in TABLE_REGIONS:
            raise ValueError(f"start region 'table' pushes to one of {', '.join(TABLE_REGIONS)}, got {task.relation!r}")
        if self.config.start == "anywhere":
            start = rng.uniform(ANYWHERE_START[:, 0], ANYWHERE_START[:, 1])
        elif self.config.start == "table":
            start = rng.uniform(TABLE_START[:, 0], TABLE_START[:, 1])
        else:  # home with a small random offset (part of the demonstrations' variation)
            start = HOME_TCP + rng.uniform([-0.03, -0.05, -0.02], [0.03, 0.05, 0.03])
        self._set_gripper_qpos(start, 0.0)
        self._target = start.copy()
        self._target_yaw = 0.0
        self._gripper_cmd = 1.0
        self._apply_ctrl(self._target, self._target_yaw)
        mujoco.mj_forward(self.model, self.data)
        # Let objects settle on the table before the first observation.
        for _ in range(75):
            mujoco.mj_step(self.model, self.data)
        self._steps = 0
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.camera = Camera.from_model(self.model, self.data, self.config.camera, size, size)
        obs = self._observation()
        return obs, self._info()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "TabletopEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # OSMesa contexts complain when freed at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ stepping

    def step(self, action) -> tuple[dict, float, bool, bool, dict]:
        if self.model is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape[0] != 7 or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 7 finite numbers [dx, dy, dz, droll, dpitch, dyaw, gripper], got {action!r}")
        cfg = self.config
        delta = np.clip(a[:3], -cfg.max_delta_pos, cfg.max_delta_pos)
        dyaw = float(np.clip(a[5], -cfg.max_delta_yaw, cfg.max_delta_yaw))
        measured = self.tcp_position()
        # Integrate the commanded pose; resynchronise when contact has held the gripper back.
        if np.linalg.norm(self._target - measured) > 0.03:
            self._target = measured.copy()
        start, start_yaw = self._target.copy(), self._target_yaw
        self._target = np.clip(self._target + delta, TCP_LIMITS[:, 0], TCP_LIMITS[:, 1])
        self._target_yaw = float(np.clip(self._target_yaw + dyaw, -3.0, 3.0))
        self._gripper_cmd = 1.0 if a[6] > 0.5 else 0.0
        ramp = max(1, int(self.substeps * 0.6))
        for i in range(self.substeps):
            s = min(1.0, (i + 1) / ramp)
            s = s * s * (3 - 2 * s)  # smoothstep: no velocity jumps at the ends
            self._apply_ctrl(start + s * (self._target - start), start_yaw + s * (self._target_yaw - start_yaw))
            mujoco.mj_step(self.model, self.data)
        self._steps += 1
        obs = self._observation()
        info = self._info()
        success = info["success"]
        truncated = self._steps >= cfg.max_steps
        return obs, float(success), bool(success), bool(truncated and not success), info

    # ------------------------------------------------------------------ observations

    def state(self) -> np.ndarray:
        p = self.tcp_position()
        yaw = float(self.data.qpos[self._qadr["gyaw"]])
        opening = 1.0 - float(self.data.qpos[self._qadr["finger_left"]]) / scene_mod.FINGER_TRAVEL
        return np.array([p[0], p[1], p[2], 0.0, 0.0, yaw, np.clip(opening, 0.0, 1.0)], dtype=np.float32)

    def tcp_position(self) -> np.ndarray:
        return self.data.site_xpos[self._tcp_site].copy()

    @property
    def gripper_open(self) -> bool:
        return self._gripper_cmd > 0.5

    @property
    def steps(self) -> int:
        return self._steps

    def object_positions(self) -> np.ndarray:
        return np.array([self.data.xpos[b] for b in self._obj_bodies])

    def object_poses(self) -> np.ndarray:
        """``[K, 7]`` world xyz + quaternion wxyz."""
        return np.array([np.concatenate([self.data.xpos[b], self.data.xquat[b]]) for b in self._obj_bodies], dtype=np.float32)

    def object_yaw(self, k: int) -> float:
        return _yaw_of_quat(self.data.xquat[self._obj_bodies[k]])

    def success(self) -> bool:
        return check_success(self.task, self.object_positions(), self.gripper_open)

    def render(self) -> np.ndarray:
        """The camera image ``[H, W, 3]`` uint8 of the current state."""
        r = self._get_renderer()
        r.update_scene(self.data, camera=self.config.camera)
        return r.render().copy()

    def render_segmentation(self, hide_gripper: bool = False) -> np.ndarray:
        """Per pixel the index of the object seen there (``-1`` for anything else)."""
        r = self._get_renderer()
        option = mujoco.MjvOption()
        if hide_gripper:
            option.geomgroup[1] = 0  # the gripper's geoms are in group 1
        r.enable_segmentation_rendering()
        try:
            r.update_scene(self.data, camera=self.config.camera, scene_option=option)
            seg = r.render()
        finally:
            r.disable_segmentation_rendering()
        geom_ids = seg[..., 0]
        lut = np.full(self.model.ngeom + 1, -1, dtype=np.int32)
        for g in range(self.model.ngeom):
            body = self.model.geom_bodyid[g]
            if body in self._body_to_obj:
                lut[g] = self._body_to_obj[body]
        out = np.where(geom_ids >= 0, lut[np.clip(geom_ids, 0, self.model.ngeom)], -1)
        # Only count geoms (object type 5 = mjOBJ_GEOM).
        return np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), out, -1).astype(np.int32)

    def ground_truth(self) -> dict[str, Any]:
        """Per-step ground truth: object boxes/visibility/poses and the gripper pixel point."""
        size = self.config.image_size
        boxes = np.zeros((len(self._obj_bodies), 4), dtype=np.float32)
        visible = np.zeros(len(self._obj_bodies), dtype=bool)
        for k, b in enumerate(self._obj_bodies):
            rot = self.data.xmat[b].reshape(3, 3)
            world = self._points[k] @ rot.T + self.data.xpos[b]
            boxes[k], visible[k] = self.camera.project_box(world, size, size)
        point, in_front = self.camera.project(self.tcp_position()[None])
        gp = point[0]
        gvis = bool(in_front[0] and 0 <= gp[0] < size and 0 <= gp[1] < size)
        return {
            "object_boxes": boxes,
            "object_visible": visible,
            "object_poses": self.object_poses(),
            "gripper_point": np.clip(gp, 0, size - 1).astype(np.float32),
            "gripper_visible": gvis,
            "gripper_open": self.gripper_open,
        }

    # ------------------------------------------------------------------ internals

    def _ids(self) -> None:
        m = self.model
        self._qadr = {n: m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]
                      for n in ("gx", "gy", "gz", "gyaw", "finger_left", "finger_right")}
        self._tcp_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._obj_bodies = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"obj{k}") for k in range(len(self.task.objects))]
        self._body_to_obj = {b: k for k, b in enumerate(self._obj_bodies)}

    def _set_gripper_qpos(self, tcp: np.ndarray, yaw: float) -> None:
        q = self.data.qpos
        q[self._qadr["gx"]], q[self._qadr["gy"]] = tcp[0], tcp[1]
        q[self._qadr["gz"]] = tcp[2] + scene_mod.TCP_BELOW_WRIST
        q[self._qadr["gyaw"]] = yaw

    def _apply_ctrl(self, tcp: np.ndarray, yaw: float) -> None:
        c = self.data.ctrl
        c[0], c[1], c[2] = tcp[0], tcp[1], tcp[2] + scene_mod.TCP_BELOW_WRIST
        c[3] = yaw
        c[4] = 0.0 if self._gripper_cmd > 0.5 else scene_mod.FINGER_TRAVEL

    def _get_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            size = self.config.image_size
            try:
                self._renderer = mujoco.Renderer(self.model, size, size)
            except Exception as err:  # mujoco.FatalError and GL import errors
                raise RuntimeError(
                    f"MuJoCo could not create an offscreen OpenGL context (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}): "
                    f"{err}. Set MUJOCO_GL=egl or MUJOCO_GL=osmesa before anything imports mujoco "
                    "(import ecot.sim.env first), and install libegl1 or libosmesa6."
                ) from err
        return self._renderer

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"state": self.state()}
        if self.config.render:
            obs["image"] = self.render()
        return obs

    def _info(self) -> dict[str, Any]:
        return {
            "success": self.success(),
            "step": self._steps,
            "instruction": self.task.instruction,
            "task": self.task.describe(),
        }
