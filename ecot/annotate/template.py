"""Template reasoning: deterministic, offline, free.

Per step it writes the six reasoning fields of the features file from what the other stages
computed:

- task: the instruction;
- plan: the high-level steps of the task family, filled from the structured task description
  (``{"family": "pick_place", "object": "the red block", "target": "the blue bowl"}``), or
  inferred from ground truth / generic words when there is none;
- subtask: the plan step the episode is in, from the gripper's close and open events (a grasp
  starts the "carry" phase, a release the "place" phase) and, before the grasp, from the
  gripper's distance to the object;
- subtask_reason, move_reason: sentences built from the gripper state, the gripper's position
  relative to the object that matters now, and the move primitive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ecot.annotate.sanitize import clean_text
from ecot.data.episode import Episode

# A primitive window spans 4 states: a gripper event at step c shows in the labels of c-3 .. c-1.
EVENT_LEAD = 3


@dataclass
class TaskSpec:
    family: str
    object: str
    target: str = ""
    preposition: str = "on"
    relation: str = ""  # move_relation: left / right / front / behind; push: table region


def _phrase(name: str) -> str:
    name = clean_text(name)
    return name if name else "the object"


def task_spec(episode: Episode) -> TaskSpec:
    """The structured task description of an episode, or the best guess from ground truth."""
    meta = episode.metadata or {}
    desc = None
    for key in ("task", "task_description", "task_spec"):
        if isinstance(meta.get(key), dict):
            desc = meta[key]
            break
    if desc is None:
        desc = next((v for v in meta.values() if isinstance(v, dict) and "family" in v), None)
    family = str((desc or {}).get("family") or meta.get("task_family") or "").strip()
    obj = (desc or {}).get("object") or (desc or {}).get("obj") or ""
    target = (desc or {}).get("target") or (desc or {}).get("destination") or ""
    gt = episode.ground_truth
    if not obj and gt is not None and gt.object_names:
        moved = np.linalg.norm(gt.object_poses[-1, :, :3] - gt.object_poses[0, :, :3], axis=-1)
        obj = gt.object_names[int(np.argmax(moved))]
        if not target and len(gt.object_names) > 1:
            others = [k for k in range(len(gt.object_names)) if gt.object_names[k] != obj]
            final = gt.object_poses[-1, :, :3]
            k_obj = gt.object_names.index(obj)
            dist = [float(np.linalg.norm(final[k, :2] - final[k_obj, :2])) for k in others]
            target = gt.object_names[others[int(np.argmin(dist))]]
    prep = str((desc or {}).get("preposition") or ("in" if any(w in str(target) for w in ("bowl", "box", "bin", "pot", "basket", "drawer")) else "on"))
    return TaskSpec(
        family=family or ("pick_place" if target else "pick"), object=_phrase(obj), target=clean_text(target),
        preposition=prep, relation=clean_text((desc or {}).get("relation") or ""),
    )


RELATION_PHRASES = {"left": "to the left of", "right": "to the right of", "front": "in front of", "behind": "behind"}


def plan_steps(spec: TaskSpec) -> list[str]:
    """High-level steps of a task family. Unknown families with a target read as pick-and-place."""
    o, t, p = spec.object, spec.target, spec.preposition
    family = spec.family.lower()
    if family in ("push", "slide"):
        if spec.relation:
            return [f"move to {o}", f"push {o} to the {spec.relation} of the table"]
        return [f"move to {o}", f"push {o} to {t}" if t else f"push {o}"]
    if family == "move_relation" and t:
        rel = RELATION_PHRASES.get(spec.relation, "next to")
        return [f"move to {o}", f"grasp {o}", f"move {o} {rel} {t}", f"place {o} {rel} {t}"]
    if family in ("pick", "lift", "pick_up", "pickup"):
        return [f"move to {o}", f"grasp {o}", f"lift {o}"]
    if family in ("stack",):
        return [f"move to {o}", f"grasp {o}", f"move {o} above {t}", f"stack {o} on {t}"]
    if t:
        return [f"move to {o}", f"grasp {o}", f"move {o} to {t}", f"place {o} {p} {t}"]
    return [f"move to {o}", f"grasp {o}", f"lift {o}"]


def render_plan(steps: Sequence[str]) -> str:
    return ", ".join(steps)


def gripper_open_track(episode: Episode) -> np.ndarray:
    """[T] bool, gripper open; from ground truth when known, else the state's gripper value."""
    if episode.ground_truth is not None:
        return episode.ground_truth.gripper_open.astype(bool)
    return episode.states[:, 6] > 0.5


def push_start(episode: Episode, spec: TaskSpec) -> int:
    """First step of the push: a few steps before the object starts to move (ground truth), else T/3."""
    gt = episode.ground_truth
    t = len(episode)
    if gt is not None and spec.object in gt.object_names:
        k = gt.object_names.index(spec.object)
        moved = np.linalg.norm(gt.object_poses[:, k, :3] - gt.object_poses[0, k, :3], axis=-1) > 0.01
        if moved.any():
            return max(0, int(np.argmax(moved)) - EVENT_LEAD)
    return max(1, t // 3)


def phases(open_track: np.ndarray, n_plan: int, grasp_family: bool, push_from: int = 0) -> np.ndarray:
    """Index of the plan step for each step, from the gripper's close / open events."""
    t = len(open_track)
    phase = np.zeros(t, dtype=np.int64)
    if t == 0:
        return phase
    if not grasp_family:  # push: reach the object, then push it
        phase[push_from:] = min(1, n_plan - 1)
        return phase
    closes = np.flatnonzero(open_track[:-1] & ~open_track[1:]) + 1
    if len(closes) == 0:
        return phase  # never grasped: still moving to the object
    c = int(closes[0])  # first step seen with the gripper closed
    phase[max(0, c - EVENT_LEAD) : c] = 1
    phase[c:] = 2 if n_plan > 2 else 1
    opens = np.flatnonzero(~open_track[c:-1] & open_track[c + 1 :]) + c + 1
    if len(opens) and n_plan > 3:
        r = int(opens[0])
        phase[max(c + 1, r - EVENT_LEAD) :] = 3
    return phase


def relation(point: Sequence[float] | None, box: Sequence[float] | None) -> str:
    """Where the gripper is relative to an object's box, in image terms."""
    if point is None or box is None:
        return "away from"
    x, y = float(point[0]), float(point[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = 0.25 * (x1 - x0) + 2, 0.25 * (y1 - y0) + 2
    if x0 - mx <= x <= x1 + mx and y0 - my <= y <= y1 + my:
        return "at"
    dx = x - (x0 + x1) / 2
    dy = y - (y0 + y1) / 2
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _box_of(name: str, boxes: Sequence[Sequence[Any]]) -> list | None:
    for item in boxes:
        if item[1] == name:
            return item[2]
    return None


_SUBTASK_REASONS = {
    0: "{o} has to be grasped first and the gripper is not there yet",
    1: "the gripper is open and at {o}, so it can close around it",
    2: "{o} is held in the gripper and must be brought to {t}",
    3: "{o} is held at {t}, so the gripper can release it there",
}


def subtask_reason(spec: TaskSpec, phase: int, grasp_family: bool) -> str:
    if not grasp_family:
        text = (
            f"{spec.object} must be pushed, so the gripper first has to get next to it"
            if phase == 0
            else f"the gripper is next to {spec.object} and can push it"
            + (f" towards the {spec.relation} of the table" if spec.relation else f" towards {spec.target}" if spec.target else "")
        )
    elif spec.family.lower() in ("pick", "lift", "pick_up", "pickup") and phase == 2:
        text = f"{spec.object} is held in the gripper, so it can be lifted"
    elif not spec.target and phase >= 2:
        text = f"{spec.object} is held in the gripper, so it can be lifted"
    else:
        text = _SUBTASK_REASONS[min(phase, 3)].format(o=spec.object, t=spec.target or "the goal")
    return clean_text(text[0].upper() + text[1:] + ".")


SHOULD = "so it should "  # MOVE REASONING names the move after this: "..., so it should <goal> to <purpose>."


def _goal(move: str) -> str:
    return "hold its position" if move == "stop" else move


def restate_move(move_reasoning: str, move: str) -> str:
    """A template MOVE REASONING rewritten to name ``move`` (for an edited MOVE that the chain before it
    should agree with); text not in the template's shape is returned unchanged."""
    head, sep, tail = move_reasoning.partition(SHOULD)
    if not sep or " to " not in tail:
        return move_reasoning
    return f"{head}{sep}{_goal(move)} to {tail.split(' to ', 1)[1]}"


def move_reason(
    gripper_open: bool, rel: str, focus: str, move: str, phase: int, grasp_family: bool
) -> str:
    state = "open" if gripper_open else "closed"
    where = f"{rel} {focus}" if rel != "at" else f"at {focus}"
    goal = _goal(move)
    if not grasp_family:
        purpose = "reach it" if phase == 0 else "push it along"
    elif phase == 0:
        purpose = "reach it" if rel != "at" else "line up for the grasp"
    elif phase == 1:
        purpose = "grasp it"
    elif phase == 2:
        words = move.split(", ")[0].split()
        if words[:2] == ["move", "up"] and len(words) == 2:
            purpose = "lift the object before carrying it"
        else:
            purpose = "carry the object there" if rel != "at" else "bring the object into place"
    elif gripper_open and "open gripper" not in move:
        purpose = "move clear of the released object"
    else:
        purpose = "release the object there"
    return clean_text(f"The gripper is {state} and {where}, {SHOULD}{goal} to {purpose}.")


def template_reasoning(
    episode: Episode,
    primitives: Sequence[str],
    gripper_points: np.ndarray | None,
    bboxes: Sequence[Sequence[Any]],
) -> dict[str, dict[str, str]]:
    """``{str(step): {task, plan, subtask, subtask_reason, move, move_reason}}`` for every step."""
    t = len(episode)
    if len(primitives) != t or len(bboxes) != t:
        raise ValueError(f"need one primitive and one box list per step ({t}); got {len(primitives)} and {len(bboxes)}")
    spec = task_spec(episode)
    steps = plan_steps(spec)
    plan = clean_text(render_plan(steps))
    grasp_family = spec.family.lower() not in ("push", "slide")
    open_track = gripper_open_track(episode)
    phase = phases(open_track, len(steps), grasp_family, push_start(episode, spec) if not grasp_family else 0)
    task = clean_text(episode.instruction)
    reasons = [subtask_reason(spec, k, grasp_family) for k in range(len(steps))]
    out: dict[str, dict[str, str]] = {}
    for i in range(t):
        k = int(phase[i])
        focus = spec.target if (grasp_family and k >= 2 and spec.target) else spec.object
        point = None if gripper_points is None or np.isnan(gripper_points[i]).any() else gripper_points[i]
        rel = relation(point, _box_of(focus, bboxes[i]))
        move = clean_text(primitives[i])
        out[str(i)] = {
            "task": task,
            "plan": plan,
            "subtask": clean_text(steps[k]),
            "subtask_reason": reasons[k],
            "move": move,
            "move_reason": move_reason(bool(open_track[i]), rel, focus, move, k, grasp_family),
        }
    return out
