"""The VLA: vision towers + projector + transformers' Llama, one class for every size.

The sequence the language model sees is ``[BOS] + projected patches + prompt tokens after BOS``
(docs/formats.md §7). The model does forward passes and generation only; :meth:`VLA.predict_action`
is a thin wrapper over :func:`ecot.policy.free.predict_action` (the original release's decoding)
and :class:`ecot.policy.ECoTPolicy` is the control-loop runtime.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecot.actions import ACTION_DIM
from ecot.model.config import VLAConfig
from ecot.model.vision import Projector, VisionBackbone

IGNORE_INDEX = -100
ACTION_TAG = "ACTION:"


class ActionDecodeError(ValueError):
    """The generated text does not end in ``ACTION:`` + exactly ``action_dim`` action tokens."""

    def __init__(self, text: str, reason: str, generated_ids: list[int] | None = None, action_ids: list[int] | None = None):
        self.text = text
        self.reason = reason
        self.generated_ids = list(generated_ids or [])
        self.action_ids = list(action_ids or [])
        shown = text if len(text) <= 400 else "..." + text[-400:]
        super().__init__(f"cannot decode an action: {reason}; generated text: {shown!r}")


@dataclass
class ActionPrediction:
    """What :meth:`VLA.predict_action` returns."""

    action: np.ndarray  # [action_dim], unnormalized with the checkpoint's norm_stats
    reasoning: Any  # ecot.reasoning.Reasoning, parsed from `text`
    text: str  # the generated text, starting with "TASK:" (special tokens removed)
    action_ids: list[int]
    normalized_action: np.ndarray  # in [-1, 1] (bin centers), before unnormalization
    generated_ids: list[int] = field(default_factory=list)
    unnorm_key: str | None = None


class VLA(nn.Module):
    """OpenVLA/ECoT vision-language-action model (parameter names as in the released checkpoints)."""

    def __init__(self, config: VLAConfig, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        self.processor = None  # set by from_pretrained when tokenizer files are present
        llama_config = config.llama_config()
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.vision_backbone = VisionBackbone(config)
            self.projector = Projector(config.projector_type, config.vision_dim, llama_config.hidden_size)
            self.language_model = LlamaForCausalLM(llama_config)
            self.locator = None
            if config.locator is not None:
                from ecot.model.locator import Locator

                self.locator = Locator(config.locator, config.image_size, llama_config.hidden_size)
            self.move_head = None
            if config.move_head is not None:
                from ecot.model.move_head import MoveHead

                self.move_head = MoveHead(config.move_head)
        if dtype is not None:
            self.to(dtype)

    def attach_move_head(self, spec: Any) -> None:
        """Add a new move head (:mod:`ecot.model.move_head`) for ``spec``; its entry goes into the config."""
        from ecot.model.move_head import CONFIG_KEY, MoveHead

        if self.locator is None:
            raise ValueError("a move head reads the locator's findings: the model has no locator")
        self.config.extra[CONFIG_KEY] = spec.to_dict()
        self.move_head = MoveHead(spec).to(device=self.device)

    # ------------------------------------------------------------------ facts

    @property
    def num_patches(self) -> int:
        """Vision positions in the language model's sequence: image patches (+ the locator's tokens; only
        those with a locator-only spec)."""
        if self.locator is None:
            return self.vision_backbone.num_patches
        patches = self.vision_backbone.num_patches if self.locator.spec.image_patches else 0
        return patches + self.locator.num_tokens

    @property
    def device(self) -> torch.device:
        return self.language_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.get_input_embeddings().weight.dtype

    # ------------------------------------------------------------------ forward

    def vision_tokens(self, pixel_values: torch.Tensor, findings: Any = None) -> torch.Tensor:
        """What the language model sees of the image: projected patches, then the locator's tokens (if any).

        ``findings``: what the locator hands on (:class:`ecot.model.locator.Findings`) when the caller has
        it already (training: the annotation's); by default the locator's own on these pixels."""
        vision_dtype = self.projector.fc1.weight.dtype
        pixel_values = pixel_values.to(vision_dtype)
        if self.locator is None:
            return self.projector(self.vision_backbone(pixel_values))
        if findings is None:
            findings = self.locator.find(self.locator(pixel_values))
        found = self.locator.tokens(findings, self.language_model.get_input_embeddings()).to(vision_dtype)
        if not self.locator.spec.image_patches:
            return found
        return torch.cat([self.projector(self.vision_backbone(pixel_values)), found], dim=1)

    def embed_multimodal(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        findings: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Input embeddings with the vision tokens inserted after BOS (and mask/labels to match)."""
        if input_ids.ndim != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must be [B, L] with L >= 1 (BOS first), got {tuple(input_ids.shape)}")
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"batch sizes differ: pixel_values {pixel_values.shape[0]}, input_ids {input_ids.shape[0]}")
        patches = self.vision_tokens(pixel_values, findings)
        embeds = self.language_model.get_input_embeddings()(input_ids)
        patches = patches.to(embeds.dtype)
        b, p = patches.shape[:2]
        embeds = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)
        if attention_mask is not None:
            ones = attention_mask.new_ones((b, p))
            attention_mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        if labels is not None:
            ignored = labels.new_full((b, p), IGNORE_INDEX)
            labels = torch.cat([labels[:, :1], ignored, labels[:, 1:]], dim=1)
        return embeds, attention_mask, labels

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        locator_objects: torch.Tensor | None = None,
        locator_gripper: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """Returns transformers' ``CausalLMOutputWithPast``; logits are ``[B, L + num_patches, V]`` with images.

        With a locator and its targets (``locator_objects``, ``locator_gripper``: see
        :meth:`ecot.model.locator.Locator.loss`), the language model reads the targets as the locator's
        tokens (teacher forcing; in training mode, the locator's own findings for some samples), the
        loss is the language model's plus the locator's, and ``output.locator_loss`` holds the latter."""
        if pixel_values is None:
            return self.language_model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                past_key_values=past_key_values,
                use_cache=use_cache,
                inputs_embeds=inputs_embeds,
                **kwargs,
            )
        if inputs_embeds is not None:
            raise ValueError("pass either pixel_values with input_ids, or inputs_embeds, not both")
        if past_key_values is not None and _cache_length(past_key_values) > 0:
            raise ValueError("pixel_values go with the first (prefill) step only; continue a cache with input_ids alone")
        located = findings = None
        if self.locator is not None and locator_objects is not None:
            if locator_gripper is None:
                raise ValueError("locator_objects and locator_gripper go together")
            located = self.locator(pixel_values.to(self.projector.fc1.weight.dtype))
            findings = (self.locator.training_findings(located, locator_objects, locator_gripper) if self.training
                        else self.locator.findings_from_targets(locator_objects, locator_gripper))
        embeds, attention_mask, labels = self.embed_multimodal(input_ids, pixel_values, attention_mask, labels, findings)
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            labels=labels,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )
        if located is not None:
            locator_loss = self.locator.loss(located, locator_objects, locator_gripper)
            out["locator_loss"] = locator_loss.detach()
            if out.loss is not None:
                out["loss"] = out.loss + locator_loss
        return out

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Generate with transformers' ``generate`` (KV cache); returns only the new token ids ``[B, N]``."""
        embeds, attention_mask, _ = self.embed_multimodal(input_ids, pixel_values, attention_mask)
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def predict_action(
        self,
        image: Any,
        instruction: str,
        unnorm_key: str | None = None,
        max_new_tokens: int = 1024,
        processor: Any = None,
        do_sample: bool = False,
        **generate_kwargs: Any,
    ) -> ActionPrediction:
        """Reason about ``image`` and ``instruction``, then act: the seed's call, greedy by default.

        Free generation with transformers' ``generate``, exactly as the original release decodes;
        :class:`ecot.policy.ECoTPolicy` is the fast, grammar-constrained control-loop runtime.
        """
        from ecot.policy.free import predict_action

        return predict_action(self, image, instruction, unnorm_key=unnorm_key, max_new_tokens=max_new_tokens,
                              processor=processor, do_sample=do_sample, **generate_kwargs)

    def context_budget(self) -> int:
        """Positions the language model holds: image patches + prompt + generated tokens."""
        text = self.config.text_config
        return int(text.get("max_position_embeddings", self.config.llm_max_length))

    def _check_context(self, prompt_tokens: int, instruction_tokens: int) -> None:
        """Refuse a prompt that leaves no room for the answer (reasoning + 7 action tokens)."""
        budget = self.context_budget()
        used = self.num_patches + prompt_tokens
        room = ACTION_DIM + 2  # at least the action tokens and their tag
        if used + room > budget:
            most = max(0, budget - room - self.num_patches - (prompt_tokens - instruction_tokens))
            raise ValueError(
                f"the instruction is too long: {instruction_tokens} tokens, and with the prompt and "
                f"{self.num_patches} image positions it needs {used} of the model's {budget} context positions, "
                f"leaving no room for the answer; expected an instruction of at most {most} tokens")

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        revision: str | None = None,
        progress: bool = True,
    ) -> "VLA":
        """Load a local checkpoint directory or a Hugging Face hub id (downloaded with huggingface_hub)."""
        from ecot.model.checkpoint import load_vla

        return load_vla(
            cls,
            path,
            dtype=dtype,
            device=device,
            load_in_4bit=load_in_4bit,
            load_in_8bit=load_in_8bit,
            revision=revision,
            progress=progress,
        )

    def save_pretrained(self, path: str | Path, max_shard_size: int | str = "5GB", save_processor: bool = True) -> Path:
        """Write ``config.json`` + sharded ``*.safetensors`` + index (+ the processor's tokenizer files)."""
        from ecot.model.checkpoint import save_vla

        out = save_vla(self, path, max_shard_size=max_shard_size)
        if save_processor and self.processor is not None:
            self.processor.save_pretrained(out)
        return out


# ---------------------------------------------------------------------- helpers


def _cache_length(past_key_values: Any) -> int:
    if hasattr(past_key_values, "get_seq_length"):
        return int(past_key_values.get_seq_length())
    try:  # legacy tuple of (key, value) per layer
        return int(past_key_values[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0
