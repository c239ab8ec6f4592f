"""Pinhole projection of world points into the fixed camera's image (pixels, x right, y down).

MuJoCo cameras look along their local -z with +y up; the renderer's image has row 0 at the
top, so pixel ``(u, v) = (cx + f * xc / -zc, cy - f * yc / -zc)`` with ``f = (H/2) / tan(fovy/2)``.
Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``; boxes are continuous ``[x0, y0, x1, y1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_VISIBLE_FRACTION = 0.3  # of the unclipped box area that must lie in the image
MIN_VISIBLE_AREA = 4.0  # pixels^2


@dataclass
class Camera:
    position: np.ndarray  # [3] world
    rotation: np.ndarray  # [3, 3] columns = camera x, y, z axes in world
    focal: float  # pixels
    width: int
    height: int

    @classmethod
    def from_model(cls, model, data, name: str, width: int, height: int) -> "Camera":
        import mujoco

        cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam < 0:
            raise ValueError(f"no camera named {name!r} in the model")
        fovy = math.radians(float(model.cam_fovy[cam]))
        return cls(
            position=data.cam_xpos[cam].copy(),
            rotation=data.cam_xmat[cam].reshape(3, 3).copy(),
            focal=(height / 2.0) / math.tan(fovy / 2.0),
            width=width,
            height=height,
        )

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points ``[N, 3]`` -> pixels ``[N, 2]`` and whether each is in front of the camera."""
        pc = (np.asarray(points, float) - self.position) @ self.rotation  # camera-frame coordinates
        depth = -pc[:, 2]
        in_front = depth > 1e-6
        safe = np.where(in_front, depth, 1e-6)
        u = self.width / 2.0 + self.focal * pc[:, 0] / safe
        v = self.height / 2.0 - self.focal * pc[:, 1] / safe
        return np.stack([u, v], axis=1), in_front

    def project_box(self, points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, bool]:
        """Image box of a set of surface points, clipped to the image, and its visibility."""
        uv, in_front = self.project(points)
        if not np.all(in_front):
            return np.zeros(4, np.float32), False
        x0, y0 = uv.min(0)
        x1, y1 = uv.max(0)
        full = max((x1 - x0) * (y1 - y0), 1e-9)
        cx0, cy0 = np.clip([x0, y0], 0, [width, height])
        cx1, cy1 = np.clip([x1, y1], 0, [width, height])
        clipped = max(cx1 - cx0, 0.0) * max(cy1 - cy0, 0.0)
        visible = clipped >= MIN_VISIBLE_AREA and clipped / full >= MIN_VISIBLE_FRACTION
        return np.array([cx0, cy0, cx1, cy1], np.float32), bool(visible)
