"""Configuration of the VLA: the fields of a released OpenVLA/ECoT ``config.json`` plus presets.

A released ``config.json`` (docs/formats.md §7) names its vision towers by timm model id
(``timm_model_ids``) and saves only a stub of the Llama config (``text_config``); everything
else follows from those ids and from transformers' ``LlamaConfig`` defaults. This module holds
the table of known towers (:data:`VIT_SPECS`), :class:`VLAConfig` and its presets, from the
7B releases down to tiny CPU models that differ only in numbers.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

# Per-channel normalization of each tower family (docs/formats.md §7). DINOv2's are the ImageNet
# statistics rounded to bf16, exactly as the released processor config holds them.
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
DINOV2_MEAN = (0.484375, 0.455078125, 0.40625)
DINOV2_STD = (0.228515625, 0.2236328125, 0.224609375)


@dataclass(frozen=True)
class ViTSpec:
    """Shape and numerics of one vision transformer, named after the timm model it mirrors."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int  # int(embed_dim * mlp_ratio), as timm computes it
    patch_size: int = 14
    class_token: bool = False
    reg_tokens: int = 0
    no_embed_class: bool = False  # pos_embed covers only the patches (DINOv2 with registers)
    layer_scale: bool = False  # LayerScale after attention and MLP, saved as `ls*.scale_factor`
    global_pool: str = "map"  # "map": attention-pool head `attn_pool.*` (SigLIP); "token": none
    act: str = "gelu"  # timm's default nn.GELU (exact); "gelu_tanh" for the tanh approximation
    mean: tuple[float, float, float] = SIGLIP_MEAN
    std: tuple[float, float, float] = SIGLIP_STD

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def feature_layer(self) -> int:
        """Index of the block whose output is the feature map: the second-to-last."""
        return self.depth - 2


_SIGLIP_SO400M = ViTSpec(embed_dim=1152, depth=27, num_heads=16, mlp_hidden=4304)
_DINOV2_L_REG4 = ViTSpec(
    embed_dim=1024,
    depth=24,
    num_heads=16,
    mlp_hidden=4096,
    class_token=True,
    reg_tokens=4,
    no_embed_class=True,
    layer_scale=True,
    global_pool="token",
    mean=DINOV2_MEAN,
    std=DINOV2_STD,
)

# timm model id -> tower. The tiny ids are ours: the same architectures, CPU-sized.
VIT_SPECS: dict[str, ViTSpec] = {
    "vit_so400m_patch14_siglip_224": _SIGLIP_SO400M,
    "vit_large_patch14_reg4_dinov2.lvd142m": _DINOV2_L_REG4,
    "vit_large_patch14_reg4_dinov2": _DINOV2_L_REG4,
    "ecot_tiny_siglip_patch14": ViTSpec(embed_dim=64, depth=3, num_heads=4, mlp_hidden=239),
    "ecot_tiny_dinov2_reg4_patch14": replace(_DINOV2_L_REG4, embed_dim=48, depth=3, num_heads=3, mlp_hidden=192),
}

_ACTS = {None: None, "gelu": "gelu", "gelu_tanh": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": None}


def vit_spec(timm_id: str, act_override: str | None = None) -> ViTSpec:
    """The tower of a timm model id (with ``timm_override_act_layers`` applied)."""
    if timm_id not in VIT_SPECS:
        raise ValueError(f"unknown vision tower {timm_id!r}; known timm model ids: {sorted(VIT_SPECS)}")
    spec = VIT_SPECS[timm_id]
    if act_override is not None:
        act = _ACTS.get(act_override)
        if act is None:
            raise ValueError(f"unsupported timm_override_act_layers entry {act_override!r}; supported: gelu, gelu_tanh")
        spec = ViTSpec(**{**asdict(spec), "act": act})
    return spec


def _pad_vocab(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


@dataclass
class VLAConfig:
    """The fields of an OpenVLA/ECoT ``config.json``; defaults are the ``tiny-siglip`` preset.

    ``text_config`` is kept as saved (the released files hold only a stub); :meth:`llama_config`
    completes it with ``LlamaConfig`` defaults. Keys this class does not know (``auto_map``,
    ``transformers_version``, ...) are kept in ``extra`` and written back unchanged.
    """

    vision_backbone_id: str = "tiny-siglip"
    llm_backbone_id: str = "vicuna-tiny"
    arch_specifier: str = "no-align+gelu-mlp"
    use_fused_vision_backbone: bool = False
    image_resize_strategy: str = "letterbox"
    image_sizes: list[int] = field(default_factory=lambda: [112])
    timm_model_ids: list[str] = field(default_factory=lambda: ["ecot_tiny_siglip_patch14"])
    timm_override_act_layers: list[str | None] = field(default_factory=lambda: [None])
    hf_llm_id: str = ""
    llm_max_length: int = 2048
    pad_token_id: int = 1024
    pad_to_multiple_of: int = 64
    n_action_bins: int = 256
    norm_stats: dict[str, Any] = field(default_factory=dict)
    output_projector_states: bool = False
    text_config: dict[str, Any] = field(default_factory=lambda: dict(_TINY_TEXT))
    torch_dtype: str = "float32"
    model_type: str = "openvla"
    architectures: list[str] = field(default_factory=lambda: ["OpenVLAForActionPrediction"])
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived facts

    def validate(self) -> None:
        n = len(self.timm_model_ids)
        if n not in (1, 2):
            raise ValueError(f"timm_model_ids must name 1 or 2 towers, got {self.timm_model_ids}")
        if self.use_fused_vision_backbone != (n == 2):
            raise ValueError(
                f"use_fused_vision_backbone={self.use_fused_vision_backbone} but timm_model_ids has {n} entries "
                "(a fused backbone has exactly 2 towers)"
            )
        if len(self.image_sizes) != n:
            raise ValueError(f"image_sizes {self.image_sizes} must have one entry per tower ({n})")
        if len(set(self.image_sizes)) != 1:
            raise ValueError(f"towers of a fused backbone must share one image size, got {self.image_sizes}")
        if len(self.timm_override_act_layers) != n:
            raise ValueError(f"timm_override_act_layers {self.timm_override_act_layers} must have {n} entries")
        if self.image_resize_strategy not in ("letterbox", "resize-naive", "resize-crop"):
            raise ValueError(
                f"unknown image_resize_strategy {self.image_resize_strategy!r}; expected letterbox, resize-naive or resize-crop"
            )
        if self.projector_type not in ("gelu-mlp", "fused-gelu-mlp"):
            raise ValueError(
                f"unsupported arch_specifier {self.arch_specifier!r}; expected '...+gelu-mlp' or '...+fused-gelu-mlp'"
            )
        if (self.projector_type == "fused-gelu-mlp") != self.use_fused_vision_backbone:
            raise ValueError(
                f"arch_specifier {self.arch_specifier!r} does not match use_fused_vision_backbone="
                f"{self.use_fused_vision_backbone} (fused-gelu-mlp goes with a fused backbone)"
            )
        specs = self.vision_specs
        patches = {(size // s.patch_size) ** 2 for s, size in zip(specs, self.image_sizes)}
        if len(patches) != 1:
            raise ValueError("towers of a fused backbone must give the same number of patches")
        for spec, size in zip(specs, self.image_sizes):
            if size % spec.patch_size:
                raise ValueError(f"image size {size} is not a multiple of the patch size {spec.patch_size}")
        if self.extra.get("ecot_locator") is not None:
            self.locator  # noqa: B018 - raises ValueError on a malformed entry
        if self.extra.get("ecot_move_head") is not None:
            if self.extra.get("ecot_locator") is None:
                raise ValueError("ecot_move_head reads the locator's findings: the config needs an ecot_locator entry")
            self.move_head  # noqa: B018 - raises ValueError on a malformed entry
        vocab = int(self.text_config.get("vocab_size", 32000))
        if vocab <= self.pad_token_id:
            raise ValueError(f"text_config vocab_size {vocab} must exceed pad_token_id {self.pad_token_id}")

    @property
    def projector_type(self) -> str:
        """``gelu-mlp`` or ``fused-gelu-mlp``, from ``arch_specifier`` (e.g. ``no-align+gelu-mlp``)."""
        return self.arch_specifier.split("+")[-1]

    @property
    def locator(self):
        """The locator's :class:`~ecot.model.locator.LocatorSpec` (config key ``ecot_locator``), or None."""
        data = self.extra.get("ecot_locator")
        if data is None:
            return None
        from ecot.model.locator import LocatorSpec

        return LocatorSpec.from_dict(data)

    @property
    def move_head(self):
        """The move head's :class:`~ecot.model.move_head.MoveHeadSpec` (config key ``ecot_move_head``), or None."""
        data = self.extra.get("ecot_move_head")
        if data is None:
            return None
        from ecot.model.move_head import MoveHeadSpec

        return MoveHeadSpec.from_dict(data)

    @property
    def vision_specs(self) -> list[ViTSpec]:
        return [vit_spec(t, a) for t, a in zip(self.timm_model_ids, self.timm_override_act_layers)]

    @property
    def image_size(self) -> int:
        return int(self.image_sizes[0])

    @property
    def num_patches(self) -> int:
        spec = self.vision_specs[0]
        return (self.image_size // spec.patch_size) ** 2

    @property
    def vision_dim(self) -> int:
        return sum(s.embed_dim for s in self.vision_specs)

    @property
    def in_channels(self) -> int:
        return 3 * len(self.timm_model_ids)

    @property
    def prompt_style(self) -> str:
        from ecot.prompts import style_for_backbone

        return style_for_backbone(self.llm_backbone_id)

    def llama_config(self):
        """``text_config`` completed with transformers' ``LlamaConfig`` defaults."""
        from transformers import LlamaConfig

        kwargs = dict(self.text_config)
        kwargs.pop("model_type", None)
        kwargs.pop("torch_dtype", None)
        kwargs.pop("dtype", None)
        kwargs.setdefault("pad_token_id", self.pad_token_id)
        return LlamaConfig(**kwargs)

    # ------------------------------------------------------------------ (de)serialization

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` contents (keys sorted, as transformers writes them)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        out.update(copy.deepcopy(self.extra))
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VLAConfig":
        if data.get("model_type", "openvla") not in ("openvla", "prismatic"):
            raise ValueError(f"not an OpenVLA/ECoT config: model_type {data.get('model_type')!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        _check_field_types(cls, data)
        kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        extra = {k: copy.deepcopy(v) for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` into directory ``path`` (atomically)."""
        import os

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        target = path / "config.json"
        tmp = target.with_name(f".config.json.{os.getpid()}.tmp")
        tmp.write_text(self.to_json_string())
        tmp.replace(target)
        return target

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "VLAConfig":
        """Read a ``config.json`` file, or the one inside a checkpoint directory."""
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no config.json at {file}")
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{file} must hold a JSON object, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{file}: {err}") from None

    # ------------------------------------------------------------------ presets

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "VLAConfig":
        """A named configuration: ``ecot-7b-bridge``, ``openvla-7b``, ``tiny-siglip``, ``tiny-dinosiglip``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        data = copy.deepcopy(PRESETS[name])
        data.update(overrides)
        return cls.from_dict(data)


_COMMON_7B = {
    "architectures": ["OpenVLAForActionPrediction"],
    "llm_max_length": 2048,
    "model_type": "openvla",
    "n_action_bins": 256,
    "norm_stats": {},
    "output_projector_states": False,
    "pad_to_multiple_of": 64,
    "pad_token_id": 32000,
    # The released files save only this stub; LlamaConfig defaults are the 7B Llama-2 shape.
    "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
    "torch_dtype": "bfloat16",
}
_TINY_TEXT = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "pad_token_id": 1024,
    "vocab_size": _pad_vocab(1024 + 1, 64),  # tokenizer base 1024 + <PAD>, padded to 64 -> 1088
    "torch_dtype": "float32",
}
_COMMON_TINY = {
    **_COMMON_7B,
    "pad_token_id": 1024,
    "text_config": _TINY_TEXT,
    "torch_dtype": "float32",
    "image_sizes": [112],
}

PRESETS: dict[str, dict[str, Any]] = {
    "ecot-7b-bridge": {
        **_COMMON_7B,
        "vision_backbone_id": "siglip-vit-so400m",
        "llm_backbone_id": "vicuna-v15-7b",
        "hf_llm_id": "lmsys/vicuna-7b-v1.5",
        "arch_specifier": "no-align+gelu-mlp",
        "use_fused_vision_backbone": False,
        "image_resize_strategy": "letterbox",
        "image_sizes": [224],
        "timm_model_ids": ["vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None],
    },
    "openvla-7b": {
        **_COMMON_7B,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [224, 224],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
    },
    "tiny-siglip": {
        **_COMMON_TINY,
        "vision_backbone_id": "tiny-siglip",
        "llm_backbone_id": "vicuna-tiny",
        "arch_specifier": "no-align+gelu-mlp",
        "use_fused_vision_backbone": False,
        "image_resize_strategy": "letterbox",
        "timm_model_ids": ["ecot_tiny_siglip_patch14"],
        "timm_override_act_layers": [None],
    },
    "tiny-dinosiglip": {
        **_COMMON_TINY,
        "vision_backbone_id": "tiny-dinosiglip",
        "llm_backbone_id": "llama2-tiny-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [112, 112],
        "timm_model_ids": ["ecot_tiny_dinov2_reg4_patch14", "ecot_tiny_siglip_patch14"],
        "timm_override_act_layers": [None, None],
    },
}


_JSON_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "an object"}
_TEXT_INT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings", "vocab_size")


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


def _check_field_types(cls, data: Mapping[str, Any]) -> None:
    """Refuse a wrongly typed ``config.json`` field, naming it, its value and the expected type."""
    import types
    import typing

    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name == "extra" or f.name not in data:
            continue
        value, hint = data[f.name], hints.get(f.name)
        origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            kinds = [typing.get_origin(a) or a for a in args]
            if value is None and type(None) in kinds:
                continue
            kinds = [k for k in kinds if k in _JSON_TYPES]
            if kinds and not any(_is(value, k) for k in kinds):
                raise ValueError(f"field {f.name!r} must be {' or '.join(_JSON_TYPES[k] for k in kinds)}, "
                                 f"got {type(value).__name__} {value!r:.80}")
            continue
        if origin in (list, tuple):
            origin = list
        if origin not in _JSON_TYPES:
            continue
        if not _is(value, origin):
            raise ValueError(f"field {f.name!r} must be {_JSON_TYPES[origin]}, got {type(value).__name__} {value!r:.80}")
        item = args[0] if origin is list and args else None
        if item in (int, str, float, bool):
            bad = [v for v in value if not _is(v, item)]
            if bad:
                raise ValueError(f"field {f.name!r} must be a list of {_JSON_TYPES[item].split(' ', 1)[1]}s, "
                                 f"got {value!r:.80}")
    text = data.get("text_config")
    if isinstance(text, Mapping):
        for key in _TEXT_INT_FIELDS:
            if key in text and not (_is(text[key], int) and text[key] > 0):
                raise ValueError(f"field 'text_config.{key}' must be a positive integer, "
                                 f"got {type(text[key]).__name__} {text[key]!r:.80}")
