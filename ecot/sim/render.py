"""Draw an episode's ground truth (object boxes, gripper point and trail) into a GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PALETTE = [(255, 64, 64), (64, 220, 64), (80, 140, 255), (255, 220, 0), (220, 90, 255), (255, 150, 40), (0, 230, 230), (255, 255, 255)]


def draw_ground_truth(image: np.ndarray, gt, t: int, scale: int = 2, trail: int = 5):
    """One frame as a PIL image, upscaled by ``scale``, with boxes, names and the gripper point."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    if gt is None:
        return img
    for k, name in enumerate(gt.object_names):
        if not gt.object_visible[t, k]:
            continue
        x0, y0, x1, y1 = (float(v) * scale for v in gt.object_boxes[t, k])
        color = PALETTE[k % len(PALETTE)]
        draw.rectangle([x0, y0, x1, y1], outline=color, width=2)
        draw.text((x0 + 2, max(0.0, y0 - 11)), name.replace("the ", ""), fill=color)
    start = max(0, t - trail)
    pts = [(float(p[0]) * scale, float(p[1]) * scale) for p in gt.gripper_points[start:t + 1]]
    if len(pts) > 1:
        draw.line(pts, fill=(255, 255, 255), width=1)
    if gt.gripper_visible[t]:
        x, y = pts[-1]
        color = (0, 255, 0) if gt.gripper_open[t] else (255, 0, 0)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=color, width=2)
    return img


def render_episode_gif(episode, out: str | Path, scale: int = 2, fps: float = 5.0) -> Path:
    """Write ``episode`` as an animated GIF with its ground truth and instruction drawn."""
    from PIL import ImageDraw

    out = Path(out)
    frames = []
    for t in range(len(episode)):
        img = draw_ground_truth(episode.images[t], episode.ground_truth, t, scale=scale)
        ImageDraw.Draw(img).text((4, 4), f"{episode.instruction}  [t={t}]", fill=(255, 255, 255))
        frames.append(img.quantize(colors=255))  # adaptive palette per frame
    if not frames:
        raise ValueError("episode has no frames to render")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0,
                   optimize=False, disposal=1)
    tmp.replace(out)
    return out
