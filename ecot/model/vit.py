"""Vision transformers with timm's parameter names, so released checkpoints load by name.

One class covers both towers of the OpenVLA/ECoT family (driven by :class:`~ecot.model.config.ViTSpec`):

* SigLIP So400m/14 (``vit_so400m_patch14_siglip_224``): no class token, ``pos_embed`` over the
  patches, exact GELU (timm's default), and the attention-pool head ``attn_pool.*`` — saved in
  the checkpoints, so it exists here, although the VLA's features do not use it;
* DINOv2 ViT-L/14 with 4 registers: ``cls_token`` + ``reg_token``, ``pos_embed`` over the patches
  only (added before the prefix tokens are prepended), LayerScale after attention and MLP whose
  parameter is called ``scale_factor`` (the name OpenVLA's checkpoints use instead of ``gamma``).

All blocks are pre-norm with LayerNorm eps 1e-6. The VLA feature is the output of the
second-to-last block with the prefix tokens removed and no final norm (docs/formats.md §7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ecot.model.config import ViTSpec

_LN_EPS = 1e-6


def _activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"unknown activation {name!r}")


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: ``proj`` is a stride-``patch`` convolution."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = _activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale; the parameter is ``scale_factor`` as in the released checkpoints."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Block(nn.Module):
    def __init__(self, spec: ViTSpec):
        super().__init__()
        dim = spec.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn = Attention(dim, spec.num_heads)
        self.ls1 = LayerScale(dim) if spec.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim, spec.mlp_hidden, spec.act)
        self.ls2 = LayerScale(dim) if spec.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolLatent(nn.Module):
    """SigLIP's "MAP" head: one learned query attends over the tokens, then a residual MLP."""

    def __init__(self, spec: ViTSpec):
        super().__init__()
        dim = spec.embed_dim
        self.num_heads = spec.num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.mlp = Mlp(dim, spec.mlp_hidden, spec.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, h, c // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c)
        out = self.proj(out)
        out = out + self.mlp(self.norm(out))
        return out[:, 0]


class VisionTransformer(nn.Module):
    """A timm-named ViT; :meth:`forward` returns the VLA features ``[B, num_patches, embed_dim]``."""

    def __init__(self, spec: ViTSpec, image_size: int):
        super().__init__()
        self.spec = spec
        self.image_size = image_size
        self.grid = image_size // spec.patch_size
        self.num_patches = self.grid**2
        dim = spec.embed_dim
        # Parameter creation order follows timm, so state_dict() lists keys like the checkpoints.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if spec.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, spec.reg_tokens, dim)) if spec.reg_tokens else None
        pos_len = self.num_patches if spec.no_embed_class or not spec.class_token else self.num_patches + spec.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.randn(1, pos_len, dim) * 0.02)
        self.patch_embed = PatchEmbed(spec.patch_size, 3, dim)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.attn_pool = AttentionPoolLatent(spec) if spec.global_pool == "map" else None
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for p in (self.cls_token, self.reg_token):
            if p is not None:
                nn.init.normal_(p, std=1e-6)
        if self.attn_pool is not None:
            nn.init.trunc_normal_(self.attn_pool.latent, std=self.spec.embed_dim**-0.5)

    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} images, got {tuple(pixel_values.shape[-2:])}"
            )
        x = self.patch_embed(pixel_values)
        prefix = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.spec.no_embed_class or not prefix:
            x = x + self.pos_embed
            return torch.cat(prefix + [x], dim=1) if prefix else x
        x = torch.cat(prefix + [x], dim=1)
        return x + self.pos_embed

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch tokens after block ``depth - 2``: prefix tokens dropped, no final norm."""
        x = self._tokens(pixel_values)
        for block in self.blocks[: self.spec.feature_layer + 1]:
            x = block(x)
        return x[:, self.spec.num_prefix_tokens :]

    def forward_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The tower's own image embedding (all blocks, final norm, pool head): ``[B, embed_dim]``."""
        x = self._tokens(pixel_values)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if self.attn_pool is not None:
            return self.attn_pool(x[:, self.spec.num_prefix_tokens :])
        return x[:, 0]
