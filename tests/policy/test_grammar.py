"""The ECoT field grammars, character by character: what they accept is what Reasoning.parse reads cleanly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ecot.policy.grammar import ObjectList, PointList, writes_tag_or_eos
from ecot.reasoning import GRIPPER_POSITION, VISIBLE_OBJECTS, Reasoning, render_objects, render_points


def _accepts(grammar, text: str) -> bool:
    state = grammar.feed(grammar.start(), text)
    return state is not None and grammar.accepting(state)


def test_objects_accept_the_training_rendering():
    g = ObjectList()
    assert _accepts(g, "")
    assert _accepts(g, " " + render_objects([("the red block", [40, 52, 60, 70]), ("the bowl", [80, 3, 1, 6])]))
    for bad in (" the block [40, 52, 60]", " the block [40, 52, 60, 70", " the block[1, 2, 3, 4]", " [1, 2, 3, 4]",
                " the block [1, 2, 3, 4],the bowl [1, 2, 3, 4]", " the block [01, 2, 3, 4]", " the block [12345, 2, 3, 4]",
                " the [x] block [1, 2, 3, 4]"):
        assert not _accepts(g, bad), bad


def test_points_accept_even_lists_only():
    g = PointList()
    assert _accepts(g, "") and _accepts(g, " [1, 2]") and _accepts(g, " " + render_points([(50, 40), (50, 44)]))
    for bad in (" [1, 2, 3]", " [1, 2", " []", " [1,2]", " [-1, 2]", " 1, 2"):
        assert not _accepts(g, bad), bad


def test_closing_leaves_only_the_way_to_the_end():
    g = ObjectList()
    state = g.feed(g.start(), " the block [1, 2, 3, 4]")
    assert g.feed(state, ",", closing=False) is not None
    assert g.feed(state, ",", closing=True) is None and g.must_end(state, closing=True)
    p = PointList()
    state = p.feed(p.start(), " [1, 2")
    assert p.feed(state, ",", closing=True) is None and p.feed(state, "]", closing=True) == ("closed",)
    odd = p.feed(p.start(), " [1")
    assert p.feed(odd, ",", closing=True) is not None  # a point needs its y


@st.composite
def grammar_walks(draw, grammar_cls):
    """Random character walks through a grammar, ended with its completion."""
    g = grammar_cls()
    state, text = g.start(), ""
    for _ in range(draw(st.integers(0, 60))):
        ch = draw(st.sampled_from(list(" [],0123456789ab,xy")))
        nxt = g.step(state, ch, False)
        if nxt is not None:
            state, text = nxt, text + ch
    return g, text + g.completion(state)


@given(grammar_walks(ObjectList))
@settings(max_examples=300, deadline=None)
def test_every_object_walk_completes_and_parses_cleanly(walk):
    g, text = walk
    assert _accepts(g, text), text
    parsed = Reasoning.parse(f"{VISIBLE_OBJECTS}{text}")
    assert parsed.problems == [] and len(parsed.visible_objects) == text.count("[")


@given(grammar_walks(PointList))
@settings(max_examples=300, deadline=None)
def test_every_point_walk_completes_and_parses_cleanly(walk):
    g, text = walk
    assert _accepts(g, text), text
    parsed = Reasoning.parse(f"{GRIPPER_POSITION}{text}")
    assert parsed.problems == [] and 2 * len(parsed.gripper_positions) == len([c for c in text.split(",") if c.strip(" []")])


def test_tags_and_eos_are_refused_in_values():
    assert writes_tag_or_eos(" grasp it PLAN: x") and writes_tag_or_eos(" ok </s>") and writes_tag_or_eos(" ACTION: 1")
    assert not writes_tag_or_eos(" the plan: grasp") and not writes_tag_or_eos(" SUBTASKS are PLANs")
