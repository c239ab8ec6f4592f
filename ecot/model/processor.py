"""Images and text in the model's format: preprocessing, tokenizer, prompt style, action tokens.

Image preprocessing reproduces the released processor (docs/formats.md §7) without torchvision:

* ``letterbox``: pad to a square with fill (127, 127, 127) — ``int((max - side) / 2)`` on each
  side, so an odd difference leaves it one pixel short — then resize the shorter side to the
  model size (PIL bicubic), center-crop, scale to [0, 1] and normalize;
* ``resize-naive``: resize straight to ``size x size`` (PIL bicubic), then normalize;
* ``resize-crop``: resize the shorter side, center-crop.

A fused backbone gets the image twice, normalized per tower and stacked to 6 channels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecot.actions import ActionTokenizer, NormStats
from ecot.model.config import VLAConfig

LETTERBOX_FILL = (127, 127, 127)
PREPROCESSOR_CONFIG = "preprocessor_config.json"


MIN_IMAGE_SIDE = 16  # smaller images carry no usable content (and 0x0 ones break resizing)


def to_pil(image: Any):
    """A PIL RGB image from a PIL image or an ``HxWx3`` uint8 array (at least 16 x 16 pixels)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        _check_size(*image.size)
        return image.convert("RGB") if image.mode != "RGB" else image
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a PIL image or an HxWx3 array, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image array (0-255), got dtype {arr.dtype}")
    _check_size(arr.shape[1], arr.shape[0])
    return Image.fromarray(arr, mode="RGB")


def _check_size(width: int, height: int) -> None:
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise ValueError(f"the image is {width}x{height} pixels; expected at least "
                         f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")


def letterbox_pad(image, fill=LETTERBOX_FILL):
    """Pad to (nearly) square like the original: ``int((max - side) / 2)`` pixels on both sides."""
    from PIL import Image

    w, h = image.size
    side = max(w, h)
    pad_x, pad_y = int((side - w) / 2), int((side - h) / 2)
    if pad_x == 0 and pad_y == 0:
        return image
    out = Image.new("RGB", (w + 2 * pad_x, h + 2 * pad_y), tuple(fill))
    out.paste(image, (pad_x, pad_y))
    return out


def resize_shorter(image, size: int):
    """Resize so the shorter side is ``size`` (torchvision's ``Resize(int)`` arithmetic), bicubic."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return image.resize((new_w, new_h), Image.BICUBIC)


def center_crop(image, size: int):
    w, h = image.size
    if (w, h) == (size, size):
        return image
    if w < size or h < size:
        raise ValueError(f"cannot center-crop {size}x{size} from a {w}x{h} image")
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_tensor(image) -> torch.Tensor:
    """PIL RGB -> float32 ``[3, H, W]`` in [0, 1]."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return (tensor - mean_t) / std_t


class VLAProcessor:
    """Everything between raw inputs and the model: image transform, tokenizer, prompt style, actions."""

    def __init__(self, config: VLAConfig, tokenizer: Any):
        self.config = config
        self.tokenizer = tokenizer
        self.image_size = config.image_size
        self.resize_strategy = config.image_resize_strategy
        self.means = [s.mean for s in config.vision_specs]
        self.stds = [s.std for s in config.vision_specs]
        self.prompt_style = config.prompt_style
        self.norm_stats = NormStats.from_dict(config.norm_stats or {})
        self.action_tokenizer = ActionTokenizer(int(tokenizer.vocab_size), n_bins=config.n_action_bins)
        embed_rows = int(config.text_config.get("vocab_size", 32000))
        if len(tokenizer) > embed_rows:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the model's embedding has {embed_rows} rows "
                "(text_config.vocab_size); the tokenizer does not belong to this model"
            )

    # ------------------------------------------------------------------ images

    def resize(self, image: Any):
        """The geometric part of preprocessing: PIL image of ``image_size x image_size``."""
        image = to_pil(image)
        size = self.image_size
        if self.resize_strategy == "letterbox":
            return center_crop(resize_shorter(letterbox_pad(image), size), size)
        if self.resize_strategy == "resize-naive":
            from PIL import Image

            return image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC)
        return center_crop(resize_shorter(image, size), size)  # resize-crop

    def image_transform(self, image: Any) -> torch.Tensor:
        """PIL image or ``HxWx3`` uint8 array -> float32 ``[3 or 6, S, S]`` pixel values."""
        pixels = to_tensor(self.resize(image))
        return torch.cat([normalize(pixels, m, s) for m, s in zip(self.means, self.stds)], dim=0)

    def __call__(self, images: Any, text: str | list[str] | None = None, **tokenizer_kwargs: Any) -> dict:
        """Batch form: ``{"pixel_values": [B, C, S, S], "input_ids", "attention_mask"}``."""
        batch = images if isinstance(images, (list, tuple)) else [images]
        out: dict[str, Any] = {"pixel_values": torch.stack([self.image_transform(im) for im in batch])}
        if text is not None:
            tokenizer_kwargs.setdefault("return_tensors", "pt")
            tokenizer_kwargs.setdefault("padding", True)
            out.update(self.tokenizer(text, **tokenizer_kwargs))
        return out

    # ------------------------------------------------------------------ text

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """``[1, L]`` ids of ``prompt`` with BOS first (added if the tokenizer does not add it)."""
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + list(ids)
        return torch.tensor([ids], dtype=torch.long)

    def prompt(self, instruction: str) -> str:
        from ecot.prompts import inference_prompt

        return inference_prompt(instruction, self.prompt_style)

    # ------------------------------------------------------------------ files

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the tokenizer files and ``preprocessor_config.json`` (``config.json`` is the model's)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        info = {
            "image_processor_type": "ecot.VLAProcessor",
            "image_resize_strategy": self.resize_strategy,
            "input_sizes": [[3, self.image_size, self.image_size] for _ in self.means],
            "interpolations": ["bicubic" for _ in self.means],
            "means": [list(m) for m in self.means],
            "stds": [list(s) for s in self.stds],
            "use_fused_vision_backbone": self.config.use_fused_vision_backbone,
        }
        tmp = path / f".{PREPROCESSOR_CONFIG}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(path / PREPROCESSOR_CONFIG)
        if not (path / "config.json").exists():
            self.config.save_pretrained(path)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, config: VLAConfig | None = None) -> "VLAProcessor":
        """Load from a checkpoint directory (``config.json`` + tokenizer files)."""
        from transformers import AutoTokenizer, LlamaConfig

        path = Path(path)
        if config is None:
            config = VLAConfig.from_pretrained(path)
        if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
            raise FileNotFoundError(f"no tokenizer files (tokenizer.json / tokenizer.model) in {path}")
        # The checkpoint's config.json is an OpenVLA config, which AutoTokenizer cannot read; its
        # language model is a Llama, which is all AutoTokenizer needs to know.
        tokenizer = AutoTokenizer.from_pretrained(str(path), config=LlamaConfig())
        return cls(config, tokenizer)
