"""The embodied-features file, in the layout of the released ``embodied_features_bridge.json``.

Layout (docs/formats.md §4)::

    {file_path: {episode_id: {"reasoning": {step: {task, plan, subtask, subtask_reason, move, move_reason}},
                               "features": {"gripper_position": [[x, y], ...], "bboxes": [[[score, name, box], ...], ...],
                                            "move_primitive": [...], ...},
                               "metadata": {...}}}}

The reader streams: it decodes one episode at a time with the C JSON decoder, so memory stays
at a few episodes however large the file is (the original ``json.load`` of the 1.4 GB Bridge
file needs ~10 GB). The writer streams too, and only renames its output into place when it
is complete, so a crash never leaves a truncated features file behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, TextIO

from ecot.reasoning import REASONING_TAGS, TAG_TO_FEATURES_KEY, pairs_text, render_objects

GRIPPER_LOOKAHEAD = 5
GRIPPER_KEY = "gripper_position"  # what the loader reads (the original generator wrote "gripper_positions")
MAX_VALUE_CHARS = 1 << 28  # one episode's JSON larger than this is treated as corrupt
REASONING_KEYS = ("task", "plan", "subtask", "subtask_reason", "move", "move_reason")


class FeaturesFormatError(ValueError):
    """The features file is not in the expected layout; the message says where and what."""


# ---------------------------------------------------------------------- streaming reader


class _JsonStream:
    """Incremental reader of the two outer object levels of a large JSON document."""

    def __init__(self, handle: TextIO, path: str, chunk_chars: int = 1 << 22):
        self.handle = handle
        self.path = path
        self.chunk_chars = chunk_chars
        self.buffer = ""
        self.pos = 0
        self.consumed = 0  # characters dropped from the buffer's front, for error positions
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self, at_least: int = 0) -> bool:
        if self.eof:
            return False
        self.consumed += self.pos
        self.buffer = self.buffer[self.pos :]
        self.pos = 0
        want = max(self.chunk_chars, at_least)
        data = self.handle.read(want)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def error(self, what: str) -> FeaturesFormatError:
        return FeaturesFormatError(f"{self.path}: {what} at character {self.consumed + self.pos}")

    def peek(self) -> str:
        """Next non-whitespace character ('' at end of file), not consumed."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        found = self.peek()
        if found != char:
            raise self.error(f"expected {char!r}, found {found!r}" if found else f"expected {char!r}, file ends")
        self.pos += 1

    def value(self) -> Any:
        """Decode the next complete JSON value (read more until it is whole)."""
        self.peek()
        extra = 0
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as err:
                if len(self.buffer) - self.pos > MAX_VALUE_CHARS:
                    raise self.error(f"invalid JSON or a single episode over {MAX_VALUE_CHARS} characters ({err.msg})")
                if self.eof or not self._fill(at_least=extra):
                    raise self.error(f"invalid or truncated JSON ({err.msg})") from None
                extra = max(extra * 2, self.chunk_chars)  # a value larger than a chunk: grow reads
                continue
            if end == len(self.buffer) and not self.eof and not isinstance(obj, (dict, list, str)):
                # A number could continue past the buffer: make sure it is complete.
                if self._fill():
                    continue
            self.pos = end
            return obj

    def members(self) -> Iterator[str]:
        """Keys of the object that starts here; the caller consumes each member's value."""
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise self.error(f"expected an object key string, found {key!r}")
            self.expect(":")
            yield key
            sep = self.peek()
            if sep == ",":
                self.pos += 1
                continue
            if sep == "}":
                self.pos += 1
                return
            found = f"found {sep!r}" if sep else "the file ends (truncated?)"
            raise self.error(f"expected ',' or '}}' after member {key!r}, {found}")


def iter_feature_episodes(path: str | os.PathLike) -> Iterator[tuple[str, str, dict]]:
    """Stream ``(file_path, episode_id, entry)`` over the file, one decoded episode at a time."""
    path = str(path)
    with open(path, "r", encoding="utf-8") as handle:
        stream = _JsonStream(handle, path)
        for file_path in stream.members():
            if stream.peek() != "{":
                raise stream.error(f"value of file_path {file_path!r} must be an object of episodes")
            for episode_id in stream.members():
                entry = stream.value()
                if not isinstance(entry, dict):
                    raise stream.error(f"episode {file_path!r}/{episode_id!r} must be an object")
                yield file_path, episode_id, entry
        if stream.peek():
            raise stream.error("unexpected data after the top-level object")


# ---------------------------------------------------------------------- the original reasoning string


def gripper_lookahead(points: Any, step: int, n: int = GRIPPER_LOOKAHEAD) -> list | None:
    """Flat list of the gripper points at step .. step+n-1, padded by repeating the last point.

    Reproduces the original loader: ``pos += points[i + j]`` while in range, else
    ``pos += pos[-2:]``. None when ``step`` is outside the points (the field is then empty).
    """
    if not isinstance(points, list) or not 0 <= step < len(points):
        return None
    flat: list = []
    for j in range(n):
        if step + j < len(points) and isinstance(points[step + j], list):
            flat += points[step + j]
        else:
            flat += flat[-2:]
    return flat


def boxes_text(boxes: Any, step: int) -> str:
    """VISIBLE OBJECTS value of a step from ``features["bboxes"]`` (``[score, name, box]`` items)."""
    if not isinstance(boxes, list) or not 0 <= step < len(boxes) or not boxes[step]:
        return ""
    return render_objects((item[1], item[2]) for item in boxes[step])


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value, default=str)[:60]}"


def check_step_types(entry: Mapping[str, Any], step: str) -> None:
    """Raise :class:`FeaturesFormatError` (naming the field; callers add episode and step) when a
    field the reasoning string is built from has the wrong type."""
    reasoning = entry.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, Mapping):
        raise FeaturesFormatError(f"'reasoning' must be an object of steps, got {_kind(reasoning)}")
    fields = (reasoning or {}).get(step, {}) or {}
    if not isinstance(fields, Mapping):
        raise FeaturesFormatError(f"reasoning must be an object of {', '.join(REASONING_KEYS)}, got {_kind(fields)}")
    for key in REASONING_KEYS:
        if key in fields and not isinstance(fields[key], str):
            raise FeaturesFormatError(f"reasoning field {key!r} must be a string, got {_kind(fields[key])}")
    features = entry.get("features") or {}
    if not isinstance(features, Mapping):
        raise FeaturesFormatError(f"'features' must be an object, got {_kind(features)}")
    index = int(step)
    points = features.get(GRIPPER_KEY)
    if points is not None:
        if not isinstance(points, list):
            raise FeaturesFormatError(f"features[{GRIPPER_KEY!r}] must be a list of [x, y] points, got {_kind(points)}")
        if index < len(points):
            point = points[index]
            if point is not None and not (isinstance(point, list) and len(point) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
                raise FeaturesFormatError(f"{GRIPPER_KEY} must be an [x, y] pair of numbers, got {_kind(point)}")
    boxes = features.get("bboxes")
    if boxes is not None:
        if not isinstance(boxes, list):
            raise FeaturesFormatError(f"features['bboxes'] must be a list (one entry per step), got {_kind(boxes)}")
        if index < len(boxes) and boxes[index]:
            items = boxes[index]
            if not isinstance(items, list):
                raise FeaturesFormatError(f"bboxes must be a list of [score, name, [x0, y0, x1, y1]], got {_kind(items)}")
            for item in items:
                if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], str)
                        and isinstance(item[2], list) and len(item[2]) == 4
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item[2])):
                    raise FeaturesFormatError(f"bboxes item must be [score, name, [x0, y0, x1, y1]], got {_kind(item)}")
    moves = features.get("move_primitive")
    if isinstance(moves, list) and index < len(moves) and not isinstance(moves[index], str):
        raise FeaturesFormatError(f"move_primitive must be a string, got {_kind(moves[index])}")


def step_fields(entry: Mapping[str, Any], step: str) -> dict[str, str]:
    """The eight tag values of one step, exactly as the original loader renders them."""
    reasoning = entry.get("reasoning", {}).get(step, {}) or {}
    features = entry.get("features") or {}
    index = int(step)
    gripper = gripper_lookahead(features.get(GRIPPER_KEY), index)
    values = {key: reasoning.get(key, "") for key in REASONING_KEYS}
    values["gripper"] = "" if gripper is None else str(gripper)
    values["bboxes"] = boxes_text(features.get("bboxes"), index)
    return {tag: f"{values[TAG_TO_FEATURES_KEY[tag]]}" for tag in REASONING_TAGS}


def step_reasoning_text(entry: Mapping[str, Any], step: str) -> str:
    """The full reasoning string of a step (dropout off), byte for byte as the original builds it."""
    return pairs_text(step_fields(entry, step).items())


def reasoning_key(file_path: str, episode_id: Any, step: Any) -> str:
    """The original join key of a dataset frame and its reasoning."""
    return f"{file_path}_{episode_id}_{step}"


def iter_reasoning_strings(path: str | os.PathLike) -> Iterator[tuple[str, str, int, str]]:
    """Stream ``(file_path, episode_id, step, reasoning_text)`` for every annotated step.

    Episodes without a ``"reasoning"`` key are skipped, as the original loader does.
    """
    for file_path, episode_id, entry in iter_feature_episodes(path):
        reasoning = entry.get("reasoning")
        if not isinstance(reasoning, dict):
            continue
        for step in reasoning:
            try:
                index = int(step)
            except ValueError:
                raise FeaturesFormatError(
                    f"{path}: episode {file_path!r}/{episode_id!r} has step key {step!r}; expected an integer string"
                ) from None
            try:
                check_step_types(entry, step)  # field by field: nothing malformed is rendered as text
            except FeaturesFormatError as err:
                raise FeaturesFormatError(f"{path}: episode {file_path!r}/{episode_id!r}, step {index}: {err}") from None
            yield file_path, episode_id, index, step_reasoning_text(entry, step)


class ReasoningIndex:
    """In-memory lookup of reasoning strings by the original key (frames without one get "")."""

    def __init__(self, texts: dict[str, str] | None = None):
        self.texts: dict[str, str] = texts or {}

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ReasoningIndex":
        return cls({reasoning_key(fp, ep, step): text for fp, ep, step, text in iter_reasoning_strings(path)})

    def get(self, file_path: str, episode_id: Any, step: int) -> str:
        return self.texts.get(reasoning_key(file_path, episode_id, step), "")

    def __len__(self) -> int:
        return len(self.texts)


# ---------------------------------------------------------------------- writer


def _check_entry(file_path: str, episode_id: str, entry: Mapping[str, Any]) -> None:
    where = f"episode {file_path!r}/{episode_id!r}"
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}: entry must be a dict with 'reasoning', 'features', 'metadata'")
    features = entry.get("features") or {}
    if "gripper_positions" in features and GRIPPER_KEY not in features:
        raise ValueError(f"{where}: features key 'gripper_positions' is never read by the loader; use {GRIPPER_KEY!r}")
    reasoning = entry.get("reasoning") or {}
    for step, fields in reasoning.items():
        if not str(step).isdigit():
            raise ValueError(f"{where}: reasoning step key {step!r} must be a non-negative integer string")
        for key, value in (fields or {}).items():
            if isinstance(value, str) and "@" in value:
                raise ValueError(
                    f"{where}, step {step}: {key} contains '@', which breaks the original loader's split; "
                    f"remove it (value: {value[:80]!r})"
                )


class FeaturesWriter:
    """Stream episodes into a features file; the file appears only when :meth:`close` succeeds.

    Episodes of one ``file_path`` must be added together (the layout nests them under it).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.path.with_name(self.path.name + ".partial")
        self.handle: TextIO | None = open(self.tmp_path, "w", encoding="utf-8")
        self.handle.write("{")
        self.current: str | None = None
        self.current_ids: set[str] = set()
        self.done_paths: set[str] = set()
        self.episodes = 0

    def add(self, file_path: str, episode_id: Any, entry: Mapping[str, Any]) -> None:
        if self.handle is None:
            raise RuntimeError("FeaturesWriter is closed")
        episode_id = str(episode_id)
        _check_entry(file_path, episode_id, entry)
        if file_path != self.current:
            if file_path in self.done_paths:
                raise ValueError(
                    f"episodes of file_path {file_path!r} must be added together; it was already closed "
                    "(sort episodes by file_path before writing)"
                )
            if self.current is not None:
                self.handle.write("}, ")
                self.done_paths.add(self.current)
            self.handle.write(json.dumps(file_path) + ": {")
            self.current, self.current_ids = file_path, set()
        elif episode_id in self.current_ids:
            raise ValueError(f"episode {episode_id!r} of {file_path!r} was already written")
        else:
            self.handle.write(", ")
        self.handle.write(json.dumps(episode_id) + ": " + json.dumps(entry))
        self.current_ids.add(episode_id)
        self.episodes += 1

    def close(self) -> Path:
        if self.handle is None:
            return self.path
        self.handle.write("}}" if self.current is not None else "}")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        self.handle = None
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> "FeaturesWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
