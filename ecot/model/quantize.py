"""Optional 4-bit / 8-bit loading of the language model with bitsandbytes (CUDA only).

The Llama's linear layers (not ``lm_head``) are swapped for bitsandbytes layers on the meta
device before loading; each weight is quantized as it is moved to the GPU. The vision towers
and the projector stay in the requested dtype. Not testable without a GPU and bitsandbytes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _bnb():
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ImportError(
            "4-bit/8-bit loading needs bitsandbytes and a CUDA GPU: pip install 'ecot[quant]' "
            "(or pip install bitsandbytes)"
        ) from err
    return bnb


def replace_linear_layers(module: nn.Module, mode: str, device: torch.device, dtype: torch.dtype | None) -> None:
    """Swap ``nn.Linear`` layers under ``module`` (except ``lm_head``) for bitsandbytes ones."""
    if mode not in ("4bit", "8bit"):
        raise ValueError(f"quantization mode must be '4bit' or '8bit', got {mode!r}")
    bnb = _bnb()
    if torch.device(device).type != "cuda":
        raise ValueError(f"4-bit/8-bit loading runs on a CUDA device, got device={device}")
    compute_dtype = dtype or torch.bfloat16
    for name, child in list(module.named_modules()):
        for leaf, layer in list(child.named_children()):
            if not isinstance(layer, nn.Linear) or leaf == "lm_head":
                continue
            with torch.device("meta"):
                if mode == "4bit":
                    new = bnb.nn.Linear4bit(
                        layer.in_features, layer.out_features, bias=layer.bias is not None,
                        compute_dtype=compute_dtype, quant_type="nf4",
                    )
                else:
                    new = bnb.nn.Linear8bitLt(
                        layer.in_features, layer.out_features, bias=layer.bias is not None, has_fp16_weights=False
                    )
            setattr(child, leaf, new)


def param_kwargs(old: Any) -> dict:
    """Constructor arguments to rebuild a bitsandbytes parameter of the same kind as ``old``."""
    kind = type(old).__name__
    if kind == "Params4bit":
        return {"quant_type": getattr(old, "quant_type", "nf4")}
    if kind == "Int8Params":
        return {"has_fp16_weights": False}
    return {}
