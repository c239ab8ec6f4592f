"""benchmarks/action_head_probe.py: each head decodes through ecot's own action bins, and learns."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.action_head_probe import HEADS, fractional_steps, train_head
from benchmarks.chain_sufficiency import load_steps


@pytest.fixture(scope="module")
def chain_steps(tmp_path_factory):
    pytest.importorskip("ecot.sim.env")
    from ecot.sim.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("action_head_probe") / "ds"
    collect(out, CollectConfig(task="push", episodes=12, image_size=48, num_objects=2, expert_style="axis",
                               stop_at_success=True, start="table"), progress=False)
    inputs, _, actions, episode = load_steps(out, "chain")
    return inputs, actions, episode < 9


def test_fractional_steps_are_the_partial_moves_only():
    a = np.array([[0.0, 0.04], [0.03, -0.021], [0.0035, 0.0101], [-0.039, 0.002]])
    np.testing.assert_array_equal(fractional_steps(a), [[False, False], [False, True], [False, True], [False, False]])


@pytest.mark.parametrize("head", HEADS)
def test_each_head_fits_its_training_steps_better_than_zero_motion(chain_steps, head):
    inputs, actions, train = chain_steps
    act, seconds = train_head(head, inputs, actions, train, steps=400, batch_size=64, sigma=5.0, lr=3e-3)
    predicted = np.stack([act(x) for x in inputs[train]])
    assert predicted.shape == (int(train.sum()), 4) and seconds > 0
    error = np.abs(predicted - actions[train])[:, :2].mean()
    assert error < 0.5 * np.abs(actions[train])[:, :2].mean(), (head, error)
    if head in ("bins", "hl-gauss"):  # greedy heads write bin centres of ecot's tokenizer, never between them
        from ecot.actions import ActionTokenizer, ArrayStats

        stats = ArrayStats.from_array(actions[train])
        centres = stats.unnormalize(np.repeat(ActionTokenizer(257).bin_centers[:, None], 4, 1))
        for d in (0, 1):
            assert np.all(np.min(np.abs(predicted[:, d, None] - centres[None, :, d]), 1) < 1e-6)
