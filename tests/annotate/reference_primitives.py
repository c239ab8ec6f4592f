"""The move-primitive algorithm written literally from docs/formats.md ("Move primitives"), step by
step: the tests' oracle for ecot.annotate.primitives, sharing no code with it."""

from __future__ import annotations

import numpy as np


def ref_label(states, threshold=0.03):
    """The original algorithm as docs/formats.md states it, step by step (the test's own oracle)."""
    states = np.array(states, copy=True)
    labels = []
    for t in range(len(states) - 1):
        window = states[t : t + 4]
        diff = window[-1] - window[0]  # in the states' own dtype, as the original
        total = np.sum(np.abs(diff[:3]))
        if total > 3 * threshold:
            diff[:3] = diff[:3] * (3 * threshold / total)
        diff[3:6] = diff[3:6] / 10
        v = np.zeros(7, dtype=np.int64)
        for i in range(7):
            if diff[i] > threshold:
                v[i] = 1
            elif diff[i] < -threshold:
                v[i] = -1
        translation = []
        if v[0]:
            translation.append("forward" if v[0] > 0 else "backward")
        if v[1]:
            translation.append("left" if v[1] > 0 else "right")
        if v[2]:
            translation.append("up" if v[2] > 0 else "down")
        parts = ["move " + " ".join(translation)] if translation else []
        if v[3] == 0:
            v[3] = v[4]  # roll and pitch merged, in the returned vector too
        if v[3]:
            parts.append("tilt up" if v[3] > 0 else "tilt down")
        if v[5]:
            parts.append("rotate counterclockwise" if v[5] > 0 else "rotate clockwise")
        if v[6]:
            parts.append("open gripper" if v[6] > 0 else "close gripper")
        labels.append((", ".join(parts) or "stop", v))
    return labels + labels[-1:]  # the last step repeats the previous label
