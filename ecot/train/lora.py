"""LoRA through peft, and merging the adapters back into plain weights for export.

Adapters go on every ``nn.Linear`` of the language model and the projector (OpenVLA's
``target_modules="all-linear"``, which leaves out the LM head), and of the vision backbone when
it is trained too. Exported checkpoints hold merged weights under the model's own parameter
names, so they load with ``VLA.from_pretrained`` without peft.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ecot.options import option

ADAPTER = "default"


@dataclass
class LoraSettings:
    rank: int = 32
    alpha: int = 16  # OpenVLA: min(rank, 16)
    dropout: float = 0.0
    include_vision: bool = option(False, cli=False)  # not an `ecot train` flag


def target_modules(model: nn.Module, include_vision: bool = False) -> list[str]:
    """Names of the linear layers that get adapters."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.endswith("lm_head"):
            continue
        if name.startswith("vision_backbone") and not include_vision:
            continue
        names.append(name)
    if not names:
        raise ValueError("found no linear layers to put LoRA adapters on")
    return names


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """The model wrapped by peft with fresh adapters; only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_modules(model, settings.include_vision),
        init_lora_weights="gaussian",
    )
    return get_peft_model(model, config)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (what a LoRA run must save to resume)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k}


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of the base model with every adapter merged in, under the base model's names.

    Computed out of place: the training model keeps its adapters.
    """
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            deltas[f"{name}.weight"] = module.get_delta_weight(ADAPTER).detach()
    merged: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        clean = key.replace(".base_layer.", ".")
        value = value.detach()
        if clean in deltas:
            value = value + deltas[clean].to(value.dtype)
        merged[clean] = value.cpu().clone()
    missing = set(deltas) - set(merged)
    if missing:  # pragma: no cover - would mean peft renamed its layers
        raise RuntimeError(f"could not place merged LoRA deltas for {sorted(missing)[:3]}")
    return merged
