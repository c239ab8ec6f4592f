"""The vision side of the VLA: one or two timm-named towers and the projector into the LLM.

A fused backbone (DINOv2 + SigLIP) takes a 6-channel image, channels 0-2 normalized for the
first tower and 3-5 for the second, and concatenates the two patch feature maps on the channel
axis (docs/formats.md §7). Module names match the released checkpoints:
``vision_backbone.featurizer``, ``vision_backbone.fused_featurizer``, ``projector.fc1..fc3``.
"""

from __future__ import annotations

import torch
from torch import nn

from ecot.model.config import VLAConfig
from ecot.model.vit import VisionTransformer


class VisionBackbone(nn.Module):
    def __init__(self, config: VLAConfig):
        super().__init__()
        specs = config.vision_specs
        self.featurizer = VisionTransformer(specs[0], config.image_sizes[0])
        self.fused_featurizer = VisionTransformer(specs[1], config.image_sizes[1]) if len(specs) == 2 else None
        self.embed_dim = sum(s.embed_dim for s in specs)
        self.in_channels = 3 * len(specs)

    @property
    def num_patches(self) -> int:
        return self.featurizer.num_patches

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3 or 6, H, W]`` -> patch features ``[B, num_patches, embed_dim]``."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.in_channels:
            raise ValueError(
                f"pixel_values must be [B, {self.in_channels}, H, W] for this backbone, got {tuple(pixel_values.shape)}"
            )
        if self.fused_featurizer is None:
            return self.featurizer(pixel_values)
        first, second = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat([self.featurizer(first), self.fused_featurizer(second)], dim=2)


class Projector(nn.Module):
    """``gelu-mlp``: fc1 (vision->llm), GELU, fc2. ``fused-gelu-mlp``: fc1 (vision->4*vision), GELU, fc2 (->llm), GELU, fc3."""

    def __init__(self, kind: str, vision_dim: int, llm_dim: int):
        super().__init__()
        self.kind = kind
        if kind == "gelu-mlp":
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.fc3 = None
        elif kind == "fused-gelu-mlp":
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            raise ValueError(f"unknown projector {kind!r}; expected gelu-mlp or fused-gelu-mlp")
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(features)))
        if self.fc3 is not None:
            x = self.fc3(self.act(x))
        return x
