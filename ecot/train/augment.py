"""Image augmentation of the OpenVLA recipe, on PIL images (torchvision cannot be used here).

OpenVLA's ``image_aug`` applies, in order: a random resized crop keeping 90 % of the area at
aspect 1, then brightness (±0.2), contrast and saturation (×0.8..1.2) and hue (±0.05) jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance


@dataclass
class AugmentConfig:
    crop_area: float = 0.9  # fraction of the image area kept by the random crop
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05  # fraction of the hue circle


def augment_image(image: Image.Image, rng: np.random.Generator, config: AugmentConfig | None = None) -> Image.Image:
    """A randomly cropped and colour-jittered copy of ``image`` (same size, RGB)."""
    cfg = config or AugmentConfig()
    image = image.convert("RGB")
    w, h = image.size
    side_w = max(1, int(round(w * cfg.crop_area**0.5)))
    side_h = max(1, int(round(h * cfg.crop_area**0.5)))
    x0 = int(rng.integers(0, w - side_w + 1))
    y0 = int(rng.integers(0, h - side_h + 1))
    image = image.crop((x0, y0, x0 + side_w, y0 + side_h)).resize((w, h), Image.BICUBIC)
    image = ImageEnhance.Brightness(image).enhance(float(1.0 + rng.uniform(-cfg.brightness, cfg.brightness)))
    image = ImageEnhance.Contrast(image).enhance(float(rng.uniform(*cfg.contrast)))
    image = ImageEnhance.Color(image).enhance(float(rng.uniform(*cfg.saturation)))
    if cfg.hue > 0:
        shift = int(round(rng.uniform(-cfg.hue, cfg.hue) * 255))
        hsv = np.array(image.convert("HSV"), dtype=np.int16)
        hsv[..., 0] = (hsv[..., 0] + shift) % 256
        image = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    return image
