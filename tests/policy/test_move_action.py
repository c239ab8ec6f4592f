"""The action follows a MOVE fixed in advance (ecot.policy.move_action, PolicyConfig.action_follows_move)."""

from __future__ import annotations

import numpy as np
import pytest

from ecot.actions import ActionTokenizer, ArrayStats
from ecot.annotate.primitives import commanded_move_vectors, describe_all
from ecot.policy.move_action import STEP_THRESHOLD, allowed_action_bins, move_signs

STATS = ArrayStats(mean=[0.0] * 7, std=[1.0] * 7, min=[-1.0] * 7, max=[1.0] * 7, q01=[-0.05] * 6 + [0.0],
                   q99=[0.05] * 6 + [1.0], mask=[True] * 6 + [False])
CENTERS = ActionTokenizer(1000).bin_centers


def test_move_texts_name_their_directions():
    assert move_signs("move left") == (0, 1, 0)
    assert move_signs("move forward right down, close gripper") == (1, -1, -1)
    assert move_signs("Stop.") == (0, 0, 0)
    assert move_signs("tilt up") == (0, 0, 0)
    assert move_signs("wave hello") is None


@pytest.mark.parametrize("move", ["move left", "move backward right", "stop", "move forward down"])
def test_every_allowed_action_is_described_by_its_move(move):
    bins = allowed_action_bins(move, STATS, CENTERS)
    assert all(b is None for b in bins[3:])  # rotations and the gripper are free
    values = STATS.unnormalize(np.repeat(CENTERS[:, None], 7, axis=1))
    signs = move_signs(move)
    for axis in range(3):
        v = values[bins[axis], axis]
        assert len(v) and len(v) < len(CENTERS)
        assert (v * signs[axis] > STEP_THRESHOLD).all() if signs[axis] else (np.abs(v) <= STEP_THRESHOLD).all()
    # the annotator's own label of such an action, held over its window: the same translation words
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = np.zeros(7)
        for axis in range(3):
            action[axis] = values[rng.choice(bins[axis]), axis]
        vector = commanded_move_vectors(np.zeros((1, 7)), action[None])
        if sum(map(abs, signs)) <= 1:  # one axis or none: exactly the MOVE
            assert describe_all(vector)[0] == move, action
        else:  # several: the primitive's scaling over the axes may drop the smaller ones, never turn them round
            assert all(vector[0, a] in (0, signs[a]) for a in range(3)), (action, vector)


def test_an_unknown_move_or_no_statistics_leave_the_action_free():
    assert allowed_action_bins("juggle", STATS, CENTERS) == [None] * 7
    assert allowed_action_bins("move left", None, CENTERS) == [None] * 7
