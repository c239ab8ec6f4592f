"""Small synthetic sim-like episodes with ground truth (a scripted pick-and-place).

Imported by the tests and by the helper scripts the resume test runs in subprocesses (so it
must not depend on pytest).
"""

from __future__ import annotations

import numpy as np

from ecot.data.episode import Episode, GroundTruth

IMAGE = 32


def to_pixel(xyz: np.ndarray) -> np.ndarray:
    """A fixed top-down-ish camera: x (forward) up the image, y (left) to the left, z shifts up."""
    xyz = np.atleast_2d(xyz)
    u = IMAGE / 2 - xyz[:, 1] * 60
    v = IMAGE / 2 - xyz[:, 0] * 60 - xyz[:, 2] * 20
    return np.stack([u, v], axis=1)


def _segment(a, b, n):
    return [a + (b - a) * (k + 1) / n for k in range(n)]


def pick_place_episode(seed: int = 0, family: str = "pick_place", steps_per_leg: int = 6, index: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    obj = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), 0.02])
    tgt = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), 0.01])
    start = np.array([0.0, 0.0, 0.25])
    above_obj, above_tgt = obj + [0, 0, 0.15], tgt + [0, 0, 0.17]
    n = steps_per_leg
    # (position, gripper open) waypoints: approach, descend, close, lift, carry, descend, open, retreat
    path = [(start, 1.0)]
    path += [(p, 1.0) for p in _segment(start, above_obj, n)]
    path += [(p, 1.0) for p in _segment(above_obj, obj, n)]
    path += [(obj, 0.0)] * 2
    path += [(p, 0.0) for p in _segment(obj, above_obj, n)]
    path += [(p, 0.0) for p in _segment(above_obj, above_tgt, n)]
    path += [(p, 0.0) for p in _segment(above_tgt, tgt + [0, 0, 0.03], n)]
    path += [(tgt + [0, 0, 0.03], 1.0)] * 2
    path += [(p, 1.0) for p in _segment(tgt + [0, 0, 0.03], tgt + [0, 0, 0.2], n)]
    t = len(path)
    states = np.zeros((t, 7), dtype=np.float32)
    states[:, :3] = [p for p, _ in path]
    states[:, 6] = [g for _, g in path]
    actions = np.zeros((t, 7), dtype=np.float32)
    actions[:-1, :6] = states[1:, :6] - states[:-1, :6]
    actions[:, 6] = np.concatenate([states[1:, 6], states[-1:, 6]])
    # Object pose: follows the gripper from the grasp until the release.
    grasped = False
    obj_pos = np.zeros((t, 3))
    cur = obj.copy()
    for i in range(t):
        if states[i, 6] < 0.5:
            grasped = True
        elif grasped:
            grasped = False
        if grasped:
            cur = states[i, :3] - [0, 0, 0.0]
        obj_pos[i] = cur
    names = ["the red block", "the blue bowl"]
    poses = np.zeros((t, 2, 7), dtype=np.float32)
    poses[:, 0, :3] = obj_pos
    poses[:, 1, :3] = tgt
    poses[:, :, 3] = 1.0
    boxes = np.zeros((t, 2, 4), dtype=np.float32)
    for k, centre in enumerate([obj_pos, np.repeat(tgt[None], t, 0)]):
        c = to_pixel(centre)
        half = 2.0 if k == 0 else 3.0
        boxes[:, k] = np.concatenate([c - half, c + half], axis=1)
    gt = GroundTruth(
        object_names=names,
        object_boxes=boxes,
        object_visible=np.ones((t, 2), dtype=bool),
        object_poses=poses,
        gripper_points=to_pixel(states[:, :3]).astype(np.float32),
        gripper_visible=np.ones(t, dtype=bool),
        gripper_open=states[:, 6] > 0.5,
    )
    images = np.zeros((t, IMAGE, IMAGE, 3), dtype=np.uint8)
    images[:, :, :, 0] = seed % 255
    description = {"family": family, "object": names[0], "target": names[1]}
    if family == "move_relation":
        description["relation"] = "left"
    return Episode(
        images=images,
        states=states,
        actions=actions,
        instruction=f"put the red block in the blue bowl",
        metadata={
            "file_path": f"synthetic/shard_{index % 3}.tfrecord",
            "episode_id": str(index),
            "task_family": family,
            "task": description,
            "split": "seen",
            "success": True,
        },
        ground_truth=gt,
    )


class SyntheticDataset:
    """Dataset protocol the runner expects: len, [i] -> Episode, root."""

    def __init__(self, n: int = 6, fail_on: tuple[int, ...] = (), root: str = "synthetic"):
        self.n, self.fail_on, self.root, self.fps = n, fail_on, root, 10

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Episode:
        if not 0 <= i < self.n:
            raise IndexError(i)
        if i in self.fail_on:
            raise RuntimeError(f"episode {i} is corrupt (synthetic failure)")
        return pick_place_episode(seed=i, index=i)
