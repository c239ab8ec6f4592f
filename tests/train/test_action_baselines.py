"""Held-out action metrics beside the trivial predictors, checked on hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from ecot.actions import ActionTokenizer, ArrayStats
from ecot.train.metrics import action_baselines


def test_majority_and_zero_motion_baselines_on_hand_worked_steps():
    tok = ActionTokenizer(vocab_size=1000)
    # Identity normalization: stats whose q01/q99 are -1/1 on every dimension.
    ones = np.ones(7)
    stats = ArrayStats(mean=0 * ones, std=ones, min=-ones, max=ones, q01=-ones, q99=ones)
    a, b = tok.first_id + 10, tok.first_id + 200  # two bins
    va, vb = float(tok.decode(a)), float(tok.decode(b))
    true_ids = np.array([[a] * 7, [a] * 7, [b] * 7])  # token a is the majority of every dimension
    truth = np.array([[va] * 7, [va] * 7, [vb] * 7])
    pred_ids = np.array([[b] * 7, [a] * 7, [b] * 7])  # right on 2 of 3 steps
    out = action_baselines(pred_ids, true_ids, truth, tok, stats)
    assert out["steps"] == 3
    assert out["action_accuracy"] == pytest.approx(2 / 3) and out["action_accuracy_dx"] == pytest.approx(2 / 3)
    assert out["majority_action_accuracy"] == pytest.approx(2 / 3)
    gap = abs(va - vb)
    assert out["action_l1"] == pytest.approx(gap / 3)  # wrong on the first step only
    assert out["majority_action_l1"] == pytest.approx(gap / 3)  # wrong on the last step only
    # Zero motion: 0 on the six motion dimensions, the majority value on the gripper.
    motion = (2 * abs(va) + abs(vb)) / 3
    assert out["zero_motion_action_l1_dx"] == pytest.approx(motion)
    assert out["zero_motion_action_l1_gripper"] == pytest.approx(gap / 3)
    assert out["zero_motion_action_l1"] == pytest.approx((6 * motion + gap / 3) / 7)
    assert "zero_motion_action_accuracy" not in out


def test_a_prediction_outside_the_action_range_counts_at_the_nearest_bin():
    tok = ActionTokenizer(vocab_size=1000)
    ones = np.ones(7)
    stats = ArrayStats(mean=0 * ones, std=ones, min=-ones, max=ones, q01=-ones, q99=ones)
    true_ids = np.full((1, 7), tok.first_id)
    truth = tok.decode(true_ids)
    out = action_baselines(np.full((1, 7), 5), true_ids, truth, tok, stats)  # a text id, below the range
    assert out["action_accuracy"] == 0 and out["action_l1"] == pytest.approx(0.0)
