"""benchmarks/chain_sufficiency.py: probes see in closed loop exactly what they were trained on."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.chain_sufficiency import load_steps, probe_inputs, probe_policy, task_code, train_probe


@pytest.fixture(scope="module")
def push_data(tmp_path_factory):
    pytest.importorskip("ecot.sim.env")
    from ecot.sim.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("chain_sufficiency") / "ds"
    collect(out, CollectConfig(task="push", episodes=16, image_size=48, num_objects=2, expert_style="axis",
                               stop_at_success=True), progress=False)
    return out


@pytest.mark.parametrize("probe", ["state", "chain", "chain+height"])
def test_inputs_from_stored_ground_truth_equal_those_read_live(push_data, probe):
    """Replaying a demonstration in the env, the policy's live inputs equal the training inputs of
    the same steps (a mismatch here silently turns a probe's closed loop into noise)."""
    from ecot.data import open_dataset
    from ecot.sim.env import SimConfig, TabletopEnv

    inputs, _, actions, episode = load_steps(push_data, probe)
    ep = open_dataset(push_data).episode(0)
    seen = []

    def remember(x, code):
        seen.append(x)
        return np.zeros(4, np.float32)

    policy = probe_policy(probe, remember)
    with TabletopEnv(SimConfig(image_size=48, num_objects=2)) as env:
        obs, _ = env.reset(seed=ep.metadata["seed"], task="push")
        policy.reset(env, 0)
        for t in range(len(ep.actions)):
            policy.act(obs, env.task.instruction)
            obs, *_ = env.step(ep.actions[t])
    stored = inputs[episode == 0]
    assert len(seen) == len(stored) and np.allclose(np.stack(seen), stored, atol=0.02), (np.stack(seen) - stored)
    assert np.allclose(actions[episode == 0], ep.actions[:, [0, 1, 2, 5]])


def test_state_probe_learns_beyond_zero_motion_and_runs_in_closed_loop(push_data):
    from benchmarks._common import closed_loop

    act, figures = train_probe("state", push_data, steps=300, heldout_fraction=0.25)
    assert figures["heldout_mse"] < figures["zero_motion_heldout_mse"], figures
    episode = load_steps(push_data, "state")[3]
    assert figures["heldout_frames"] == int((episode >= 12).sum())  # the last quarter of 16 episodes
    summary = closed_loop(probe_policy("state", act), "state", task="push", split="seen", episodes=1, seed=0,
                          max_steps=4, num_objects=2, image_size=48)
    assert summary["success"] in ("0/1", "1/1") and summary["episodes"][0]["steps"] == 4


def test_chain_inputs_carry_height_only_when_asked_and_bad_tasks_are_refused():
    code = task_code("the red block", "left")
    assert code.sum() == 3
    state = np.array([0.0, 0.1, 0.09, 0, 0, 0.3, 0.0], np.float32)
    box, point, xy = np.array([10.0, 20, 18, 30]), np.array([24.0, 12]), np.zeros(2)
    plain = probe_inputs("chain", state, box, point, xy, 48, code)
    tall = probe_inputs("chain+height", state, box, point, xy, 48, code)
    assert len(tall) == len(plain) + 1 and tall[8] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="push task"):
        task_code("the red spaceship", "left")
    with pytest.raises(ValueError, match="unknown probe"):
        probe_inputs("telepathy", state, box, point, xy, 48, code)
