"""ecot.data.features: exact reasoning strings, streaming reads, safe writes."""

import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ecot.data.features as features_module
from ecot.data.features import (
    FeaturesFormatError,
    FeaturesWriter,
    ReasoningIndex,
    iter_feature_episodes,
    iter_reasoning_strings,
    step_reasoning_text,
)
from ecot.reasoning import Reasoning

TAGS = ["TASK:", "PLAN:", "VISIBLE OBJECTS:", "SUBTASK REASONING:", "SUBTASK:", "MOVE REASONING:", "MOVE:", "GRIPPER POSITION:"]
DB_KEYS = ["task", "plan", "bboxes", "subtask_reason", "subtask", "move_reason", "move", "gripper"]


def original_loader(raw: dict) -> dict:
    """The original ECoT loader's reasoning join, written out literally (the reference)."""
    out = {}
    for file_name in raw:
        for episode_id in raw[file_name]:
            if "reasoning" not in raw[file_name][episode_id]:
                continue
            for i in raw[file_name][episode_id]["reasoning"]:
                entry = dict(raw[file_name][episode_id]["reasoning"][i])
                feats = raw[file_name][episode_id]["features"]
                entry["gripper"] = ""
                if "gripper_position" in feats and feats["gripper_position"] is not None:
                    if 0 <= int(i) < len(feats["gripper_position"]):
                        future = []
                        for j in range(5):
                            if int(i) + j < len(feats["gripper_position"]):
                                future += feats["gripper_position"][int(i) + j]
                            else:
                                future += future[-2:]
                        entry["gripper"] = str(future)
                entry["bboxes"] = ""
                if "bboxes" in feats and feats["bboxes"] is not None:
                    if 0 <= int(i) < len(feats["bboxes"]) and len(feats["bboxes"][int(i)]) > 0:
                        entry["bboxes"] = ", ".join(f"{name} {box!s}" for _, name, box in feats["bboxes"][int(i)])
                joined = "@".join(f"{tag}@{entry[key]}" for tag, key in zip(TAGS, DB_KEYS))
                parts = joined.split("@")
                pairs = [(parts[k], parts[k + 1]) for k in range(0, len(parts), 2)]
                out[f"{file_name}_{episode_id}_{i}"] = " ".join(f"{t} {v}" for t, v in pairs)
    return out


def bridge_like_entry(steps: int = 3) -> dict:
    return {
        "reasoning": {
            str(i): {
                "task": "put the carrot on the plate",
                "plan": "grasp the carrot, move it to the plate, release it",
                "subtask": "grasp the carrot",
                "subtask_reason": "the carrot is not grasped yet",
                "move": "move down",
                "move_reason": "the carrot is below the gripper",
            }
            for i in range(steps)
        },
        "features": {
            "gripper_position": [[123, 45], [120, 50], [118, 55]][:steps],
            "bboxes": [[[0.91, "the carrot", [110, 90, 140, 121]], [0.8, "the plate", [30, 100, 90, 160]]]] * steps,
            "move_primitive": ["move down"] * steps,
        },
        "metadata": {"episode_id": 0},
    }


def write_json(path, raw):
    path.write_text(json.dumps(raw))
    return path


def test_formats_gripper_example(tmp_path):
    path = write_json(tmp_path / "f.json", {"/data/bridge/a": {"0": bridge_like_entry(3)}})
    rows = list(iter_reasoning_strings(path))
    assert [r[:3] for r in rows] == [("/data/bridge/a", "0", 0), ("/data/bridge/a", "0", 1), ("/data/bridge/a", "0", 2)]
    assert rows[0][3].endswith("GRIPPER POSITION: [123, 45, 120, 50, 118, 55, 118, 55, 118, 55]")
    assert "VISIBLE OBJECTS: the carrot [110, 90, 140, 121], the plate [30, 100, 90, 160] SUBTASK REASONING:" in rows[0][3]
    # Last step: its own point, then the padding repeats it.
    assert rows[2][3].endswith("GRIPPER POSITION: [118, 55, 118, 55, 118, 55, 118, 55, 118, 55]")
    # The string parses into the typed reasoning.
    parsed = Reasoning.parse(rows[0][3])
    assert parsed.problems == [] and parsed.gripper_positions[0] == (123, 45)


def test_missing_features_give_empty_fields_and_no_reasoning_is_skipped(tmp_path):
    raw = {
        "fp": {
            "0": {"reasoning": {"0": {"task": "t"}, "5": {"task": "u"}}, "features": {"gripper_position": None}},
            "1": {"features": {}, "metadata": {}},  # no reasoning key: skipped
            "2": {"reasoning": {"0": {"task": "v"}}, "features": {"bboxes": [[]], "gripper_positions": [[1, 2]]}},
        }
    }
    path = write_json(tmp_path / "f.json", raw)
    rows = {(ep, step): text for _, ep, step, text in iter_reasoning_strings(path)}
    assert set(rows) == {("0", 0), ("0", 5), ("2", 0)}
    assert rows[("0", 0)] == (
        "TASK: t PLAN:  VISIBLE OBJECTS:  SUBTASK REASONING:  SUBTASK:  MOVE REASONING:  MOVE:  GRIPPER POSITION: "
    )
    # The plural key the original generator wrote is not read by the loader.
    assert rows[("2", 0)].endswith("GRIPPER POSITION: ")


def test_join_key_and_frames_without_an_entry(tmp_path):
    """Frames join reasoning by the key f"{file_path}_{episode_id}_{step}"; a frame without an entry gets ""."""
    path = write_json(tmp_path / "f.json", {"/data/a": {"7": bridge_like_entry(2)}})
    index = ReasoningIndex.from_file(path)
    assert set(index.texts) == {"/data/a_7_0", "/data/a_7_1"}
    assert index.get("/data/a", "7", 1).startswith("TASK: put the carrot on the plate PLAN: ")
    assert index.get("/data/a", 7, 1) == index.get("/data/a", "7", 1)  # ids and steps as numbers or strings
    assert index.get("/data/a", "7", 2) == "" and index.get("/data/b", "7", 0) == ""


_name = st.text(alphabet="abc ,[]0123", min_size=1, max_size=8)
_box = st.lists(st.integers(0, 300), min_size=4, max_size=4)
_value = st.text(alphabet=st.characters(blacklist_characters="@", blacklist_categories=("Cs",)), max_size=12)


@st.composite
def episodes(draw):
    n = draw(st.integers(0, 8))
    reasoning = {
        str(i): {k: draw(_value) for k in draw(st.sets(st.sampled_from(["task", "plan", "subtask", "subtask_reason", "move", "move_reason"])))}
        for i in draw(st.sets(st.integers(0, 10), max_size=8))
    }
    for fields in reasoning.values():  # the original loader needs every key
        for key in ["task", "plan", "subtask", "subtask_reason", "move", "move_reason"]:
            fields.setdefault(key, "")
    feats = {}
    if draw(st.booleans()):
        feats["gripper_position"] = [[draw(st.integers(0, 255)), draw(st.integers(0, 255))] for _ in range(n)]
    if draw(st.booleans()):
        feats["bboxes"] = [
            [[draw(st.floats(0, 1)), draw(_name), draw(_box)] for _ in range(draw(st.integers(0, 3)))] for _ in range(n)
        ]
    entry = {"features": feats, "metadata": {}}
    if draw(st.booleans()) or reasoning:
        entry["reasoning"] = reasoning
    return entry


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.dictionaries(st.text("0123456789", min_size=1, max_size=3), episodes(), max_size=3), max_size=3))
def test_reasoning_strings_equal_the_original_loader(raw):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = write_json(Path(d) / "f.json", raw)
        ours = {f"{fp}_{ep}_{step}": text for fp, ep, step, text in iter_reasoning_strings(path)}
    assert ours == original_loader(raw)


def test_streaming_equals_json_load_with_tiny_chunks(tmp_path, monkeypatch):
    raw = {f"/data/{k}": {str(e): bridge_like_entry(e % 4 + 1) for e in range(5)} for k in range(4)}
    raw["/empty"] = {}
    path = tmp_path / "f.json"
    path.write_text(json.dumps(raw, indent=2))  # whitespace between members too
    original_init = features_module._JsonStream.__init__
    monkeypatch.setattr(
        features_module._JsonStream, "__init__", lambda self, h, p, chunk_chars=0: original_init(self, h, p, 7)
    )
    streamed = {}
    for fp, ep, entry in iter_feature_episodes(path):
        streamed.setdefault(fp, {})[ep] = entry
    raw.pop("/empty")
    assert streamed == raw


def test_empty_file_object(tmp_path):
    assert list(iter_feature_episodes(write_json(tmp_path / "f.json", {}))) == []


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"a": {"0": {"x": 1}', "expected ',' or '}'"),
        ('{"a": {"0": {"x": ', "truncated JSON"),
        ('{"a": [1, 2]}', "must be an object of episodes"),
        ('{"a": {"0": 5}}', "must be an object"),
        ("[]", "expected '{'"),
        ('{"a": {}} trailing', "unexpected data"),
    ],
)
def test_corrupt_files_are_named_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(FeaturesFormatError, match=message) as err:
        list(iter_feature_episodes(path))
    assert "bad.json" in str(err.value) and "character" in str(err.value)


def test_streaming_memory_stays_small(tmp_path, monkeypatch):
    # Memory is bounded by the read chunk plus one episode, whatever the file size.
    original_init = features_module._JsonStream.__init__
    monkeypatch.setattr(
        features_module._JsonStream, "__init__", lambda self, h, p, chunk_chars=0: original_init(self, h, p, 1 << 18)
    )
    path = tmp_path / "big.json"
    with FeaturesWriter(path) as writer:
        for k in range(400):
            writer.add(f"/data/traj{k // 10}", str(k % 10), bridge_like_entry(40))
    size = path.stat().st_size
    assert size > 5_000_000
    tracemalloc.start()
    count = sum(1 for _ in iter_reasoning_strings(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 400 * 40
    assert peak < size / 4, f"peak {peak} bytes while streaming a {size}-byte file"


def test_writer_round_trip_and_reasoning_index(tmp_path):
    path = tmp_path / "out" / "features.json"
    with FeaturesWriter(path) as writer:
        writer.add("fp1", 0, bridge_like_entry(2))
        writer.add("fp1", "1", bridge_like_entry(1))
        writer.add("fp2", 0, bridge_like_entry(1))
    raw = json.loads(path.read_text())
    assert list(raw) == ["fp1", "fp2"] and list(raw["fp1"]) == ["0", "1"]
    index = ReasoningIndex.from_file(path)
    assert len(index) == 4
    assert index.get("fp1", 1, 0) == step_reasoning_text(bridge_like_entry(1), "0")
    assert index.get("fp1", 9, 0) == ""


def test_writer_rejects_bad_input_without_leaving_a_file(tmp_path):
    path = tmp_path / "features.json"
    entry = bridge_like_entry(1)
    with pytest.raises(ValueError, match="must be added together"):
        with FeaturesWriter(path) as writer:
            writer.add("a", 0, entry)
            writer.add("b", 0, entry)
            writer.add("a", 1, entry)
    assert not path.exists() and not list(tmp_path.iterdir())

    bad = bridge_like_entry(1)
    bad["reasoning"]["0"]["plan"] = "email me @ home"
    with pytest.raises(ValueError, match="contains '@'"):
        with FeaturesWriter(path) as writer:
            writer.add("a", 0, bad)
    plural = {"features": {"gripper_positions": [[1, 2]]}}
    with pytest.raises(ValueError, match="'gripper_positions' is never read"):
        with FeaturesWriter(path) as writer:
            writer.add("a", 0, plural)
    with pytest.raises(ValueError, match="already written"):
        with FeaturesWriter(path) as writer:
            writer.add("a", 0, entry)
            writer.add("a", "0", entry)
    assert not path.exists()


def test_writer_never_replaces_a_good_file_with_a_partial_one(tmp_path):
    path = tmp_path / "features.json"
    with FeaturesWriter(path) as writer:
        writer.add("a", 0, bridge_like_entry(1))
    good = path.read_bytes()
    with pytest.raises(RuntimeError):
        with FeaturesWriter(path) as writer:
            writer.add("a", 0, bridge_like_entry(2))
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == good
