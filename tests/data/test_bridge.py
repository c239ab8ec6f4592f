"""ecot.data.bridge: the original bridge_orig transform and the reasoning join offset."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecot.data.bridge import binarize_gripper_actions, bridge_transform, reasoning_step
from ecot.data.episode import Episode


def reference_binarize(actions):
    """The original scan, as its docstring states it."""
    actions = np.asarray(actions, dtype=np.float32)
    open_mask, closed_mask = actions > 0.95, actions < 0.05
    in_between = ~(open_mask | closed_mask)
    new = np.empty_like(actions)
    carry = actions[-1]
    for i in reversed(range(actions.shape[0])):
        carry = carry if in_between[i] else float(open_mask[i])
        new[i] = carry
    return new


def test_binarize_examples():
    np.testing.assert_array_equal(binarize_gripper_actions([1.0, 0.5, 0.3, 0.0, 0.0, 0.7, 1.0]), [1, 0, 0, 0, 0, 1, 1])
    # Ending in between: the raw last value is carried.
    np.testing.assert_allclose(binarize_gripper_actions([1.0, 0.6, 0.4]), [1.0, 0.4, 0.4])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.01, 0.04, 0.05, 0.3, 0.5, 0.95, 0.96, 1.0]), min_size=1, max_size=30))
def test_binarize_equals_reference(values):
    np.testing.assert_array_equal(binarize_gripper_actions(values), reference_binarize(values))


def make_episode(t=6):
    rng = np.random.default_rng(0)
    states = np.cumsum(rng.normal(size=(t, 7)), axis=0).astype(np.float32)
    actions = rng.normal(size=(t, 7)).astype(np.float32)
    actions[:, -1] = [1.0, 1.0, 0.5, 0.0, 0.0, 1.0][:t] if t <= 6 else rng.choice([0.0, 1.0], size=t)
    images = np.arange(t, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    return Episode(images=images, states=states, actions=actions, instruction="put the carrot on the plate",
                   metadata={"file_path": "f", "episode_id": "0"})


def test_transform_drops_first_and_last_and_relabels():
    ep = make_episode()
    out = bridge_transform(ep)
    assert len(out) == len(ep) - 2
    # Frame t is raw step t + 1.
    assert [int(img[0, 0, 0]) for img in out.images] == [1, 2, 3, 4]
    np.testing.assert_allclose(out.states, ep.states[1:-1])
    np.testing.assert_allclose(out.actions[:, :6], ep.states[2:, :6] - ep.states[1:-1, :6], atol=1e-6)
    # Raw gripper [1, 1, 0.5, 0, 0, 1]: drop the first step -> [1, 0.5, 0, 0, 1]; the in-between 0.5 takes
    # the next step's closed 0 -> [1, 0, 0, 0, 1]; drop the last step -> [1, 0, 0, 0] (worked out by hand).
    np.testing.assert_array_equal(out.actions[:, 6], [1, 0, 0, 0])
    assert out.metadata["raw_step_offset"] == 1 and ep.metadata.get("raw_step_offset") is None


def test_transform_rejects_short_episodes():
    with pytest.raises(ValueError, match="at least 3 steps"):
        bridge_transform(make_episode(2))


def test_reasoning_join_modes():
    # Released data: frame t (raw step t + 1) got reasoning entry t.
    assert reasoning_step(0, raw_offset=1, join="original") == 0
    assert reasoning_step(0, raw_offset=1, join="aligned") == 1
    assert reasoning_step(5, raw_offset=0) == 5
    with pytest.raises(ValueError, match="unknown join mode"):
        reasoning_step(0, join="shifted")
