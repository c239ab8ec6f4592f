"""The validation report finds what is wrong, not only what is right."""

from __future__ import annotations

import numpy as np

from ecot.annotate.pipeline import AnnotateConfig, annotate_episode, build_stages
from ecot.annotate.validate import episode_checks, primitive_action_agreement, validation_report
from ecot.data.features import FeaturesWriter

from annotate_synthetic import pick_place_episode


def write(path, entries):
    with FeaturesWriter(path) as w:
        for i, e in enumerate(entries):
            w.add("fp", str(i), e)
    return path


def test_good_and_broken_files(tmp_path):
    stages = build_stages(AnnotateConfig())
    episodes = [pick_place_episode(seed=s) for s in range(2)]
    entries = [annotate_episode(e, stages) for e in episodes]
    checks = [episode_checks(e, x) for e, x in zip(episodes, entries)]
    good = validation_report(write(tmp_path / "good.json", entries), checks)
    assert good["complete"] and good["consistency"]["primitive_action_agreement"] == 1.0
    assert good["consistency"]["gripper_error_px_mean"] < 0.5

    broken = [dict(e, features=dict(e["features"]), reasoning=dict(e["reasoning"])) for e in entries]
    del broken[0]["reasoning"]["3"]
    broken[1]["features"]["bboxes"] = [[[1.0, "x", [0, 0, 40, 40]]]] + broken[1]["features"]["bboxes"][1:]
    report = validation_report(write(tmp_path / "bad.json", broken), checks)
    assert not report["complete"]
    assert report["coverage"]["reasoning"] < 1.0 and any("step 3" in p for p in report["problems"])
    assert report["consistency"]["boxes_inside_image"] < 1.0


def test_agreement_detects_reversed_actions():
    episode = pick_place_episode(seed=4)
    entry = annotate_episode(episode, build_stages(AnnotateConfig()))
    vectors = np.asarray(entry["features"]["move_vector"])
    a, c = primitive_action_agreement(vectors, episode.actions)
    assert a == c > 10
    flipped = episode.actions.copy()
    flipped[:, :3] *= -1
    flipped[:, 6] = 1 - flipped[:, 6]
    a, c = primitive_action_agreement(vectors, flipped)
    assert a == 0
