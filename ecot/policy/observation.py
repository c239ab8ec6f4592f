"""Checks on what a policy is given, before any of it reaches the model."""

from __future__ import annotations

from typing import Any

import numpy as np

from ecot.model.processor import MIN_IMAGE_SIDE

MAX_IMAGE_SIDE = 8192


def check_image(image: Any) -> Any:
    """Return ``image`` if it is a PIL image or an ``HxWx3`` uint8 array of a usable size, else raise ValueError."""
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            w, h = image.size
            _check_size(h, w)
            return image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        pass
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an image as an HxWx3 uint8 numpy array or a PIL image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 (RGB) image array, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array (values 0-255), got dtype {image.dtype}")
    _check_size(image.shape[0], image.shape[1])
    return image


def _check_size(h: int, w: int) -> None:
    if min(h, w) < MIN_IMAGE_SIDE:  # the same rule and words as the processor's
        raise ValueError(f"the image is {w}x{h} pixels; expected at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ValueError(f"image of {w}x{h} pixels is too large: each side must be at most {MAX_IMAGE_SIDE} pixels")


def check_instruction(instruction: Any, max_chars: int = 2000) -> str:
    if not isinstance(instruction, str):
        raise ValueError(f"expected the instruction as a string, got {type(instruction).__name__}")
    if not instruction.strip():
        raise ValueError("the instruction is empty")
    if len(instruction) > max_chars:
        raise ValueError(f"instruction of {len(instruction)} characters is too long (at most {max_chars})")
    return instruction
