"""The episode schema every stage speaks: sim and dataset readers produce it, annotation and
training consume it.

An episode is T steps of one camera image, a proprio state and an action, plus the language
instruction and metadata. ``file_path`` and ``episode_id`` in the metadata key the join with
the embodied-features file (docs/formats.md §4). Sim episodes also carry ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


@dataclass
class GroundTruth:
    """Per-step ground truth a simulator knows (absent for real robot data).

    Boxes and points are pixels of ``Episode.images`` (x right, y down), boxes ``[x0, y0, x1, y1]``
    clipped to the image; ``object_visible[t, k]`` is false when object k is outside the view or
    hidden, and its box is then meaningless.
    """

    object_names: list[str]  # K names, e.g. "the red block"
    object_boxes: np.ndarray  # [T, K, 4] float32 pixels
    object_visible: np.ndarray  # [T, K] bool
    object_poses: np.ndarray  # [T, K, 7] float32 world xyz + quaternion wxyz
    gripper_points: np.ndarray  # [T, 2] float32 pixel of the gripper (fingertip centre)
    gripper_visible: np.ndarray  # [T] bool
    gripper_open: np.ndarray  # [T] bool

    def __post_init__(self) -> None:
        self.object_boxes = np.asarray(self.object_boxes, dtype=np.float32)
        self.object_visible = np.asarray(self.object_visible, dtype=bool)
        self.object_poses = np.asarray(self.object_poses, dtype=np.float32)
        self.gripper_points = np.asarray(self.gripper_points, dtype=np.float32)
        self.gripper_visible = np.asarray(self.gripper_visible, dtype=bool)
        self.gripper_open = np.asarray(self.gripper_open, dtype=bool)
        t, k = self.object_visible.shape if self.object_visible.ndim == 2 else (None, None)
        if k != len(self.object_names):
            raise ValueError(f"object_visible must be [T, {len(self.object_names)}], got {self.object_visible.shape}")
        checks = {
            "object_boxes": (self.object_boxes.shape, (t, k, 4)),
            "object_poses": (self.object_poses.shape, (t, k, 7)),
            "gripper_points": (self.gripper_points.shape, (t, 2)),
            "gripper_visible": (self.gripper_visible.shape, (t,)),
            "gripper_open": (self.gripper_open.shape, (t,)),
        }
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(f"ground truth {name} has shape {tuple(got)}, expected {want}")


@dataclass
class Episode:
    """One demonstration. ``images[t]`` is seen at state ``states[t]``; ``actions[t]`` is then taken."""

    images: np.ndarray  # [T, H, W, 3] uint8
    states: np.ndarray  # [T, 7] float32: x, y, z, roll, pitch, yaw, gripper (1 open, 0 closed)
    actions: np.ndarray  # [T, 7] float32: Bridge convention EEF deltas + absolute gripper
    instruction: str
    metadata: dict[str, Any] = field(default_factory=dict)  # file_path, episode_id, task, split, ...
    ground_truth: GroundTruth | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.states = np.asarray(self.states, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [T, H, W, 3], got {self.images.dtype} {self.images.shape}")
        t = self.images.shape[0]
        if self.states.ndim != 2 or self.states.shape[0] != t:
            raise ValueError(f"states must be [{t}, D], got {self.states.shape}")
        if self.actions.ndim != 2 or self.actions.shape[0] != t:
            raise ValueError(f"actions must be [{t}, D], got {self.actions.shape}")
        if not isinstance(self.instruction, str):
            raise TypeError(f"instruction must be a string, got {type(self.instruction).__name__}")
        if self.ground_truth is not None and self.ground_truth.gripper_points.shape[0] != t:
            raise ValueError(f"ground truth has {self.ground_truth.gripper_points.shape[0]} steps, episode has {t}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def file_path(self) -> str:
        return str(self.metadata.get("file_path", ""))

    @property
    def episode_id(self) -> str:
        return str(self.metadata.get("episode_id", ""))
