"""The action bins that agree with a written MOVE (``PolicyConfig.action_follows_move``).

A MOVE names the directions of the motion that follows ("move left", "move forward right", "stop"): the
annotator's primitive of the commanded action held over its window (``ecot.annotate.primitives``,
``--moves-from actions``). With a MOVE fixed before the action is decoded (the move head's, or a person's
edit), the policy can keep each translation dimension's action token among the bins that say the same:

* an axis the MOVE names: the bins whose unnormalized value moves that way by more than the primitive's
  threshold spread over its window (``THRESHOLD / (WINDOW - 1)`` per step);
* an axis it does not name: the bins within that threshold of standing still.

Rotations and the gripper are left to the model (their words depend on the state, not on the action
alone). The primitive's normalization over the three axes makes this per-axis reading an approximation
for moves along several axes at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecot.annotate.primitives import THRESHOLD, WINDOW, parse_move

TRANSLATION_DIMS = 3  # x, y, z: the first three action dimensions (Bridge's and the built-in sim's convention)
STEP_THRESHOLD = THRESHOLD / (WINDOW - 1)  # a move's per-step size at the primitive's threshold, m


def move_signs(move: str) -> tuple[int, int, int] | None:
    """The (x, y, z) direction signs a MOVE text names (None: not a MOVE the annotator writes)."""
    vec = parse_move(move)
    return None if vec is None else (int(vec[0]), int(vec[1]), int(vec[2]))


def allowed_action_bins(move: str, stats: Any, bin_centers: np.ndarray) -> list[np.ndarray | None]:
    """Per action dimension, the indices of the bins (of ``bin_centers``, normalized values) that agree with
    ``move`` under ``stats`` (the dataset's action statistics); None where the dimension is left free (rotations,
    the gripper, an unknown MOVE, or no bin that agrees)."""
    dim = int(getattr(stats, "dim", 7))
    out: list[np.ndarray | None] = [None] * dim
    signs = move_signs(move)
    if signs is None or stats is None:
        return out
    values = stats.unnormalize(np.repeat(np.asarray(bin_centers, dtype=np.float64)[:, None], dim, axis=1))
    for axis in range(min(TRANSLATION_DIMS, dim)):
        v, sign = values[:, axis], signs[axis]
        ok = v * sign > STEP_THRESHOLD if sign else np.abs(v) <= STEP_THRESHOLD
        if ok.any():
            out[axis] = np.flatnonzero(ok)
    return out
