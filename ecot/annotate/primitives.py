"""Move primitives from proprioception, with exactly the original ECoT semantics (docs/formats.md §6).

For every step t < T-1 the window is ``states[t : t+4]`` (shorter at the end) and
``diff = window[-1] - window[0]``. If the summed absolute translation exceeds ``3 * threshold``
it is rescaled to exactly that sum; the rotation part is divided by 10; each dimension is then
classified as -1 / 0 / +1 against ``threshold``. When roll is 0 it takes pitch's value (the
original merges roll and pitch by writing into the returned vector). The last step repeats the
previous label.

Everything is computed for all steps at once with numpy, in the dtype of the input (float32 for
our episodes), doing the same floating-point operations in the same order as the original
per-step code so that the labels agree bit for bit at the thresholds.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.03
WINDOW = 4

_XYZ_WORDS = (("backward", "forward"), ("right", "left"), ("down", "up"))
_TILT_WORDS = ("tilt down", "tilt up")
_ROTATE_WORDS = ("rotate clockwise", "rotate counterclockwise")
_GRIPPER_WORDS = ("close gripper", "open gripper")


def move_vectors(states: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """The [T, 7] int move vectors (values -1, 0, 1), roll/pitch already merged into column 3.

    ``states`` is [T, 7] (x, y, z, roll, pitch, yaw, gripper). Row T-1 repeats row T-2.
    A single-step episode gets one all-zero vector ("stop"); the original code fails there.
    """
    s = np.asarray(states)
    if s.ndim != 2 or s.shape[1] != 7:
        raise ValueError(f"states must be [T, 7] (x, y, z, roll, pitch, yaw, gripper), got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    t = s.shape[0]
    if t == 0:
        return np.zeros((0, 7), dtype=np.int64)
    if t == 1:
        return np.zeros((1, 7), dtype=np.int64)
    start = np.arange(t - 1)
    end = np.minimum(start + (WINDOW - 1), t - 1)
    diff = s[end] - s[start]  # [T-1, 7], same dtype as states

    a = np.abs(diff[:, :3])
    xyz_sum = (a[:, 0] + a[:, 1]) + a[:, 2]  # np.sum over 3 elements adds left to right
    limit = 3 * threshold
    big = xyz_sum > limit
    if big.any():
        # The original computes ``3 * threshold / sum`` as a scalar of the array's dtype.
        factor = np.asarray(limit, dtype=s.dtype) / xyz_sum[big]
        diff[big, :3] *= factor[:, None]
    diff[:, 3:6] /= 10

    vec = (diff > threshold).astype(np.int64) - (diff < -threshold).astype(np.int64)
    roll_zero = vec[:, 3] == 0
    vec[roll_zero, 3] = vec[roll_zero, 4]
    return np.concatenate([vec, vec[-1:]], axis=0)


def commanded_move_vectors(states: np.ndarray, actions: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Move vectors of what each step *commanded*: step t's action held for the window from state t.

    ``move_vectors`` describes the executed motion (proprioception), which in recovery data (``ecot sim
    collect --action-noise``) carries the noise the expert did not intend. ``actions`` is [T, 7]: deltas of
    the state's first six values and the gripper's target opening (the built-in sim's and Bridge's convention).
    """
    s, a = np.asarray(states, dtype=np.float64), np.asarray(actions, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 7 or a.shape != s.shape:
        raise ValueError(f"states and actions must both be [T, 7], got shapes {s.shape} and {a.shape}")
    out = np.zeros((len(s), 7), dtype=np.int64)
    for t in range(len(s)):
        window = np.repeat(s[t : t + 1], WINDOW, axis=0)
        window[:, :6] += np.arange(WINDOW)[:, None] * a[t, :6]
        window[1:, 6] = a[t, 6]  # the gripper reaches its target opening at once
        out[t] = move_vectors(window, threshold)[0]
    return out


def describe(vec) -> str:
    """The words for one (merged) move vector, in the original order; nothing moving → "stop"."""
    parts = []
    xyz = [_XYZ_WORDS[i][(int(vec[i]) + 1) // 2] for i in range(3) if vec[i] != 0]
    if xyz:
        parts.append("move " + " ".join(xyz))
    if vec[3] != 0:
        parts.append(_TILT_WORDS[(int(vec[3]) + 1) // 2])
    if vec[5] != 0:
        parts.append(_ROTATE_WORDS[(int(vec[5]) + 1) // 2])
    if vec[6] != 0:
        parts.append(_GRIPPER_WORDS[(int(vec[6]) + 1) // 2])
    return ", ".join(parts) if parts else "stop"


def _code(vec: np.ndarray) -> np.ndarray:
    """Each merged move vector as one integer in base 3 over dims 0,1,2,3,5,6 (dim 4 is unused)."""
    digits = vec[:, [0, 1, 2, 3, 5, 6]] + 1
    return digits @ (3 ** np.arange(6))


_DESCRIPTIONS: list[str] | None = None


def _description_table() -> list[str]:
    global _DESCRIPTIONS
    if _DESCRIPTIONS is None:
        table = []
        for code in range(3**6):
            d = [(code // 3**i) % 3 - 1 for i in range(6)]
            table.append(describe([d[0], d[1], d[2], d[3], 0, d[4], d[5]]))
        _DESCRIPTIONS = table
    return _DESCRIPTIONS


def parse_move(text: str) -> np.ndarray | None:
    """Inverse of :func:`describe`: the merged [7] move vector a description names ("move left, close
    gripper"), case, spacing and a trailing period ignored; None for text ``describe`` never writes."""
    global _PARSED
    if _PARSED is None:
        _PARSED = {}
        for code, description in enumerate(_description_table()):
            d = [(code // 3**i) % 3 - 1 for i in range(6)]
            _PARSED.setdefault(description, np.array([d[0], d[1], d[2], d[3], 0, d[4], d[5]], dtype=np.int64))
    vec = _PARSED.get(" ".join(str(text).lower().split()).strip(" ."))
    return None if vec is None else vec.copy()


_PARSED: dict[str, np.ndarray] | None = None


def describe_all(vectors: np.ndarray) -> list[str]:
    """``describe`` for every row of a [T, 7] merged move-vector array (table lookup)."""
    table = _description_table()
    return [table[c] for c in _code(np.asarray(vectors)).tolist()]


def label_trajectory(states: np.ndarray, threshold: float = THRESHOLD) -> list[tuple[str, np.ndarray]]:
    """Per step ``(description, move_vector)`` for a [T, 7] state trajectory (docs/formats.md §6)."""
    vec = move_vectors(states, threshold)
    return list(zip(describe_all(vec), list(vec)))


# The original's per-step words, indexed by direction -1 / 0 / +1 (index 4, pitch, is merged into roll).
_STEP_WORDS = [
    {-1: "backward", 0: None, 1: "forward"},
    {-1: "right", 0: None, 1: "left"},
    {-1: "down", 0: None, 1: "up"},
    {-1: "tilt down", 0: None, 1: "tilt up"},
    {},
    {-1: "rotate clockwise", 0: None, 1: "rotate counterclockwise"},
    {-1: "close gripper", 0: None, 1: "open gripper"},
]


def label_trajectory_per_step(states: np.ndarray, threshold: float = THRESHOLD) -> list[tuple[str, np.ndarray]]:
    """The original algorithm written per step, literally (slow): the reference the vectorized
    :func:`label_trajectory` is tested against and the baseline of the throughput benchmark."""

    def words(v):
        xyz = [_STEP_WORDS[i][v[i]] for i in range(3) if _STEP_WORDS[i][v[i]] is not None]
        text = "move " + " ".join(xyz) if xyz else ""
        if v[3] == 0:
            v[3] = v[4]  # the original merges pitch into roll in place
        for i in (3, 5, 6):
            if v[i] != 0:
                text = (text + ", " if text else "") + _STEP_WORDS[i][v[i]]
        return text or "stop"

    def classify(window):
        diff = window[-1] - window[0]
        if np.sum(np.abs(diff[:3])) > 3 * threshold:
            diff[:3] *= 3 * threshold / np.sum(np.abs(diff[:3]))
        diff[3:6] /= 10
        v = 1 * (diff > threshold) - 1 * (diff < -threshold)
        return words(v), v

    states = np.array(states, copy=True)
    out = [classify(states[i : i + WINDOW]) for i in range(len(states) - 1)]
    return out + out[-1:]
