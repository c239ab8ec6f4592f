"""ecot.actions: the original discretization, its edges, and normalization statistics."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecot.actions import (
    ActionTokenizer,
    ArrayStats,
    DatasetStats,
    NormStats,
    compute_dataset_stats,
    eef_delta_mask,
)

FIXTURES = Path(__file__).parent / "fixtures" / "released"


@pytest.fixture
def tok():
    return ActionTokenizer(vocab_size=32000)


def test_ids_fall_in_the_last_256_of_the_vocabulary(tok):
    ids = tok.encode(np.linspace(-1.5, 1.5, 1001))
    assert ids.min() == 31744 and ids.max() == 31999
    assert tok.first_id == 31744 and tok.last_id == 31999


def test_edges_of_the_original_discretization(tok):
    # digitize(-1) == 1 -> 31999; digitize(1) == 256 -> 31744; out of range clipped first.
    assert tok.encode([-1.0, -7.0]).tolist() == [31999, 31999]
    assert tok.encode([1.0, 3.0]).tolist() == [31744, 31744]
    assert tok.encode([0.0]).tolist() == [32000 - np.digitize(0.0, np.linspace(-1, 1, 256))]
    # The top id and its neighbour share the last bin center; the lowest id decodes to the first center.
    centers = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    assert tok.decode([31744]) == pytest.approx(centers[-1])
    assert tok.decode([31745]) == pytest.approx(centers[-1])
    assert tok.decode([31999]) == pytest.approx(centers[0])


def test_reference_formula_on_random_actions(tok):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.2, 1.2, size=(500, 7))
    bins = np.linspace(-1, 1, 256)
    expected = 32000 - np.digitize(np.clip(actions, -1, 1), bins)
    np.testing.assert_array_equal(tok.encode(actions), expected)
    centers = (bins[:-1] + bins[1:]) / 2
    np.testing.assert_allclose(tok.decode(expected), centers[np.clip(32000 - expected - 1, 0, 254)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=7))
def test_decode_encode_is_within_one_bin(values):
    tok = ActionTokenizer(32000)
    decoded = tok.decode(tok.encode(values))
    assert np.all(np.abs(decoded - np.asarray(values)) <= 2.0 / 255 + 1e-9)


def test_decode_rejects_non_action_ids(tok):
    with pytest.raises(ValueError, match=r"not action token ids: \[2, 32000\]"):
        tok.decode([31800, 2, 32000])


def test_encode_rejects_nan(tok):
    with pytest.raises(ValueError, match="finite"):
        tok.encode([0.1, float("nan")])


def test_constructor_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        ActionTokenizer(100)
    with pytest.raises(ValueError, match="max_action"):
        ActionTokenizer(32000, min_action=1, max_action=1)


# ------------------------------------------------------------------ normalization


def test_normalize_follows_bounds_q99_and_mask():
    stats = ArrayStats(
        mean=[0, 0, 0.5], std=[1, 1, 0.5], min=[-1, -2, 0], max=[1, 2, 1], q01=[-0.5, -1, 0], q99=[0.5, 1, 1], mask=[True, True, False]
    )
    out = stats.normalize([[0.25, 3.0, 1.0], [-0.5, 0.0, 0.0]])
    np.testing.assert_allclose(out, [[0.5, 1.0, 1.0], [-1.0, 0.0, 0.0]], atol=1e-6)
    back = stats.unnormalize([[0.5, -1.0, 0.0]])
    np.testing.assert_allclose(back, [[0.25, -1.0, 0.0]])


def test_unnormalize_inverts_normalize_inside_the_bounds():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(1000, 7))
    stats = ArrayStats.from_array(data, mask=eef_delta_mask())
    inside = np.clip(data, stats.q01, stats.q99)
    np.testing.assert_allclose(stats.unnormalize(stats.normalize(inside)), inside, atol=1e-6)


def test_wrong_dimension_is_a_clear_error():
    stats = ArrayStats.from_array(np.zeros((4, 7)))
    with pytest.raises(ValueError, match="last dimension is 7"):
        stats.normalize(np.zeros(6))
    with pytest.raises(ValueError, match="mask has 6 values, expected 7"):
        ArrayStats.from_array(np.zeros((4, 7)), mask=[True] * 6)


def test_compute_stats_matches_numpy():
    rng = np.random.default_rng(2)
    episodes = [rng.normal(size=(n, 7)) for n in (5, 9, 13)]
    states = [rng.normal(size=(n, 7)) for n in (5, 9, 13)]
    stats = compute_dataset_stats(episodes, states, action_mask=eef_delta_mask())
    flat = np.concatenate(episodes)
    np.testing.assert_allclose(stats.action.q01, np.quantile(flat, 0.01, axis=0))
    np.testing.assert_allclose(stats.action.q99, np.quantile(flat, 0.99, axis=0))
    np.testing.assert_allclose(stats.action.mean, flat.mean(0))
    assert stats.num_transitions == 27 and stats.num_trajectories == 3
    assert stats.action.mask.tolist() == [True] * 6 + [False]
    with pytest.raises(ValueError, match="zero episodes"):
        compute_dataset_stats([])


def test_released_config_norm_stats_load_and_round_trip(tmp_path):
    config = json.loads((FIXTURES / "ecot7b_siglip_vicuna_config.json").read_text())
    norm = NormStats.from_dict(config["norm_stats"])
    assert norm.keys() == ["bridge_orig"]
    assert norm.to_dict() == config["norm_stats"]  # same structure, key order and values
    assert list(json.dumps(norm.to_dict())) == list(json.dumps(config["norm_stats"]))
    norm.save(tmp_path / "stats.json")
    assert NormStats.load(tmp_path / "stats.json").to_dict() == config["norm_stats"]
    # A whole config.json loads too.
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert NormStats.load(tmp_path / "config.json").keys() == ["bridge_orig"]


def test_unknown_key_lists_the_valid_ones():
    stats = DatasetStats(action=ArrayStats.from_array(np.zeros((3, 7))))
    norm = NormStats({"bridge_orig": stats, "sim_tabletop": stats})
    with pytest.raises(KeyError, match=r"unknown dataset key 'nope'; valid keys: \['bridge_orig', 'sim_tabletop'\]"):
        norm.get("nope")
    with pytest.raises(KeyError, match="pass unnorm_key"):
        norm.get(None)
    assert NormStats({"only": stats}).resolve_key(None) == "only"


def test_malformed_stats_are_clear_errors():
    with pytest.raises(ValueError, match="no 'action' entry"):
        NormStats.from_dict({"x": {"proprio": {}}})
    with pytest.raises(ValueError, match=r"lacks \['q01', 'q99'\]"):
        NormStats.from_dict({"x": {"action": {"mean": [0], "std": [1], "min": [0], "max": [1]}}})
