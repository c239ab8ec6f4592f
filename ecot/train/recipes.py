"""Recipes: from ``--data DIR --recipe R --model M`` to a model, processor and datasets ready to train.

Recipes (what the assistant's turn holds during training):

* ``ecot`` — the released ECoT recipe: full reasoning, then ``ACTION:`` and the action tokens;
  loss over the whole sequence.
* ``no-reasoning`` — no reasoning at all (``Out: ACTION: ...``): the OpenVLA-style baseline.
* ``reasoning-dropout`` — ECoT-Lite reasoning dropout: each sample's whole reasoning is dropped
  with probability 0.5 (``--reasoning-dropout``), so the policy works with or without it.
* ``reasoning-pretrain`` — ECoT-Lite reasoning pre-training: full reasoning for the first part
  of training (``--pretrain-fraction``, 0.5), then actions only.

``--model`` is a preset name (``tiny-siglip``, ``tiny-dinosiglip``, ``ecot-7b-bridge``,
``openvla-7b``: a fresh, seeded model) or a checkpoint directory (fine-tuning). Tiny presets get
a BPE tokenizer trained on the dataset's own text; 7B presets need ``--tokenizer DIR`` with the
Llama tokenizer files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecot.data.bridge import JOIN_MODES
from ecot.options import option
from ecot.train.data import EpisodeSteps, SampleConfig, StepDataset
from ecot.model.tokenizer import NUMBER_STYLES
from ecot.train.samples import LOSS_MASKS
from ecot.train.trainer import TrainConfig

RECIPES = ("ecot", "no-reasoning", "reasoning-dropout", "reasoning-pretrain")
FEATURES_NAME = "embodied_features.json"


@dataclass
class RunConfig:
    """One training run: data, recipe, model and the trainer's options (also ``ecot train``'s flags)."""

    data: str = option(help="dataset directory (LeRobot layout from `ecot sim collect`, or RLDS)", group="run")
    out: str = option(help="run directory (resumed when it holds checkpoints)", group="run")
    recipe: str = option("ecot", choices=RECIPES, group="run")
    model: str = option("tiny-siglip", "preset (tiny-siglip, tiny-dinosiglip, ecot-7b-bridge, openvla-7b) or checkpoint dir",
                        group="run")
    features: str | None = option(None, "embodied-features file, or the `ecot annotate` output directory", group="run")
    tokenizer: str | None = option(None, "tokenizer directory (needed by 7B presets)", group="run")
    loss_mask: str | None = option(None, "which tokens carry the loss (default: whole sequence, as the original ECoT)",
                                   choices=LOSS_MASKS, group="samples")  # None: the recipe's
    tag_dropout: float = option(0.0, "original per-tag reasoning dropout probability", group="samples")
    reasoning_dropout: float | None = option(None, "probability of dropping the whole reasoning",
                                             group="samples")  # None: the recipe's
    pretrain_fraction: float = option(0.5, "reasoning-pretrain: fraction of steps with reasoning", group="samples")
    join: str = option("aligned", "reasoning join (original: Bridge one-step offset)", choices=sorted(JOIN_MODES),
                       group="samples")
    augment: bool = option(False, "OpenVLA image augmentation (crop + colour jitter)", group="samples")
    action_image_shuffle: float = option(
        0.0, "probability that a sample shows another step's image and trains only its action tokens, so the "
        "action must follow the written chain rather than the image", group="samples")
    action_only_shuffled: bool = option(
        False, "with --action-image-shuffle: train the action tokens only on the shuffled samples (the others "
        "train the reasoning), so the action is learnt from the chain alone", group="samples")
    vision_pretrain_steps: int = option(
        0, "first train the vision tower alone on the sim's ground truth for N steps (from-scratch presets; "
        "ecot.train.vision_pretrain)", group="run")
    eval_episodes: int | None = option(None, "held-out episodes, the last ones (default 10%)",
                                       group="run")  # at least 1 when possible
    tokenizer_numbers: str = option(
        "bpe", "tiny presets' trained tokenizer: 'whole' makes every pixel coordinate one token, the same wherever "
        "it stands; 'bpe' merges digits with their neighbours like other characters", choices=NUMBER_STYLES, group="run")
    locator: bool = option(
        False, "from-scratch presets: add the locator, a small CNN that finds the objects and the gripper and hands "
        "their boxes and points to the language model as tokens (ecot.model.locator; needs --tokenizer-numbers "
        "whole and the annotations' boxes)", group="run")
    numeric_embeddings: bool = option(
        False, "from-scratch presets with --tokenizer-numbers whole: start every coordinate token's embeddings with "
        "its value (a ramp, sines and cosines), so the model can compare numbers from the first step", group="run")
    locator_relations: bool = option(
        False, "with --locator: each object's tokens also carry its box's signed offset from the gripper's point "
        "(through a small learned layer), so that lining up with an object is one read-out for the language model",
        group="run")
    locator_only: bool = option(
        False, "with --locator: the language model sees the locator's tokens only, not the image's patches, so its "
        "chain and action can only come from the findings (docs/quality.md, round fourteen)", group="run")
    move_head: bool = option(
        False, "with --locator: a small classifier chooses the chain's MOVE from the locator's findings and the "
        "instruction (trained on the annotations' boxes and MOVEs before the language model; ecot.model.move_head)",
        group="run")
    move_head_steps: int = option(3000, "with --move-head: its optimizer steps (batch 64; seconds on a CPU)", group="run")
    locator_pretrain_steps: int = option(
        300, "with --locator: first train the locator alone for N steps, so that its tokens are right when the "
        "language model starts learning to copy them (ecot.train.locator_pretrain)", group="run")
    tokenizer_vocab: int | None = option(None, cli=False)  # tiny presets: base vocabulary (default: the preset's pad_token_id)
    allow_partial_reasoning: bool = option(
        False, "train even if the features miss some training episodes (they train without reasoning; "
        "the coverage is logged in metrics.jsonl)", group="run")
    train: TrainConfig = option(default_factory=TrainConfig, prefix="")  # its flags: --max-steps, ...

    def __post_init__(self) -> None:
        from ecot.errors import UsageError

        if self.recipe not in RECIPES:
            raise UsageError(f"unknown recipe {self.recipe!r}; expected one of {RECIPES}")
        if self.tokenizer_numbers not in NUMBER_STYLES:
            raise UsageError(f"unknown tokenizer_numbers {self.tokenizer_numbers!r}; expected one of {NUMBER_STYLES}")
        if self.loss_mask is not None and self.loss_mask not in LOSS_MASKS:
            raise UsageError(f"unknown loss mask {self.loss_mask!r}; expected one of {sorted(LOSS_MASKS)}")
        if self.action_only_shuffled and not self.action_image_shuffle > 0:
            raise UsageError("--action-only-shuffled needs --action-image-shuffle P with P > 0 (else no sample trains "
                             "the action)")
        if not 0.0 < self.pretrain_fraction <= 1.0:
            raise UsageError(f"pretrain_fraction must be in (0, 1], got {self.pretrain_fraction}")
        for name in ("tag_dropout", "reasoning_dropout", "action_image_shuffle"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise UsageError(f"{name} must be a probability in [0, 1], got {value}")
        if self.vision_pretrain_steps < 0:
            raise UsageError(f"vision_pretrain_steps must be >= 0, got {self.vision_pretrain_steps}")
        from ecot.model.config import PRESETS

        if self.vision_pretrain_steps and self.model not in PRESETS:
            raise UsageError("vision pre-training trains a tower from scratch: use it with a preset --model, "
                             f"not the checkpoint {self.model!r}")
        if self.locator:
            if self.model not in PRESETS:
                raise UsageError("--locator adds a new locator to a model trained from scratch: use it with a preset "
                                 f"--model, not the checkpoint {self.model!r} (a checkpoint with a locator keeps it)")
            if self.tokenizer_numbers != "whole":
                raise UsageError("--locator hands coordinates to the language model as tokens: it needs "
                                 "--tokenizer-numbers whole (one token per coordinate value)")
            if self.augment:
                raise UsageError("--locator learns boxes in the image's pixels; --augment crops and shifts the image "
                                 "without moving them: use one or the other")
        if self.numeric_embeddings and (self.model not in PRESETS or self.tokenizer_numbers != "whole"):
            raise UsageError("--numeric-embeddings initializes a from-scratch preset's number tokens: it needs a preset "
                             "--model and --tokenizer-numbers whole")
        if self.move_head_steps < 1:
            raise UsageError(f"move_head_steps must be at least 1, got {self.move_head_steps}")
        if self.move_head and self.recipe == "no-reasoning":
            raise UsageError("--move-head chooses the chain's MOVE, and --recipe no-reasoning trains no chain")
        for flag in ("locator_relations", "locator_only", "move_head"):
            if getattr(self, flag) and not self.locator:
                raise UsageError(f"--{flag.replace('_', '-')} builds on the locator: it needs --locator")
        if self.locator_pretrain_steps < 0:
            raise UsageError(f"locator_pretrain_steps must be >= 0, got {self.locator_pretrain_steps}")
        if self.eval_episodes is not None and self.eval_episodes < 0:
            raise UsageError(f"eval_episodes must be >= 0, got {self.eval_episodes}")
        self.train.out_dir = self.out


def check_model_source(model: str, option: str = "--model") -> None:
    """Refuse (usage error, before any work) a model that is neither a preset nor a checkpoint directory.

    Used by ``ecot train`` and meant for every command that takes a model (the demo included)."""
    from ecot.errors import UsageError
    from ecot.model.config import PRESETS

    source = Path(model)
    if model in PRESETS or source.is_dir():
        if source.is_dir() and model not in PRESETS and not (source / "config.json").is_file():
            raise UsageError(f"{option} {model}: the directory holds no config.json; expected a checkpoint "
                             f"directory (`ecot model init`, a run's final/) or a preset ({', '.join(sorted(PRESETS))})")
        return
    raise UsageError(f"{option} {model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a checkpoint directory")


def sample_config(run: RunConfig) -> SampleConfig:
    """The sample settings of the run's recipe (explicit options win)."""
    dropout = {"ecot": 0.0, "no-reasoning": 1.0, "reasoning-dropout": 0.5, "reasoning-pretrain": 0.0}[run.recipe]
    if run.reasoning_dropout is not None:
        dropout = run.reasoning_dropout
    until = None
    if run.recipe == "reasoning-pretrain":
        # Positions are per-rank sample counts; steps * batch * accumulation of them per optimizer step.
        t = run.train
        until = int(math.ceil(run.pretrain_fraction * t.max_steps)) * t.batch_size * t.grad_accum
    return SampleConfig(
        loss_mask=run.loss_mask or "whole",
        tag_dropout=run.tag_dropout,
        reasoning_dropout=dropout,
        reasoning_until=until,
        augment=run.augment,
        action_image_shuffle=run.action_image_shuffle,
        action_only_shuffled=run.action_only_shuffled,
        join=run.join,
    )


def find_features(run: RunConfig) -> Path | None:
    """The embodied-features file: ``--features`` (file or directory) or one found in the data directory."""
    if run.features:
        path = Path(run.features)
        if path.is_dir():
            path = path / FEATURES_NAME
        if not path.is_file():
            raise FileNotFoundError(f"features file {path} does not exist; pass the file written by `ecot annotate`")
        return path
    data = Path(run.data)
    for candidate in [data / FEATURES_NAME, *sorted(data.glob(f"*/{FEATURES_NAME}")), *sorted(data.glob("*features*.json"))]:
        if candidate.is_file():
            return candidate
    return None


def split_episodes(n: int, eval_episodes: int | None) -> tuple[list[int], list[int]]:
    """Train and held-out episode indices (held-out = the last ones)."""
    if n <= 0:
        raise ValueError("the dataset has no episodes")
    k = (max(1, n // 10) if n >= 2 else 0) if eval_episodes is None else eval_episodes
    if not 0 <= k < n:
        from ecot.errors import UsageError

        raise UsageError(f"cannot hold out {k} of {n} episodes (--eval-episodes): at least one must remain for training")
    return list(range(n - k)), list(range(n - k, n))


def _tokenizer_texts(steps: EpisodeSteps, reasoning: Any, style: str, join: str) -> list[str]:
    """The training texts (without action tokens) of every frame, each distinct one once."""
    from ecot.prompts import training_text
    from ecot.train.data import lookup_reasoning

    texts, seen = [], set()
    for index in range(len(steps)):
        step = steps.get(index)
        key = (step.instruction, lookup_reasoning(reasoning, step, join))
        if key not in seen:
            seen.add(key)
            texts.append(training_text(key[0], key[1], "", style))
    return texts


def _locator_targets(features: Path | None, run: RunConfig):
    """The boxes and gripper points a locator learns from (the features file), or a clear error without one."""
    if features is None:
        raise FileNotFoundError(f"the locator learns from the annotations' boxes, but no {FEATURES_NAME} was found "
                                f"in {run.data}; pass --features DIR")
    from ecot.train.data import LocatorTargets

    return LocatorTargets(features)


def _locator_frame(locator_targets: Any, config: Any) -> int:
    """The side of the annotated images (the frame of the chain's coordinates) the locator reports in."""
    sizes = sorted(locator_targets.frame_sizes) or [config.image_size]
    if len(sizes) > 1:
        raise ValueError(f"the annotations' images have several sizes {sizes}; the locator needs one frame")
    return sizes[0]


def build_model(run: RunConfig, dataset_key: str, stats: Any, text_steps: EpisodeSteps, reasoning: Any,
                locator_targets: Any = None):
    """(model, processor) for the run, with the dataset's statistics in the config."""
    from ecot.model.config import PRESETS, VLAConfig
    from ecot.model.processor import VLAProcessor
    from ecot.model.vla import VLA

    norm_entry = {dataset_key: stats.to_dict()}
    source = Path(run.model)
    if run.model in PRESETS and not source.exists():
        config = VLAConfig.preset(run.model)
        config.norm_stats = {**config.norm_stats, **norm_entry}
        if run.tokenizer:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(run.tokenizer)
        elif config.pad_token_id <= 4096:  # tiny presets: train a tokenizer on the data's text
            from ecot.model.tokenizer import train_tiny_tokenizer

            vocab = run.tokenizer_vocab or config.pad_token_id
            if vocab != config.pad_token_id:
                raise ValueError(f"tokenizer_vocab {vocab} must equal the preset's pad_token_id {config.pad_token_id}")
            texts = _tokenizer_texts(text_steps, reasoning, config.prompt_style, run.join)
            if run.locator:  # every coordinate the locator may report is a token, also ones the chains lack
                texts.append(" ".join(str(v) for v in range(_locator_frame(locator_targets, config))))
            tokenizer = train_tiny_tokenizer(texts, vocab_size=vocab, numbers=run.tokenizer_numbers)
        else:
            raise ValueError(
                f"preset {run.model!r} needs the Llama tokenizer: pass --tokenizer DIR with its tokenizer files "
                "(tokenizer.json or tokenizer.model)"
            )
        if run.locator:
            from ecot.model.locator import CONFIG_KEY, build_spec

            spec = build_spec(tokenizer, locator_targets.names(), frame_size=_locator_frame(locator_targets, config),
                              relations=run.locator_relations, image_patches=not run.locator_only)
            config.extra[CONFIG_KEY] = spec.to_dict()
        torch.manual_seed(run.train.seed)
        model = VLA(config)
        if run.numeric_embeddings:
            from ecot.model.tokenizer import init_numeric_embeddings

            init_numeric_embeddings(model, tokenizer)
        return model, VLAProcessor(config, tokenizer)
    if not source.is_dir():
        raise FileNotFoundError(f"--model {run.model!r} is neither a preset ({sorted(PRESETS)}) nor a checkpoint directory")
    model = VLA.from_pretrained(source, dtype=torch.float32, progress=False)
    model.config.norm_stats = {**model.config.norm_stats, **norm_entry}
    processor = VLAProcessor.from_pretrained(source, config=model.config)
    return model, processor


def build_run(run: RunConfig):
    """Everything :class:`~ecot.train.trainer.Trainer` needs: (model, processor, train data, eval data, action stats)."""
    from ecot.data import open_dataset
    from ecot.data.features import ReasoningIndex

    dataset = open_dataset(run.data)
    norm_stats = dataset.norm_stats
    dataset_key = norm_stats.resolve_key(None)
    stats = norm_stats.get(dataset_key)

    features = find_features(run)
    needs_reasoning = run.recipe != "no-reasoning"
    if features is None and needs_reasoning:
        raise FileNotFoundError(
            f"recipe {run.recipe!r} needs reasoning but no {FEATURES_NAME} was found in {run.data}; "
            f"run `ecot annotate {run.data} --out DIR` and pass --features DIR (or use --recipe no-reasoning)"
        )
    reasoning = ReasoningIndex.from_file(features) if features is not None and needs_reasoning else None
    if reasoning is not None and len(reasoning) == 0:
        raise ValueError(f"{features} holds no reasoning entries")

    train_eps, eval_eps = split_episodes(len(dataset), run.eval_episodes)
    coverage = None
    if reasoning is not None:
        # Provenance: refuse a stale features file, and features missing training episodes (unless allowed).
        from ecot.provenance import check_reasoning

        coverage = check_reasoning(dataset, reasoning, features, train_eps, run.allow_partial_reasoning)
        coverage["allow_partial"] = run.allow_partial_reasoning
        if coverage["covered"] < coverage["episodes"]:
            import sys

            print(f"warning: --allow-partial-reasoning: {coverage['covered']} of {coverage['episodes']} training "
                  f"episodes have reasoning ({coverage['coverage']:.0%}); the others train without it", file=sys.stderr)
    train_steps = EpisodeSteps(dataset, train_eps)
    eval_steps = EpisodeSteps(dataset, eval_eps) if eval_eps else None
    locator_targets = _locator_targets(features, run) if run.locator else None

    from ecot.train import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run.out) if run.train.resume else None
    if latest is not None and run.train.finetune == "full":
        # Resuming: the checkpoint's own config and tokenizer (its weights are loaded by the trainer).
        from ecot.model.config import VLAConfig
        from ecot.model.processor import VLAProcessor
        from ecot.model.vla import VLA

        config = VLAConfig.from_pretrained(latest)
        model, processor = VLA(config), VLAProcessor.from_pretrained(latest, config=config)
    else:
        model, processor = build_model(run, dataset_key, stats, train_steps, reasoning, locator_targets)
        if run.vision_pretrain_steps:
            from ecot.train.vision_pretrain import VisionPretrainConfig, pretrain_vision

            figures = pretrain_vision(model, processor, dataset, train_eps, run.out,
                                      VisionPretrainConfig(steps=run.vision_pretrain_steps, seed=run.train.seed),
                                      progress=run.train.progress)
            import sys

            print(f"vision pre-training: {figures}", file=sys.stderr)

    samples = sample_config(run)
    spec = model.config.locator
    if spec is not None and locator_targets is None:  # fine-tuning or resuming a model with a locator
        locator_targets = _locator_targets(features, run)
    located = {"locator_targets": locator_targets, "locator": spec} if spec is not None else {}
    train_data = StepDataset(train_steps, reasoning, processor, stats, samples, dataset_key, **located)
    train_data.reasoning_coverage = coverage  # logged in metrics.jsonl by the trainer
    eval_data = None
    if eval_steps is not None:
        held_out = SampleConfig(loss_mask=samples.loss_mask, join=samples.join)  # no dropout, no augmentation
        if run.recipe in ("no-reasoning", "reasoning-pretrain"):  # these policies act without reasoning
            held_out.reasoning_dropout = 1.0
        eval_data = StepDataset(eval_steps, reasoning, processor, stats, held_out, dataset_key, **located)
    if run.locator and run.locator_pretrain_steps and latest is None:
        from ecot.train.locator_pretrain import LocatorPretrainConfig, pretrain_locator

        figures = pretrain_locator(model, train_data, run.out,
                                   LocatorPretrainConfig(steps=run.locator_pretrain_steps, seed=run.train.seed),
                                   eval_data=eval_data, progress=run.train.progress)
        import sys

        print(f"locator pre-training: {figures}", file=sys.stderr)
    if run.move_head and model.move_head is None:
        from ecot.train.move_head_stage import train_move_head

        train_move_head(model, train_data, run.out, steps=run.move_head_steps, seed=run.train.seed,
                        eval_data=eval_data, progress=run.train.progress)
    return model, processor, train_data, eval_data, stats.action
