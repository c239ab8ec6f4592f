"""The Bridge (``bridge_orig``) episode transform of the original training pipeline, and the
reasoning join it implies (docs/formats.md §8).

The original pipeline drops the first step, binarizes the gripper action, relabels the six
movement dimensions as state differences and drops the last step. Step indices are assigned
only afterwards, while the reasoning was computed on the raw episode, so in the released
training data reasoning entry ``i`` lands on the frame that was raw step ``i + 1``.
``reasoning_step(..., join="original")`` reproduces that; ``join="aligned"`` gives each frame
the reasoning of its own raw step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ecot.data.episode import Episode

JOIN_MODES = ("original", "aligned")
RAW_OFFSET_KEY = "raw_step_offset"  # metadata: raw step index of transformed frame 0


def binarize_gripper_actions(gripper: np.ndarray) -> np.ndarray:
    """Open (> 0.95) -> 1, closed (< 0.05) -> 0, in-between values take the next decided value.

    Scans backwards from the end, carrying the last decided value; the carry starts as the raw
    last value, so a trajectory that ends in between keeps that raw value (as the original does).
    """
    gripper = np.asarray(gripper, dtype=np.float32)
    if gripper.ndim != 1:
        raise ValueError(f"expected the gripper column [T], got shape {gripper.shape}")
    out = np.empty_like(gripper)
    if gripper.size == 0:
        return out
    carry = gripper[-1]
    for i in range(gripper.shape[0] - 1, -1, -1):
        value = gripper[i]
        if value > 0.95:
            carry = np.float32(1.0)
        elif value < 0.05:
            carry = np.float32(0.0)
        out[i] = carry
    return out


def bridge_transform(episode: Episode) -> Episode:
    """Apply the original ``bridge_orig`` transform; the result is 2 steps shorter.

    The returned metadata records ``raw_step_offset`` = 1: frame t was raw step t + 1.
    """
    t = len(episode)
    if t < 3:
        raise ValueError(f"a Bridge episode needs at least 3 steps for the transform, got {t}")
    if episode.states.shape[1] < 7 or episode.actions.shape[1] != 7:
        raise ValueError(
            f"expected states [T, 7] (xyz, euler, gripper) and actions [T, 7], got {episode.states.shape} and {episode.actions.shape}"
        )
    images, states, actions = episode.images[1:], episode.states[1:], episode.actions[1:]
    gripper = binarize_gripper_actions(actions[:, -1])
    movement = states[1:, :6] - states[:-1, :6]
    new_actions = np.concatenate([movement, gripper[:-1, None]], axis=1).astype(np.float32)
    metadata = dict(episode.metadata)
    metadata[RAW_OFFSET_KEY] = int(metadata.get(RAW_OFFSET_KEY, 0)) + 1
    ground_truth = episode.ground_truth
    if ground_truth is not None:
        ground_truth = replace(
            ground_truth,
            object_boxes=ground_truth.object_boxes[1:-1],
            object_visible=ground_truth.object_visible[1:-1],
            object_poses=ground_truth.object_poses[1:-1],
            gripper_points=ground_truth.gripper_points[1:-1],
            gripper_visible=ground_truth.gripper_visible[1:-1],
            gripper_open=ground_truth.gripper_open[1:-1],
        )
    return Episode(
        images=images[:-1],
        states=states[:-1],
        actions=new_actions,
        instruction=episode.instruction,
        metadata=metadata,
        ground_truth=ground_truth,
    )


def reasoning_step(frame_index: int, raw_offset: int = 0, join: str = "aligned") -> int:
    """The reasoning entry (step key) a frame is joined with.

    ``original``: the frame's own index after the transform (reproduces the released data's
    one-step offset); ``aligned``: the frame's raw step, ``frame_index + raw_offset``.
    """
    if join not in JOIN_MODES:
        raise ValueError(f"unknown join mode {join!r}; expected one of {JOIN_MODES}")
    return frame_index if join == "original" else frame_index + raw_offset
