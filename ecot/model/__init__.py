"""The VLA model: timm-named ViTs + projector + transformers' Llama, from tiny CPU presets to the 7B releases.

Public names are imported lazily so that ``import ecot.model`` stays cheap::

    from ecot.model import VLA, VLAConfig, VLAProcessor

    vla = VLA.from_pretrained("Embodied-CoT/ecot-openvla-7b-bridge", dtype="bfloat16", device="cuda")
    result = vla.predict_action(image, "put the carrot on the plate", unnorm_key="bridge_orig")
    result.action, result.reasoning, result.text
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "VLA": "ecot.model.vla",
    "ActionPrediction": "ecot.model.vla",
    "ActionDecodeError": "ecot.model.vla",
    "IGNORE_INDEX": "ecot.model.vla",
    "VLAConfig": "ecot.model.config",
    "ViTSpec": "ecot.model.config",
    "PRESETS": "ecot.model.config",
    "VLAProcessor": "ecot.model.processor",
    "CheckpointError": "ecot.model.checkpoint",
    "train_tiny_tokenizer": "ecot.model.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ecot.model' has no attribute {name!r}")
