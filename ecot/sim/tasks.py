"""Task families, language templates, generalization splits and success checks.

Four families (the manipulated object is always graspable):

* ``pick_place``:    put X in/on Y (Y a bowl or a plate)
* ``move_relation``: move X to the left of / right of / in front of / behind Y
* ``stack``:         stack X on top of Y (blocks and cylinders)
* ``push``:          push X to the left / right / front / back of the table

Directions follow the robot's view: the robot stands at -x looking along +x; "left" is +y,
"in front of" / "front" is towards the robot (-x), "behind" / "back" is away from it (+x).

Splits. ``seen`` scenes never contain a held-out appearance (colour + kind, e.g. the green
block) and never pose a held-out composition (e.g. a cylinder on a plate). ``heldout`` tasks
contain at least one of them in the task itself (manipulated object, target, or
composition): they test generalization to new object/colour/relation compositions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecot.sim.scene import COLORS, KINDS, TABLE_START, WORKSPACE, ObjectSpec, body_height_offset

FAMILIES = ("pick_place", "move_relation", "stack", "push")
SPLITS = ("seen", "heldout")

HELDOUT_APPEARANCES = frozenset({
    ("green", "block"), ("red", "cylinder"), ("blue", "ball"), ("yellow", "bar"), ("purple", "bowl"), ("orange", "plate"),
})
# (family, manipulated kind, target kind or relation/region)
HELDOUT_COMPOSITIONS = frozenset({
    ("pick_place", "cylinder", "plate"), ("pick_place", "bar", "bowl"),
    ("move_relation", "block", "behind"), ("move_relation", "ball", "left"),
    ("stack", "cylinder", "block"),
    ("push", "bar", "left"), ("push", "cylinder", "back"),
})

GRASPABLE = tuple(k for k, v in KINDS.items() if v["graspable"])
RECEPTACLES = tuple(k for k, v in KINDS.items() if v["receptacle"])
STACKABLE = tuple(k for k, v in KINDS.items() if v["stackable"])
PUSHABLE = ("block", "cylinder", "bar")

RELATIONS = ("left", "right", "front", "behind")
REGIONS = ("left", "right", "front", "back")
# Push sides a gripper starting at table height on the camera's side (start region "table") reaches
# without passing the object: it slides sideways, then forward to the object's near side.
TABLE_REGIONS = ("left", "right", "back")
# Unit direction in the table plane for each relation / region word.
DIRECTIONS = {
    "left": (0.0, 1.0), "right": (0.0, -1.0), "front": (-1.0, 0.0), "behind": (1.0, 0.0), "back": (1.0, 0.0),
}
REGION_THRESHOLD = 0.10  # |coordinate| beyond which an object is in a table region
PUSH_GOAL = 0.15  # where the expert pushes an object to (along the region's axis)

TEMPLATES: dict[str, list[str]] = {
    "pick_place": [
        "put {obj} {prep} {tgt}",
        "place {obj} {prep} {tgt}",
        "pick up {obj} and put it {prep} {tgt}",
        "move {obj} {into} {tgt}",
    ],
    "move_relation": ["move {obj} {rel} {tgt}", "put {obj} {rel} {tgt}", "place {obj} {rel} {tgt}"],
    "stack": ["stack {obj} on {tgt}", "put {obj} on top of {tgt}", "place {obj} on top of {tgt}", "stack {obj} on top of {tgt}"],
    "push": ["push {obj} to the {region} of the table", "slide {obj} to the {region} of the table",
             "push {obj} towards the {region} side of the table"],
}
RELATION_PHRASES = {
    "left": ["to the left of", "on the left side of"],
    "right": ["to the right of", "on the right side of"],
    "front": ["in front of"],
    "behind": ["behind", "to the back of"],
}


@dataclass
class TaskSpec:
    """One task instance: the layout, which objects the task is about, and its instruction."""

    family: str
    objects: list[ObjectSpec]
    main: int  # index of the manipulated object
    target: int | None  # receptacle / reference / base object (None for push)
    relation: str | None  # relation word (move_relation) or table region (push)
    instruction: str
    split: str
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Structured description used by annotation to build plans without parsing language."""
        out: dict[str, Any] = {"family": self.family, "object": self.objects[self.main].name}
        if self.target is not None:
            out["target"] = self.objects[self.target].name
        if self.relation is not None:
            out["relation"] = self.relation
        return out

    @property
    def object_names(self) -> list[str]:
        return [o.name for o in self.objects]

    def is_heldout(self) -> bool:
        return task_is_heldout(self.family, self.objects, self.main, self.target, self.relation)


def task_is_heldout(family, objects, main, target, relation) -> bool:
    involved = [objects[main]] + ([objects[target]] if target is not None else [])
    if any((o.color, o.kind) in HELDOUT_APPEARANCES for o in involved):
        return True
    second = objects[target].kind if family in ("pick_place", "stack") else relation
    return (family, objects[main].kind, second) in HELDOUT_COMPOSITIONS


def _scene_ok_for_split(split, family, objects, main, target, relation) -> bool:
    if split == "heldout":
        return task_is_heldout(family, objects, main, target, relation)
    if any((o.color, o.kind) in HELDOUT_APPEARANCES for o in objects):
        return False
    return not task_is_heldout(family, objects, main, target, relation)


def _far_enough(x, y, r, placed: list[ObjectSpec], margin: float) -> bool:
    return all(math.hypot(x - o.x, y - o.y) >= r + o.radius + margin for o in placed)


def _sample_xy(rng, r, placed, margin=0.05, xr=None, yr=None, tries=200):
    xr = xr or (WORKSPACE[0][0] + r * 0.5, WORKSPACE[0][1] - r * 0.5)
    yr = yr or (WORKSPACE[1][0] + r * 0.5, WORKSPACE[1][1] - r * 0.5)
    for _ in range(tries):
        x, y = rng.uniform(*xr), rng.uniform(*yr)
        if _far_enough(x, y, r, placed, margin):
            return x, y
    return None


def _dist_point_segment(p, a, b) -> float:
    p, a, b = map(np.asarray, (p, a, b))
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def relation_goal(task: TaskSpec, ref_xy, main_radius: float, ref_radius: float):
    """Where the expert puts the object for a move_relation task."""
    dx, dy = DIRECTIONS[task.relation]
    offset = ref_radius + main_radius + 0.06
    return ref_xy[0] + dx * offset, ref_xy[1] + dy * offset


def _try_sample(rng: np.random.Generator, family: str, num_objects: int, start: str = "home") -> tuple | None:
    colors = list(COLORS)
    used: set[tuple[str, str]] = set()

    def pick(kinds) -> tuple[str, str]:
        while True:
            c = (str(rng.choice(colors)), str(rng.choice(kinds)))
            if c not in used:
                used.add(c)
                return c

    objects: list[ObjectSpec] = []
    relation = None
    target = None
    if family == "pick_place":
        main_c, main_k = pick(GRASPABLE)
        tgt_c, tgt_k = pick(RECEPTACLES)
        specs = [(tgt_c, tgt_k), (main_c, main_k)]
        main, target = 1, 0
    elif family == "stack":
        main_c, main_k = pick(STACKABLE)
        base_c, base_k = pick(STACKABLE)
        specs = [(base_c, base_k), (main_c, main_k)]
        main, target = 1, 0
    elif family == "move_relation":
        relation = str(rng.choice(RELATIONS))
        ref_c, ref_k = pick(tuple(KINDS))
        main_c, main_k = pick(GRASPABLE)
        specs = [(ref_c, ref_k), (main_c, main_k)]
        main, target = 1, 0
    elif family == "push":
        relation = str(rng.choice(TABLE_REGIONS if start == "table" else REGIONS))
        main_c, main_k = pick(PUSHABLE)
        specs = [(main_c, main_k)]
        main = 0
    else:
        raise ValueError(f"unknown task family {family!r}; expected one of {FAMILIES}")

    # Place the task objects with family-specific constraints, then the distractors.
    for idx, (c, k) in enumerate(specs):
        r = KINDS[k]["radius"]
        xr = yr = None
        if family == "push" and idx == main:
            ax = 1 if relation in ("left", "right") else 0
            sign = DIRECTIONS[relation][ax]
            lo, hi = (-0.11, 0.0) if sign > 0 else (0.0, 0.11)  # start on the far side of the region
            if ax == 1:
                yr, xr = (lo, hi), (-0.12, 0.12)
            else:
                xr, yr = (lo, hi), (-0.18, 0.18)
        xy = _sample_xy(rng, r, objects, xr=xr, yr=yr)
        if xy is None:
            return None
        objects.append(ObjectSpec(kind=k, color=c, x=xy[0], y=xy[1], yaw=float(rng.uniform(-math.pi, math.pi))))

    if family == "move_relation":
        ref, mo = objects[target], objects[main]
        gx, gy = relation_goal(TaskSpec(family, objects, main, target, relation, "", ""), (ref.x, ref.y), mo.radius, ref.radius)
        (x0, x1), (y0, y1) = WORKSPACE
        if not (x0 + 0.02 <= gx <= x1 - 0.02 and y0 + 0.02 <= gy <= y1 - 0.02):
            return None
        if not _far_enough(gx, gy, mo.radius, [objects[target]], 0.03):
            return None
        if math.hypot(gx - mo.x, gy - mo.y) < 0.08:  # already nearly there: not a task
            return None

    while len(objects) < num_objects:
        c, k = pick(tuple(KINDS))
        r = KINDS[k]["radius"]
        xy = None
        for _ in range(50):
            cand = _sample_xy(rng, r, objects)
            if cand is None:
                break
            if _clear_of_task_paths(family, objects, main, target, relation, cand, r, start):
                xy = cand
                break
        if xy is None:
            return None
        objects.append(ObjectSpec(kind=k, color=c, x=xy[0], y=xy[1], yaw=float(rng.uniform(-math.pi, math.pi))))
    return objects, main, target, relation


def table_route(obj_xy, radius: float, relation: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Segments of the planar path from a "table" start to the near side of a push: sideways along
    the start line, then forward (``ScriptedExpert`` drives it; distractors are kept off it)."""
    behind = np.asarray(obj_xy, float) - np.asarray(DIRECTIONS[relation]) * (radius + 0.03)
    x0 = float(TABLE_START[0].mean())
    y_lo, y_hi = min(TABLE_START[1][0], behind[1]), max(TABLE_START[1][1], behind[1])
    return [(np.array([x0, y_lo]), np.array([x0, y_hi])), (np.array([x0, behind[1]]), behind)]


def _clear_of_task_paths(family, objects, main, target, relation, xy, r, start: str = "home") -> bool:
    """Distractors stay out of the expert's way: the push corridor (and, from a "table" start, the
    route to it) and the place spot."""
    mo = objects[main]
    if family == "push":
        ax = 1 if relation in ("left", "right") else 0
        d = np.asarray(DIRECTIONS[relation])
        begin = np.array([mo.x, mo.y]) - d * (mo.radius + 0.06)
        end = np.array([mo.x, mo.y])
        end[ax] = d[ax] * (PUSH_GOAL + 0.03)
        if _dist_point_segment(xy, begin, end) < r + mo.radius + 0.04:
            return False
        if start == "table":  # the gripper (about 2 cm wide) slides along the route at table height
            return all(_dist_point_segment(xy, a, b) >= r + 0.04 for a, b in table_route((mo.x, mo.y), mo.radius, relation))
        return True
    if family == "move_relation":
        ref = objects[target]
        gx, gy = relation_goal(TaskSpec(family, objects, main, target, relation, "", ""), (ref.x, ref.y), mo.radius, ref.radius)
        return math.hypot(xy[0] - gx, xy[1] - gy) >= r + mo.radius + 0.05
    return True


def make_instruction(rng: np.random.Generator, family: str, objects, main, target, relation) -> str:
    template = str(rng.choice(TEMPLATES[family]))
    obj = objects[main].name
    tgt = objects[target].name if target is not None else ""
    if family == "pick_place":
        bowl = objects[target].kind == "bowl"
        return template.format(obj=obj, tgt=tgt, prep="in" if bowl else "on", into="into" if bowl else "onto")
    if family == "move_relation":
        return template.format(obj=obj, tgt=tgt, rel=str(rng.choice(RELATION_PHRASES[relation])))
    if family == "stack":
        return template.format(obj=obj, tgt=tgt)
    return template.format(obj=obj, region=relation)


def min_objects(family: str) -> int:
    """Fewest objects a scene of ``family`` (or ``"all"``) can have: a push needs only its object,
    the other families a target or reference too."""
    return 1 if family == "push" else 2


def check_num_objects(family: str, num_objects: int) -> None:
    """Refuse a scene size the task family cannot be built with (a UsageError naming both)."""
    from ecot.errors import UsageError

    low = min_objects(family)
    if num_objects < low:
        why = "its object" if low == 1 else "a task object and a target or distractor"
        raise UsageError(f"num_objects must be at least {low} for task {family!r} ({why}), got {num_objects}")


def check_start(family: str, start: str) -> None:
    """A "table" start (planar pushing) has push tasks only: other families lift the object."""
    if start == "table" and family != "push":
        raise ValueError(f"start region 'table' (planar pushing) is for task 'push' only, got task {family!r}")


def check_start_option(task: str, start: str) -> None:
    """``--start`` against ``--task`` of a command (``task`` may be "all"): a UsageError naming both."""
    from ecot.errors import UsageError

    if start == "table" and task != "push":
        raise UsageError(f"--start table (planar pushing) needs --task push, got --task {task}")


def sample_task(rng: np.random.Generator, family: str, split: str = "seen", num_objects: int = 4,
                start: str = "home") -> TaskSpec:
    """A random task of ``family`` in ``split`` (layout + instruction), drawn from ``rng``; ``start`` is
    the gripper's start region (a "table" start allows push tasks to the left, right or back only)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; expected one of {', '.join(FAMILIES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if num_objects < min_objects(family):
        raise ValueError(f"num_objects must be at least {min_objects(family)} for {family}, got {num_objects}")
    check_start(family, start)
    for _ in range(5000):
        sampled = _try_sample(rng, family, num_objects, start)
        if sampled is None:
            continue
        objects, main, target, relation = sampled
        if not _scene_ok_for_split(split, family, objects, main, target, relation):
            continue
        # A task must need doing: reject layouts that already satisfy it.
        resting = np.array([[o.x, o.y, body_height_offset(o.kind)] for o in objects])
        if check_success(TaskSpec(family, objects, main, target, relation, "", split), resting, gripper_open=True):
            continue
        instruction = make_instruction(rng, family, objects, main, target, relation)
        return TaskSpec(family, objects, main, target, relation, instruction, split)
    raise RuntimeError(f"could not sample a {family} task for split {split} with {num_objects} objects")


# --------------------------------------------------------------------------- success checks


def check_success(task: TaskSpec, positions: np.ndarray, gripper_open: bool) -> bool:
    """Whether the task is achieved given object centre positions ``[K, 3]`` (world)."""
    mo = task.objects[task.main]
    p = positions[task.main]
    resting_on_table = p[2] < mo.height / 2 + 0.015
    if task.family == "push":
        ax = 1 if task.relation in ("left", "right") else 0
        sign = DIRECTIONS[task.relation][ax]
        return bool(resting_on_table and sign * p[ax] > REGION_THRESHOLD)
    if not gripper_open:
        return False  # the object must have been released
    q = positions[task.target]
    tgt = task.objects[task.target]
    horiz = float(np.hypot(p[0] - q[0], p[1] - q[1]))
    if task.family == "pick_place":
        if tgt.kind == "bowl":
            return bool(horiz < 0.055 and p[2] < q[2] + 0.05)
        return bool(horiz < 0.065 and p[2] < q[2] + mo.height / 2 + 0.025)
    if task.family == "stack":
        top_of_base = q[2] + tgt.height / 2
        return bool(horiz < 0.02 and abs(p[2] - (top_of_base + mo.height / 2)) < 0.015)
    if task.family == "move_relation":
        d = np.array(DIRECTIONS[task.relation])
        rel = p[:2] - q[:2]
        along = float(rel @ d)
        perp = float(abs(rel[0] * d[1] - rel[1] * d[0]))
        return bool(resting_on_table and tgt.radius + mo.radius < along < 0.3 and perp < 0.06)
    raise ValueError(f"unknown task family {task.family!r}")
