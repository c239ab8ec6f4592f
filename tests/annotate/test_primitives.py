"""Move primitives against an independent, literal, per-step rendering of docs/formats.md
("Move primitives"), written in tests/annotate/reference_primitives.py and sharing no code with
ecot.annotate.primitives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ecot.annotate.primitives import describe, label_trajectory, label_trajectory_per_step, move_vectors

from reference_primitives import ref_label  # the tests' own oracle


def test_documented_example():
    states = np.zeros((2, 7), dtype=np.float32)
    states[1] = [0.05, -0.04, 0, 0, 0, 0, -1]
    (d0, v0), (d1, v1) = label_trajectory(states)
    assert d0 == "move forward right, close gripper"
    assert list(v0) == [1, -1, 0, 0, 0, 0, -1]
    assert d1 == d0 and list(v1) == list(v0)


def test_scaling_keeps_only_dominant_axis():
    states = np.zeros((2, 7), dtype=np.float32)
    states[1, :3] = [0.5, 0.02, 0.0]  # after scaling to sum 0.09: x ≈ 0.0865, y ≈ 0.0035
    assert label_trajectory(states)[0][0] == "move forward"


def test_roll_pitch_merge_modifies_vector_and_order():
    states = np.zeros((2, 7), dtype=np.float32)
    states[1] = [0, 0, 0.05, 0, -0.5, 0.5, 1]  # pitch -0.05 after /10, yaw +0.05
    desc, vec = label_trajectory(states)[0]
    assert desc == "move up, tilt down, rotate counterclockwise, open gripper"
    assert vec[3] == -1 and vec[4] == -1


def test_window_is_four_states():
    states = np.zeros((6, 7), dtype=np.float32)
    states[3:, 0] = 0.05  # reached at step 3: visible from windows starting at 0..2 but not later
    labels = [d for d, _ in label_trajectory(states)]
    assert labels == ["move forward"] * 3 + ["stop"] * 3


def test_short_and_bad_inputs():
    assert label_trajectory(np.zeros((0, 7))) == []
    assert [d for d, _ in label_trajectory(np.zeros((1, 7)))] == ["stop"]
    with pytest.raises(ValueError, match=r"\[T, 7\]"):
        move_vectors(np.zeros((5, 6)))


@settings(max_examples=150, deadline=None)
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(2, 12), st.just(7)),
        elements=st.one_of(
            st.floats(-0.25, 0.25, width=32),
            st.sampled_from([0.0, 0.03, -0.03, 0.09, 0.3, -0.3, 1.0]),
        ),
    )
)
def test_matches_reference_on_random_trajectories(states):
    want = ref_label(states.copy())
    for got in (label_trajectory(states), label_trajectory_per_step(states)):  # vectorized and per-step
        assert [d for d, _ in got] == [d for d, _ in want]
        assert np.array_equal(np.stack([v for _, v in got]), np.stack([v for _, v in want]))


def test_matches_reference_float64_random_walks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        states = np.cumsum(rng.normal(0, 0.02, size=(rng.integers(2, 40), 7)), axis=0)
        want = ref_label(states.copy())
        for got in (label_trajectory(states), label_trajectory_per_step(states)):
            assert [d for d, _ in got] == [d for d, _ in want]


def test_describe_all_words():
    assert describe([0, 0, 0, 0, 0, 0, 0]) == "stop"
    assert describe([-1, 1, -1, 1, 0, -1, 1]) == "move backward left down, tilt up, rotate clockwise, open gripper"


def test_commanded_moves_describe_the_actions_not_the_noise_that_was_executed():
    from ecot.annotate.primitives import commanded_move_vectors, describe_all

    rng = np.random.default_rng(0)
    actions = np.zeros((12, 7))
    actions[:6, 1] = 0.02  # six steps left, then six forward; the gripper stays closed
    actions[6:, 0] = 0.02
    clean = np.zeros((13, 7))
    clean[1:, :6] = np.cumsum(actions[:, :6], axis=0)
    # Without noise the commanded moves are the executed ones wherever a window holds one action.
    assert describe_all(commanded_move_vectors(clean[:12], actions))[:3] == describe_all(move_vectors(clean[:12]))[:3]
    assert describe_all(commanded_move_vectors(clean[:12], actions)) == ["move left"] * 6 + ["move forward"] * 6
    # Executed with 2 cm of noise per step, proprioception mislabels steps; the commands do not change.
    noisy = clean.copy()
    noisy[1:, :2] += np.cumsum(rng.normal(0, 0.02, (12, 2)), axis=0)
    executed = describe_all(move_vectors(noisy[:12]))
    assert executed != ["move left"] * 6 + ["move forward"] * 6
    assert describe_all(commanded_move_vectors(noisy[:12], actions)) == ["move left"] * 6 + ["move forward"] * 6
    with pytest.raises(ValueError, match="states and actions must both be \\[T, 7\\]"):
        commanded_move_vectors(noisy[:12], actions[:, :6])


def test_parse_move_inverts_describe():
    from ecot.annotate.primitives import _description_table, describe, parse_move

    for text in set(_description_table()):
        assert describe(parse_move(text)) == text
    assert parse_move("Move LEFT, close gripper.").tolist() == [0, 1, 0, 0, 0, 0, -1]
    assert parse_move("juggle") is None
