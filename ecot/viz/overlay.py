"""Seeing what the robot thought: the reasoning drawn on the camera image.

A frame is the camera image (upscaled for legibility) with the VISIBLE OBJECTS boxes and the
GRIPPER POSITION trail drawn on it, above a text panel with the reasoning fields. Coordinates
in the reasoning are pixels of the image the policy saw (``coords_size`` when they refer to
another resolution, e.g. 256 for Bridge data shown at 224).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ecot.io import atomic_path
from ecot.reasoning import Reasoning

PALETTE = [(230, 57, 70), (42, 157, 143), (233, 196, 106), (69, 123, 157), (244, 162, 97), (131, 56, 236)]
GRIPPER_COLOUR = (255, 0, 255)
PANEL_FIELDS = [
    ("TASK", "task"),
    ("PLAN", "plan"),
    ("SUBTASK REASONING", "subtask_reasoning"),
    ("SUBTASK", "subtask"),
    ("MOVE REASONING", "move_reasoning"),
    ("MOVE", "move"),
]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def draw_reasoning(
    image: np.ndarray | Image.Image,
    reasoning: Reasoning,
    scale: int = 2,
    coords_size: Sequence[int] | int | None = None,
) -> Image.Image:
    """The image, ``scale`` times larger, with the reasoning's boxes and gripper trail drawn."""
    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    base = base.convert("RGB")
    width, height = base.size
    if coords_size is None:
        sx, sy = scale, scale
    else:
        cw, ch = (coords_size, coords_size) if isinstance(coords_size, int) else coords_size
        sx, sy = scale * width / cw, scale * height / ch
    canvas = base.resize((width * scale, height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, 6 * scale))
    for i, (name, box) in enumerate(reasoning.visible_objects):
        colour = PALETTE[i % len(PALETTE)]
        x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        if x1 < x0 or y1 < y0:
            continue  # a malformed generated box: nothing sensible to draw
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=max(1, scale))
        draw.text((x0 + 2, max(0, y0 - font.size - 2) if hasattr(font, "size") else y0), name, fill=colour, font=font)
    points = [(x * sx, y * sy) for x, y in reasoning.gripper_positions]
    if len(points) > 1:
        draw.line(points, fill=GRIPPER_COLOUR, width=max(1, scale))
    for k, (x, y) in enumerate(points):
        r = (3 if k == 0 else 2) * scale
        draw.ellipse([x - r, y - r, x + r, y + r], outline=GRIPPER_COLOUR, fill=GRIPPER_COLOUR if k == 0 else None)
    return canvas


def text_panel(lines: Iterable[str], width: int, font_size: int = 12, max_lines: int = 18) -> Image.Image:
    """White panel with the lines wrapped to ``width`` pixels."""
    font = _font(font_size)
    chars = max(20, int(width / (font_size * 0.55)))
    wrapped: list[str] = []
    for line in lines:
        wrapped.extend(textwrap.wrap(line, chars) or [""])
    if len(wrapped) > max_lines:
        wrapped = wrapped[: max_lines - 1] + ["…"]
    line_height = font_size + 4
    panel = Image.new("RGB", (width, line_height * len(wrapped) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(wrapped):
        draw.text((6, 4 + i * line_height), line, fill=(20, 20, 20), font=font)
    return panel


def reasoning_frame(
    image: np.ndarray | Image.Image,
    reasoning: Reasoning,
    header: str = "",
    action: Sequence[float] | None = None,
    scale: int = 2,
    coords_size: Sequence[int] | int | None = None,
    panel_height: int | None = None,
) -> np.ndarray:
    """One video frame: the annotated image above the reasoning text. Returns HxWx3 uint8."""
    top = draw_reasoning(image, reasoning, scale=scale, coords_size=coords_size)
    lines = [header] if header else []
    lines += [f"{tag}: {getattr(reasoning, name)}" for tag, name in PANEL_FIELDS if getattr(reasoning, name)]
    if action is not None:
        lines.append("ACTION: [" + ", ".join(f"{a:+.3f}" for a in action) + "]")
    if reasoning.problems:
        lines.append("(parse: " + "; ".join(reasoning.problems[:2]) + ")")
    panel = text_panel(lines, top.width)
    height = top.height + (panel_height or panel.height)
    frame = Image.new("RGB", (top.width, height), (255, 255, 255))
    frame.paste(top, (0, 0))
    frame.paste(panel.crop((0, 0, top.width, min(panel.height, height - top.height))), (0, top.height))
    return np.asarray(frame)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 5.0) -> Path:
    """Write frames (padded to one size) as a looping GIF, atomically."""
    if not frames:
        raise ValueError("no frames to write")
    height = max(f.shape[0] for f in frames)
    width = max(f.shape[1] for f in frames)
    images = []
    for f in frames:
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        canvas.paste(Image.fromarray(f), (0, 0))
        images.append(canvas)
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
