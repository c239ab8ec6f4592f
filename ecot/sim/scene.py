"""The tabletop scene: object catalogue and the MJCF model of one layout.

World frame: the table top is the plane z = 0 centred at the origin; the robot stands at
negative x looking along +x ("forward"), +y is its left, +z is up. The gripper is a
Cartesian gantry (x, y, z slides and a yaw hinge, gravity compensated) carrying a
parallel-jaw gripper whose fingers close along the gripper's local y axis.

Each object is one body named ``obj{k}``; its geoms are ``obj{k}_g{j}``. Besides the XML we
keep, per object, a set of points on its surface in the body frame: projecting them gives
the object's image box (exact for boxes, tight for round shapes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.30, 0.85),
    "yellow": (0.95, 0.82, 0.10),
    "purple": (0.55, 0.20, 0.70),
    "orange": (0.98, 0.50, 0.08),
}

# kind -> (graspable, receptacle, footprint radius in m, height in m)
KINDS: dict[str, dict] = {
    "block": {"graspable": True, "receptacle": False, "radius": 0.028, "height": 0.04, "stackable": True},
    "cylinder": {"graspable": True, "receptacle": False, "radius": 0.02, "height": 0.05, "stackable": True},
    "ball": {"graspable": True, "receptacle": False, "radius": 0.022, "height": 0.044, "stackable": False},
    "bar": {"graspable": True, "receptacle": False, "radius": 0.055, "height": 0.036, "stackable": False},
    "bowl": {"graspable": False, "receptacle": True, "radius": 0.075, "height": 0.035, "stackable": False},
    "plate": {"graspable": False, "receptacle": True, "radius": 0.075, "height": 0.008, "stackable": False},
}

TABLE_HALF = (0.32, 0.38)  # half extents of the visible table top (x, y)
WORKSPACE = ((-0.17, 0.17), (-0.24, 0.24))  # where object centres are placed (x range, y range)
# Where an episode's gripper starts: "home" (near the env's HOME_TCP, what evaluation uses),
# "anywhere" above the workspace, high enough to clear every object, so demonstrations also show
# the gripper where a drifting policy ends up (episode-level recovery data), or "table": planar
# pushing. The gripper then starts at pushing height on the camera's side of the workspace, and push
# tasks go to the left, right or back only, so it reaches the object without lifting or passing it.
# Its height never changes, which one oblique camera cannot show (docs/quality.md, round six).
# Fingertip x, y, z ranges:
START_REGIONS = ("home", "anywhere", "table")
ANYWHERE_START = np.array([[-0.20, 0.15], [-0.25, 0.25], [0.10, 0.22]])
PUSH_HEIGHT = 0.018  # fingertip height while pushing: the fingers' bottom 1 cm above the table
TABLE_START = np.array([[-0.225, -0.195], [-0.05, 0.05], [PUSH_HEIGHT, PUSH_HEIGHT]])

# Gripper geometry.
FINGER_OPEN = 0.045  # inner face of each finger at |y| = FINGER_OPEN when open
FINGER_TRAVEL = 0.04  # each finger slides inwards this much when fully closed
TCP_BELOW_WRIST = 0.07  # fingertip centre below the gripper body origin


@dataclass
class ObjectSpec:
    """One object of a layout: its kind, colour, and initial planar pose."""

    kind: str
    color: str
    x: float
    y: float
    yaw: float

    @property
    def name(self) -> str:
        return f"the {self.color} {self.kind}"

    @property
    def radius(self) -> float:
        return KINDS[self.kind]["radius"]

    @property
    def height(self) -> float:
        return KINDS[self.kind]["height"]


def _f(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def _box_points(center, half) -> list[np.ndarray]:
    cx, cy, cz = center
    hx, hy, hz = half
    return [np.array([cx + sx * hx, cy + sy * hy, cz + sz * hz]) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]


def _cylinder_points(center, radius, half_height, n=48) -> list[np.ndarray]:
    cx, cy, cz = center
    pts = []
    for i in range(n):
        a = 2 * math.pi * i / n
        for z in (cz - half_height, cz + half_height):
            pts.append(np.array([cx + radius * math.cos(a), cy + radius * math.sin(a), z]))
    return pts


def _sphere_points(center, radius, n=400) -> list[np.ndarray]:
    # Fibonacci sphere: nearly uniform points, enough for a tight projected box.
    pts = []
    golden = math.pi * (3 - math.sqrt(5))
    for i in range(n):
        z = 1 - 2 * (i + 0.5) / n
        r = math.sqrt(1 - z * z)
        a = golden * i
        pts.append(np.asarray(center) + radius * np.array([r * math.cos(a), r * math.sin(a), z]))
    return pts


def object_geoms(kind: str) -> tuple[list[dict], list[np.ndarray]]:
    """Geoms of one object kind (MJCF attributes, body frame) and its surface points."""
    geoms: list[dict] = []
    points: list[np.ndarray] = []
    if kind == "block":
        h = 0.02
        geoms.append({"type": "box", "size": (h, h, h), "pos": (0, 0, 0), "mass": 0.05})
        points += _box_points((0, 0, 0), (h, h, h))
    elif kind == "bar":
        half = (0.05, 0.016, 0.018)
        geoms.append({"type": "box", "size": half, "pos": (0, 0, 0), "mass": 0.06})
        points += _box_points((0, 0, 0), half)
    elif kind == "cylinder":
        geoms.append({"type": "cylinder", "size": (0.02, 0.025), "pos": (0, 0, 0), "mass": 0.05})
        points += _cylinder_points((0, 0, 0), 0.02, 0.025)
    elif kind == "ball":
        geoms.append({"type": "sphere", "size": (0.022,), "pos": (0, 0, 0), "mass": 0.04, "condim": 6,
                      "friction": (1.0, 0.01, 0.002)})
        points += _sphere_points((0, 0, 0), 0.022)
    elif kind == "plate":
        geoms.append({"type": "cylinder", "size": (0.075, 0.004), "pos": (0, 0, 0), "mass": 0.3})
        points += _cylinder_points((0, 0, 0), 0.075, 0.004)
    elif kind == "bowl":
        # A flat base and a ring of wall segments; the body origin is at the base centre.
        geoms.append({"type": "cylinder", "size": (0.06, 0.004), "pos": (0, 0, -0.0135), "mass": 0.3})
        points += _cylinder_points((0, 0, -0.0135), 0.06, 0.004)
        n = 14
        wall_r, half_t, half_h = 0.068, 0.005, 0.0175
        half_len = wall_r * math.tan(math.pi / n) + 0.002
        for i in range(n):
            a = 2 * math.pi * i / n
            geoms.append({
                "type": "box", "size": (half_t, half_len, half_h),
                "pos": (wall_r * math.cos(a), wall_r * math.sin(a), 0.0), "euler": (0, 0, a), "mass": 0.02,
            })
            # Outer rim circle at the top and bottom bounds the wall's silhouette.
        points += _cylinder_points((0, 0, 0), wall_r + half_t, half_h, n=64)
    else:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {sorted(KINDS)}")
    return geoms, points


def body_height_offset(kind: str) -> float:
    """Height of the body origin above the table when the object rests on it."""
    return {"block": 0.02, "bar": 0.018, "cylinder": 0.025, "ball": 0.022, "plate": 0.004, "bowl": 0.0175}[kind]


def _look_at_xyaxes(pos, target) -> tuple[np.ndarray, np.ndarray]:
    """MJCF camera ``xyaxes`` so that the camera at ``pos`` looks at ``target`` with world z up."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x_axis = np.cross(forward, [0.0, 0.0, 1.0])
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(x_axis, forward)
    return x_axis, y_axis


CAMERA_POS = (-0.40, 0.0, 0.45)
CAMERA_TARGET = (0.05, 0.0, 0.0)
CAMERA_FOVY = 55.0
# The scene's cameras: "main" looks over the robot's shoulder (what datasets use by default);
# "top" looks straight down from 1 m with a narrow field (nearly orthographic), robot's forward up
# in the image: a table position maps to one pixel whatever the depth, and objects look the same
# size everywhere. It frames the table from the "table" start line to the push goals.
CAMERAS = ("main", "top")
TOP_CAMERA_POS = (-0.025, 0.0, 1.0)
TOP_CAMERA_FOVY = 30.0


def build_scene_xml(objects: list[ObjectSpec], image_size: tuple[int, int]) -> tuple[str, list[np.ndarray]]:
    """MJCF text for a layout and, per object, its surface points (body frame, [P, 3])."""
    height, width = image_size
    xa, ya = _look_at_xyaxes(CAMERA_POS, CAMERA_TARGET)
    obj_xml = []
    point_sets = []
    for k, spec in enumerate(objects):
        rgb = COLORS[spec.color]
        geoms, points = object_geoms(spec.kind)
        point_sets.append(np.asarray(points, dtype=np.float64))
        z = body_height_offset(spec.kind) + 0.001
        lines = [f'    <body name="obj{k}" pos="{_f((spec.x, spec.y, z))}" euler="0 0 {spec.yaw:.6g}">',
                 f'      <freejoint name="obj{k}_free"/>']
        for j, g in enumerate(geoms):
            attrs = [f'name="obj{k}_g{j}"', f'type="{g["type"]}"', f'size="{_f(g["size"])}"', f'pos="{_f(g["pos"])}"',
                     f'mass="{g["mass"]}"', f'rgba="{_f(rgb)} 1"']
            if "euler" in g:
                attrs.append(f'euler="{_f(g["euler"])}"')
            if "condim" in g:
                attrs.append(f'condim="{g["condim"]}"')
            if "friction" in g:
                attrs.append(f'friction="{_f(g["friction"])}"')
            lines.append(f'      <geom {" ".join(attrs)}/>')
        lines.append("    </body>")
        obj_xml.append("\n".join(lines))
    xml = f"""<mujoco model="ecot_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.004" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{max(width, 640)}" offheight="{max(height, 480)}"/>
    <quality shadowsize="1024"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
  </visual>
  <default>
    <geom friction="1.0 0.01 0.0005" condim="4" solref="0.008 1"/>
  </default>
  <asset>
    <texture name="floor_tex" type="2d" builtin="checker" rgb1="0.30 0.30 0.32" rgb2="0.26 0.26 0.28" width="64" height="64"/>
    <material name="floor_mat" texture="floor_tex" texrepeat="8 8"/>
    <texture name="wood" type="2d" builtin="flat" rgb1="0.72 0.58 0.42" width="16" height="16"/>
    <material name="table_mat" texture="wood" rgba="0.75 0.62 0.46 1"/>
  </asset>
  <worldbody>
    <light name="key" pos="-0.3 0.2 1.2" dir="0.25 -0.1 -1" diffuse="0.55 0.55 0.55" castshadow="false"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.75" material="floor_mat" contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="{TABLE_HALF[0]} {TABLE_HALF[1]} 0.02" pos="0 0 -0.02" material="table_mat"/>
    <geom name="table_leg" type="box" size="0.05 0.05 0.36" pos="0 0 -0.39" rgba="0.4 0.33 0.25 1" contype="0" conaffinity="0"/>
    <camera name="main" pos="{_f(CAMERA_POS)}" xyaxes="{_f(xa)} {_f(ya)}" fovy="{CAMERA_FOVY}"/>
    <camera name="top" pos="{_f(TOP_CAMERA_POS)}" xyaxes="0 -1 0 1 0 0" fovy="{TOP_CAMERA_FOVY}"/>
    <body name="gripper" pos="0 0 0" gravcomp="1">
      <joint name="gx" type="slide" axis="1 0 0" range="-0.3 0.3" damping="5"/>
      <joint name="gy" type="slide" axis="0 1 0" range="-0.35 0.35" damping="5"/>
      <joint name="gz" type="slide" axis="0 0 1" range="0.0 0.45" damping="5"/>
      <joint name="gyaw" type="hinge" axis="0 0 1" range="-3.2 3.2" damping="0.02"/>
      <geom name="wrist" group="1" type="cylinder" size="0.018 0.05" pos="0 0 0.05" rgba="0.25 0.25 0.27 1" contype="0" conaffinity="0" mass="0.1"/>
      <geom name="palm" group="1" type="box" size="0.022 0.062 0.012" pos="0 0 -0.012" rgba="0.3 0.3 0.33 1" mass="0.3"/>
      <site name="tcp" pos="0 0 -{TCP_BELOW_WRIST}" size="0.004" rgba="1 0 0 0"/>
      <body name="finger_left" pos="0 {FINGER_OPEN + 0.006} -0.05" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 -1 0" range="0 {FINGER_TRAVEL}" damping="2"/>
        <geom name="finger_left" type="box" group="1" size="0.011 0.006 0.028" rgba="0.82 0.82 0.85 1" friction="1.6 0.02 0.001" mass="0.03"/>
      </body>
      <body name="finger_right" pos="0 -{FINGER_OPEN + 0.006} -0.05" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 1 0" range="0 {FINGER_TRAVEL}" damping="2"/>
        <geom name="finger_right" type="box" group="1" size="0.011 0.006 0.028" rgba="0.82 0.82 0.85 1" friction="1.6 0.02 0.001" mass="0.03"/>
      </body>
    </body>
{chr(10).join(obj_xml)}
  </worldbody>
  <equality>
    <joint name="finger_sync" joint1="finger_left" joint2="finger_right" polycoef="0 1 0 0 0" solref="0.005 1"/>
  </equality>
  <actuator>
    <position name="ax" joint="gx" kp="2000" kv="90"/>
    <position name="ay" joint="gy" kp="2000" kv="90"/>
    <position name="az" joint="gz" kp="2000" kv="90"/>
    <position name="ayaw" joint="gyaw" kp="20" kv="0.25"/>
    <position name="afinger" joint="finger_left" kp="400" kv="10" forcerange="-25 25" ctrlrange="0 {FINGER_TRAVEL}"/>
  </actuator>
</mujoco>
"""
    return xml, point_sets
