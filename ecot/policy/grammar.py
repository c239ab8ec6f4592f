"""The ECoT grammar, character by character: what a field's value may look like while it is decoded.

Constrained decoding works on the *text* a token adds, not on token ids, so it holds for any
tokenizer (the released Llama SentencePiece one, our tiny BPE one). Each reasoning field has a
small state machine over the characters of its value (everything between its tag and the next):

* free text (TASK, PLAN, SUBTASK REASONING, SUBTASK, MOVE REASONING, MOVE): anything that does not
  write a reasoning tag or ``</s>`` (either would make :meth:`Reasoning.parse` read another field);
* VISIBLE OBJECTS: ``( name [x0, y0, x1, y1](, name [..])*)?`` — names without ``[``/``]``,
  coordinates non-negative integers of at most 4 digits, as ``str(list)`` writes them;
* GRIPPER POSITION: ``( [x0, y0, x1, y1, ...])?`` — an even count of such integers.

A state is an immutable tuple, so a candidate token is checked by feeding its characters to
:meth:`FieldGrammar.feed` and keeping the state only if every character was allowed. A field may
end (its next tag be written) only in an *accepting* state; when its token budget is spent the
grammar switches to *closing*, where only the shortest way to an accepting state is allowed, so
every field ends after a bounded number of tokens whatever the model's weights.
"""

from __future__ import annotations

import re

from ecot.reasoning import ACTION, GRIPPER_POSITION, REASONING_TAGS, VISIBLE_OBJECTS, _TAG_RE

FREE, OBJECTS, POINTS = "free", "objects", "points"
FIELD_KINDS = {tag: FREE for tag in REASONING_TAGS}
FIELD_KINDS[VISIBLE_OBJECTS] = OBJECTS
FIELD_KINDS[GRIPPER_POSITION] = POINTS

MAX_DIGITS = 4  # pixel coordinates: 0 .. 9999
STRUCT_CHARS = frozenset("0123456789,[] ")
_EOS_TEXT = "</s>"


def writes_tag_or_eos(value: str) -> bool:
    """Would ``value`` (the text after a tag) be read as holding another tag, ``ACTION:`` or EOS?"""
    return _EOS_TEXT in value or _TAG_RE.search(value) is not None


class FieldGrammar:
    """The state machine of one field kind. States are tuples; ``None`` means "not allowed"."""

    kind = FREE

    def start(self) -> tuple:
        return ("free",)

    def feed(self, state: tuple, text: str, closing: bool = False) -> tuple | None:
        """The state after ``text``, or None if some character is not allowed."""
        for ch in text:
            state = self.step(state, ch, closing)
            if state is None:
                return None
        return state

    def step(self, state: tuple, ch: str, closing: bool) -> tuple | None:
        return state

    def accepting(self, state: tuple) -> bool:
        return True

    def structural(self, state: tuple) -> bool:
        """True where only digits, commas, brackets and spaces can follow (a cheaper candidate set)."""
        return False

    def must_end(self, state: tuple, closing: bool) -> bool:
        """Nothing but the end of the field can follow: write the next tag without asking the model."""
        return closing and self.accepting(state)

    def completion(self, state: tuple) -> str:
        """The shortest text that takes ``state`` to an accepting state."""
        return ""


class FreeText(FieldGrammar):
    """Any text; tags and ``</s>`` are refused by the caller (they depend on the whole value)."""

    def must_end(self, state: tuple, closing: bool) -> bool:
        return closing


class ObjectList(FieldGrammar):
    """``( name [x0, y0, x1, y1](, name [..])*)?`` with at most ``max_objects`` objects.

    States: ("start",) | ("name0", n) | ("name", n, last_space) | ("box", n, k, digits)
    | ("box_sp", n, k) | ("after_box", n) | ("after_comma", n); ``n`` objects are complete,
    ``k`` is the coordinate being written, ``digits`` its digits so far (-1: a lone "0").
    """

    kind = OBJECTS

    def __init__(self, max_objects: int = 12):
        self.max_objects = max_objects

    def start(self) -> tuple:
        return ("start",)

    def step(self, state: tuple, ch: str, closing: bool) -> tuple | None:
        phase = state[0]
        if phase == "start":
            return ("name0", 0) if ch == " " and not closing else None
        if phase == "name0":
            return ("name", state[1], False) if ch not in " []\n" and not closing else None
        if phase == "name":
            n, last_space = state[1], state[2]
            if ch == "[":
                return ("box", n, 0, 0) if last_space else None
            if ch == " ":
                return None if last_space else ("name", n, True)
            if ch in "]\n" or closing:
                return None
            return ("name", n, False)
        if phase == "box":
            n, k, digits = state[1], state[2], state[3]
            if ch.isdigit() and ch.isascii():
                if digits == 0:
                    return ("box", n, k, -1 if ch == "0" else 1)
                if 0 < digits < MAX_DIGITS:
                    return ("box", n, k, digits + 1)
                return None
            if digits == 0:
                return None
            if ch == "," and k < 3:
                return ("box_sp", n, k + 1)
            if ch == "]" and k == 3:
                return ("after_box", n + 1)
            return None
        if phase == "box_sp":
            return ("box", state[1], state[2], 0) if ch == " " else None
        if phase == "after_box":
            return ("after_comma", state[1]) if ch == "," and state[1] < self.max_objects and not closing else None
        if phase == "after_comma":
            return ("name0", state[1]) if ch == " " else None
        return None

    def accepting(self, state: tuple) -> bool:
        return state[0] in ("start", "after_box")

    def structural(self, state: tuple) -> bool:
        return state[0] in ("box", "box_sp", "after_box")

    def completion(self, state: tuple) -> str:
        phase = state[0]
        if phase in ("start", "after_box"):
            return ""
        if phase == "name0":
            return "object [0, 0, 0, 0]"
        if phase == "after_comma":
            return " object [0, 0, 0, 0]"
        if phase == "name":
            return ("" if state[2] else " ") + "[0, 0, 0, 0]"
        if phase == "box_sp":
            return " " + ", ".join(["0"] * (4 - state[2])) + "]"
        k, digits = state[2], state[3]
        head = "0" if digits == 0 else ""
        return head + "".join(", 0" for _ in range(3 - k)) + "]"


class PointList(FieldGrammar):
    """``( [x0, y0, x1, y1, ...])?``: an even count (at most ``2 * max_points``) of integers.

    States: ("start",) | ("sp",) | ("num", n, digits) | ("comma", n) | ("closed",); ``n``
    numbers are complete.
    """

    kind = POINTS

    def __init__(self, max_points: int = 16):
        self.max_numbers = 2 * max_points

    def start(self) -> tuple:
        return ("start",)

    def step(self, state: tuple, ch: str, closing: bool) -> tuple | None:
        phase = state[0]
        if phase == "start":
            return ("sp",) if ch == " " and not closing else None
        if phase == "sp":
            return ("num", 0, 0) if ch == "[" else None
        if phase == "num":
            n, digits = state[1], state[2]
            if ch.isdigit() and ch.isascii():
                if digits == 0:
                    return ("num", n, -1 if ch == "0" else 1)
                if 0 < digits < MAX_DIGITS:
                    return ("num", n, digits + 1)
                return None
            if digits == 0:
                return None
            done = n + 1
            if ch == "]":
                return ("closed",) if done % 2 == 0 else None
            if ch == ",":
                if done >= self.max_numbers or (closing and done % 2 == 0):
                    return None
                return ("comma", done)
            return None
        if phase == "comma":
            return ("num", state[1], 0) if ch == " " else None
        return None

    def accepting(self, state: tuple) -> bool:
        return state[0] in ("start", "closed")

    def structural(self, state: tuple) -> bool:
        return state[0] in ("sp", "num", "comma")

    def must_end(self, state: tuple, closing: bool) -> bool:
        return state[0] == "closed" or (closing and state[0] == "start")

    def completion(self, state: tuple) -> str:
        phase = state[0]
        if phase in ("start", "closed"):
            return ""
        if phase == "sp":
            return "[0, 0]"
        if phase == "comma":
            n = state[1]
            return " 0" + ("]" if n % 2 else ", 0]")
        n, digits = state[1], state[2]
        head = "0" if digits == 0 else ""
        return head + ("]" if (n + 1) % 2 == 0 else ", 0]")


def grammar_for(tag: str, max_objects: int = 12, max_points: int = 16) -> FieldGrammar:
    kind = FIELD_KINDS[tag]
    if kind == OBJECTS:
        return ObjectList(max_objects)
    if kind == POINTS:
        return PointList(max_points)
    return FreeText()


# ---------------------------------------------------------------------- token texts

_BYTE_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_texts(tokenizer, n_ids: int, action_first_id: int) -> list[str | None]:
    """The text each id adds in the middle of a reasoning, or None for ids reasoning may not use.

    SentencePiece's word boundary ``▁`` is a space; byte-fallback tokens of printable ASCII are
    their character (others would leave half a UTF-8 sequence); special tokens, the action ids
    ids past the tokenizer (padded embedding rows) and ``<...>`` filler are excluded.
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(n_ids, len(tokenizer)))))
    texts: list[str | None] = []
    for i, piece in enumerate(pieces):
        if i in special or i >= action_first_id or piece is None:
            texts.append(None)
            continue
        match = _BYTE_RE.match(piece)
        if match:
            code = int(match.group(1), 16)
            texts.append(chr(code) if 0x20 <= code < 0x7F or code == 0x0A else None)
            continue
        if len(piece) > 2 and piece.startswith("<") and piece.endswith(">"):
            texts.append(None)  # special-looking filler (e.g. "<unused_7>") that text never encodes to
            continue
        text = piece.replace("\u2581", " ")
        texts.append(text if text and "\ufffd" not in text else None)
    texts.extend([None] * (n_ids - len(texts)))
    return texts


def is_structural_text(text: str | None) -> bool:
    return bool(text) and set(text) <= STRUCT_CHARS


__all__ = [
    "ACTION",
    "FIELD_KINDS",
    "FieldGrammar",
    "FreeText",
    "ObjectList",
    "PointList",
    "grammar_for",
    "token_texts",
    "writes_tag_or_eos",
]
