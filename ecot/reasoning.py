"""The ECoT reasoning language: tags, the typed :class:`Reasoning`, its text form and a parser.

The text form is byte-for-byte what the original training pipeline builds (docs/formats.md §2)::

    TASK: {task} PLAN: {plan} VISIBLE OBJECTS: {objects} SUBTASK REASONING: {..} SUBTASK: {..}
    MOVE REASONING: {..} MOVE: {..} GRIPPER POSITION: {points}

(one line; every tag present, an empty value leaving two spaces). Objects render as
``name [x0, y0, x1, y1]`` joined by ``", "``; gripper points as one flat Python list.

The parser is the robust half: it never raises, reads tags in any order, tolerates missing,
repeated and truncated parts, and reports what it could not read in ``problems``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

TASK = "TASK:"
PLAN = "PLAN:"
VISIBLE_OBJECTS = "VISIBLE OBJECTS:"
SUBTASK_REASONING = "SUBTASK REASONING:"
SUBTASK = "SUBTASK:"
MOVE_REASONING = "MOVE REASONING:"
MOVE = "MOVE:"
GRIPPER_POSITION = "GRIPPER POSITION:"
ACTION = "ACTION:"

TAGS = [TASK, PLAN, VISIBLE_OBJECTS, SUBTASK_REASONING, SUBTASK, MOVE_REASONING, MOVE, GRIPPER_POSITION, ACTION]
REASONING_TAGS = TAGS[:-1]

# Tag -> Reasoning attribute, and tag -> key of the embodied-features file (docs/formats.md §1).
TAG_TO_FIELD = {
    TASK: "task",
    PLAN: "plan",
    VISIBLE_OBJECTS: "visible_objects",
    SUBTASK_REASONING: "subtask_reasoning",
    SUBTASK: "subtask",
    MOVE_REASONING: "move_reasoning",
    MOVE: "move",
    GRIPPER_POSITION: "gripper_positions",
}
TAG_TO_FEATURES_KEY = {
    TASK: "task",
    PLAN: "plan",
    VISIBLE_OBJECTS: "bboxes",
    SUBTASK_REASONING: "subtask_reason",
    SUBTASK: "subtask",
    MOVE_REASONING: "move_reason",
    MOVE: "move",
    GRIPPER_POSITION: "gripper",
    ACTION: "action",
}
EOS_MARKERS = ("</s>",)

Box = list  # [x0, y0, x1, y1]
Number = int | float


def _plain_number(value: Any) -> Number:
    """Python int/float from any numeric (numpy scalars would render as ``np.int64(3)``)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"expected a number, got a boolean {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")


def render_objects(objects: Iterable[tuple[str, Sequence[Number]]]) -> str:
    """``name [x0, y0, x1, y1], name [..]`` — the VISIBLE OBJECTS value."""
    return ", ".join(f"{name} {list(box)}" for name, box in objects)


def render_points(points: Iterable[Sequence[Number]]) -> str:
    """Flat Python list of the points' coordinates, or ``""`` for no points."""
    flat = [c for point in points for c in point]
    return str(flat) if flat else ""


def pairs_text(pairs: Iterable[tuple[str, str]]) -> str:
    """Join (tag, value) pairs as the original does: ``"{tag} {value}"`` separated by one space."""
    return " ".join(f"{tag} {value}" for tag, value in pairs)


@dataclass
class Reasoning:
    """One step's embodied reasoning, typed."""

    task: str = ""
    plan: str = ""
    visible_objects: list[tuple[str, list[Number]]] = field(default_factory=list)
    subtask_reasoning: str = ""
    subtask: str = ""
    move_reasoning: str = ""
    move: str = ""
    gripper_positions: list[tuple[Number, Number]] = field(default_factory=list)
    # Filled by parse(); not part of equality.
    problems: list[str] = field(default_factory=list, compare=False, repr=False)
    action_text: str | None = field(default=None, compare=False, repr=False)
    present_tags: list[str] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("task", "plan", "subtask_reasoning", "subtask", "move_reasoning", "move"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Reasoning.{name} must be a string, got {type(value).__name__}")
        objects = []
        for item in self.visible_objects:
            name, box = item
            box = [_plain_number(v) for v in box]
            if len(box) != 4:
                raise ValueError(f"box of object {name!r} must have 4 numbers [x0, y0, x1, y1], got {box}")
            objects.append((str(name), box))
        self.visible_objects = objects
        points = []
        for point in self.gripper_positions:
            point = tuple(_plain_number(v) for v in point)
            if len(point) != 2:
                raise ValueError(f"gripper positions must be (x, y) pairs, got {point}")
            points.append(point)
        self.gripper_positions = points

    # ------------------------------------------------------------------ text form
    def values(self) -> dict[str, str]:
        """Tag -> rendered value, for the eight reasoning tags in order."""
        return {
            TASK: self.task,
            PLAN: self.plan,
            VISIBLE_OBJECTS: render_objects(self.visible_objects),
            SUBTASK_REASONING: self.subtask_reasoning,
            SUBTASK: self.subtask,
            MOVE_REASONING: self.move_reasoning,
            MOVE: self.move,
            GRIPPER_POSITION: render_points(self.gripper_positions),
        }

    def pairs(self) -> list[tuple[str, str]]:
        return list(self.values().items())

    def to_text(
        self,
        dropout: float = 0.0,
        exclude_tags: Iterable[str] = (),
        rng: np.random.Generator | int | None = None,
    ) -> str:
        """The training text; with ``dropout`` > 0 each tag is kept with probability 1 - dropout."""
        pairs = self.pairs()
        if dropout > 0 or exclude_tags:
            pairs = reasoning_dropout(pairs, dropout, exclude_tags, rng)
        return pairs_text(pairs)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, text: Any) -> "Reasoning":
        """Read whatever reasoning ``text`` holds; never raises. See ``problems`` for what was off."""
        try:
            return _parse(text)
        except Exception as err:  # the parser must never take a policy down
            result = cls()
            result.problems.append(f"internal parser error: {type(err).__name__}: {err}")
            return result


# ---------------------------------------------------------------------- dropout and prefixes


def reasoning_dropout(
    pairs: Sequence[tuple[str, str]],
    p: float,
    exclude_tags: Iterable[str] = (),
    rng: np.random.Generator | int | None = None,
) -> list[tuple[str, str]]:
    """Keep each (tag, value) pair independently when ``uniform() > p``; drop excluded tags always.

    One uniform draw per pair, in order, as the original ``reasoning_dropout`` does.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    exclude = set(exclude_tags)
    unknown = exclude - set(TAGS)
    if unknown:
        raise ValueError(f"unknown tags to exclude: {sorted(unknown)}; valid tags: {TAGS}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    keep = generator.random(len(pairs)) > p
    return [(tag, value) for (tag, value), kept in zip(pairs, keep) if kept and tag not in exclude]


def split_pairs(text: str) -> list[tuple[str, str]]:
    """Recover the (tag, value) pairs of a text built by :func:`pairs_text`, values verbatim.

    Unlike :meth:`Reasoning.parse` this keeps each value exactly as written (one separator space
    removed on each side), so re-joining with :func:`pairs_text` gives the same text back. Text
    before the first tag is dropped.
    """
    matches = list(_TAG_RE.finditer(text))
    pairs = []
    for i, match in enumerate(matches):
        last = i + 1 == len(matches)
        end = len(text) if last else matches[i + 1].start()
        value = text[match.end() : end]
        value = value[1:] if value.startswith(" ") else value
        if not last and value.endswith(" "):
            value = value[:-1]
        pairs.append((match.group(0), value))
    return pairs


def prefix_before(text: str, tag: str) -> str | None:
    """``text`` cut just before the first occurrence of ``tag`` (None if the tag is absent).

    E.g. ``prefix_before(text, MOVE_REASONING)`` keeps TASK … SUBTASK, the high-level part a
    policy can reuse across steps while re-generating the low-level reasoning.
    """
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}; valid tags: {TAGS}")
    for match in _TAG_RE.finditer(text):
        if match.group(0) == tag:
            return text[: match.start()]
    return None


# ---------------------------------------------------------------------- the parser

# Longest first so that "SUBTASK REASONING:" is not read as "SUBTASK"; a tag must not be the tail
# of a longer word ("SUBTASK:" contains "TASK:").
_TAG_RE = re.compile(
    r"(?<![A-Za-z])(" + "|".join(re.escape(t) for t in sorted(TAGS, key=len, reverse=True)) + ")"
)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"  # unambiguous: no backtracking blow-up
_NUMBER_RE = re.compile(_NUMBER)
# A bracket group holding only numbers and commas: a box (if 4 numbers) or a malformed one.
_NUMERIC_GROUP_RE = re.compile(r"\[\s*(?:" + _NUMBER + r"\s*(?:,\s*" + _NUMBER + r"\s*)*)?,?\s*\]")
# An unterminated numeric list at the very end (generation cut off mid-box).
_PARTIAL_GROUP_RE = re.compile(r"\[\s*(?:" + _NUMBER + r"(?:\s*,\s*" + _NUMBER + r")*)?\s*,?\s*$")


def _to_number(token: str) -> Number:
    if re.fullmatch(r"[-+]?\d+", token):
        return int(token)
    return float(token)


def _numbers(text: str) -> list[Number]:
    return [_to_number(tok) for tok in _NUMBER_RE.findall(text)]


def _strip_separator(segment: str) -> str:
    segment = segment.strip()
    if segment.startswith(","):
        segment = segment[1:]
    return segment.strip()


def parse_objects(value: str, problems: list[str]) -> list[tuple[str, list[Number]]]:
    """Read ``name [x0, y0, x1, y1], ...``; names may hold commas, digits and non-numeric brackets."""
    objects: list[tuple[str, list[Number]]] = []
    position = 0
    for match in _NUMERIC_GROUP_RE.finditer(value):
        name = _strip_separator(value[position : match.start()])
        position = match.end()
        numbers = _numbers(match.group(0))
        if len(numbers) != 4:
            problems.append(f"VISIBLE OBJECTS: box of {name[:60]!r} has {len(numbers)} numbers, expected 4")
            continue
        objects.append((name, numbers))
    rest = value[position:]
    if rest.strip():
        partial = _PARTIAL_GROUP_RE.search(rest)
        name = _strip_separator(rest[: partial.start()] if partial else rest)
        problems.append(f"VISIBLE OBJECTS: incomplete entry {name[:60]!r} (no [x0, y0, x1, y1] box)")
    return objects


def parse_points(value: str, problems: list[str]) -> list[tuple[Number, Number]]:
    """Read a flat list ``[x0, y0, x1, y1, ...]`` of pixel points."""
    stripped = value.strip()
    if not stripped:
        return []
    if not stripped.startswith("["):
        problems.append(f"GRIPPER POSITION: expected a list like [x0, y0, ...], got {stripped[:40]!r}")
    elif not stripped.endswith("]"):
        problems.append("GRIPPER POSITION: list is not closed (truncated?)")
    numbers = _numbers(stripped)
    if len(numbers) % 2:
        problems.append(f"GRIPPER POSITION: odd count of coordinates ({len(numbers)}); last one dropped")
        numbers = numbers[:-1]
    return [(numbers[i], numbers[i + 1]) for i in range(0, len(numbers), 2)]


def _parse(text: Any) -> Reasoning:
    problems: list[str] = []
    if not isinstance(text, str):
        result = Reasoning()
        result.problems.append(f"expected text, got {type(text).__name__}")
        return result
    for marker in EOS_MARKERS:
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    matches = list(_TAG_RE.finditer(text))
    if not matches:
        result = Reasoning()
        if text.strip():
            result.problems.append("no reasoning tags found")
        return result
    leading = text[: matches[0].start()].strip()
    if leading:
        problems.append(f"text before the first tag ignored: {leading[:40]!r}")
    values: dict[str, str] = {}
    present: list[str] = []
    for i, match in enumerate(matches):
        tag = match.group(0)
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        if tag == ACTION:
            # Everything after ACTION: is the action, tags that may follow included.
            values.setdefault(ACTION, text[match.end() :].strip())
            if ACTION not in present:
                present.append(ACTION)
            break
        value = text[match.end() : end].strip()
        if tag in values:
            problems.append(f"repeated tag {tag} ignored")
            continue
        values[tag] = value
        present.append(tag)
    order = [t for t in TAGS if t in present]
    if present != order:
        problems.append("tags out of the usual order")
    kwargs: dict[str, Any] = {}
    for tag, name in TAG_TO_FIELD.items():
        if tag not in values:
            continue
        if tag == VISIBLE_OBJECTS:
            kwargs[name] = parse_objects(values[tag], problems)
        elif tag == GRIPPER_POSITION:
            kwargs[name] = parse_points(values[tag], problems)
        else:
            kwargs[name] = values[tag]
    result = Reasoning(**kwargs)
    result.problems = problems
    result.action_text = values.get(ACTION)
    result.present_tags = present
    return result
