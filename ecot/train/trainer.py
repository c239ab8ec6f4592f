"""The trainer: one loop for one CPU process and for torchrun on many GPUs.

AdamW with warmup + constant/cosine schedules, gradient accumulation and clipping, bf16 autocast
on GPU, gradient checkpointing, LoRA (peft) or full fine-tuning, frozen vision and/or LM, DDP or
FSDP2 under torchrun. Checkpoints are atomic and resuming is exact:

* the data order is a pure function of ``(seed, rank, samples consumed)`` (see
  :mod:`ecot.train.sampler`), and every sample's dropout/augmentation comes from its own seed;
* the global torch RNG (dropout inside the model) is reseeded from ``(seed, rank, step)`` at the
  start of every optimizer step, so it needs no saved state;
* optimizer and scheduler states are saved next to the model weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ecot.options import option
from ecot.train import checkpoint as ckpt
from ecot.train import distributed as dist_utils
from ecot.train.lora import LoraSettings, adapter_state_dict, apply_lora, is_peft, merged_state_dict
from ecot.train.metrics import action_baselines, add_sums, batch_sums, reduce_sums, summarize, weighted_loss
from ecot.train.samples import collate
from ecot.train.sampler import ResumableSampler
from ecot.train.schedule import SCHEDULES, make_scheduler

FINETUNE_MODES = ("full", "lora")
PRECISIONS = ("auto", "bf16", "fp32")
OPTIM, RUNTIME = "optimization", "runtime"  # `ecot train --help` groups
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "labels", "locator_objects", "locator_gripper")


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the model and the data.

    The fields are also ``ecot train``'s flags (:mod:`ecot.options`): help text, choices and group in ``option``."""

    out_dir: str = option("runs/ecot", cli=False)  # set from the run's --out
    max_steps: int = option(1000, group=OPTIM)  # optimizer steps
    batch_size: int = option(8, "per process and micro-batch", group=OPTIM)
    grad_accum: int = option(1, group=OPTIM)
    lr: float = option(2e-5, group=OPTIM)  # ecot train: TINY_LR or FINETUNE_LR by --model
    weight_decay: float = option(0.0, group=OPTIM)
    betas: tuple[float, float] = option((0.9, 0.999), cli=False)
    warmup_steps: int = option(0, group=OPTIM)
    schedule: str = option("constant", choices=SCHEDULES, group=OPTIM)
    min_lr_ratio: float = option(0.0, group=OPTIM)  # cosine floor as a fraction of lr
    max_grad_norm: float = option(1.0, "0 disables clipping", group=OPTIM)
    action_loss_weight: float = option(
        1.0, "weight of each action token in the loss against a reasoning token's 1 (the action is 7 of ~200 "
        "trained tokens per step)", group=OPTIM)
    action_label_sigma: float = option(
        0.0, "soft action labels (HL-Gauss): each action token's target is a Gaussian of this std in bins over "
        "the neighbouring bins, so a near miss costs less than a far one; 0: the one true bin", group=OPTIM)
    precision: str = option("auto", "auto: bf16 autocast on GPU", choices=PRECISIONS, group=OPTIM)  # fp32 on CPU
    gradient_checkpointing: bool = option(False, group=OPTIM)
    finetune: str = option("full", choices=FINETUNE_MODES, group=OPTIM)
    lora: LoraSettings = option(default_factory=LoraSettings, group=OPTIM)  # --lora-rank, ...
    freeze_vision: bool = option(False, group=OPTIM)
    freeze_llm: bool = option(False, group=OPTIM)
    strategy: str = option("auto", "under torchrun: DDP (auto) or FSDP2", choices=dist_utils.STRATEGIES, group=RUNTIME)
    device: str = option("auto", "auto, cpu or cuda", group=RUNTIME)
    num_workers: int = option(0, "data-loader worker processes", group=RUNTIME)
    seed: int = option(7, group=OPTIM)
    save_every: int = option(0, "checkpoint every N steps (0: only at the end)", group=RUNTIME)  # optimizer steps
    keep_last: int = option(2, "checkpoints kept (0: all)", group=RUNTIME)
    log_every: int = option(10, group=RUNTIME)
    eval_every: int = option(0, "evaluate on held-out episodes every N steps (0: at the end)", group=RUNTIME)
    eval_batches: int = option(0, "limit evaluation to N batches (0: all)", group=RUNTIME)
    resume: bool = option(True, cli=False)  # continue from the newest checkpoint in out_dir when there is one
    tensorboard: bool = option(True, group=RUNTIME)  # --no-tensorboard
    wandb_project: str | None = option(None, "also log to Weights & Biases (needs wandb)", group=RUNTIME)
    progress: bool = option(True, group=RUNTIME)  # --no-progress

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"unknown finetune mode {self.finetune!r}; expected one of {FINETUNE_MODES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        if self.strategy not in dist_utils.STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {dist_utils.STRATEGIES}")
        from ecot.errors import UsageError

        for name in ("max_steps", "batch_size", "grad_accum", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        for name in ("num_workers", "save_every", "keep_last", "eval_every", "eval_batches", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"{name} must be an integer >= 0, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be a positive number, got {self.lr!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise UsageError("weight_decay and max_grad_norm must be >= 0 and min_lr_ratio in [0, 1], got "
                             f"{self.weight_decay}, {self.max_grad_norm}, {self.min_lr_ratio}")
        if not (isinstance(self.action_loss_weight, (int, float)) and math.isfinite(self.action_loss_weight)
                and self.action_loss_weight > 0):
            raise UsageError(f"action_loss_weight must be a positive number, got {self.action_loss_weight!r}")
        if not (isinstance(self.action_label_sigma, (int, float)) and math.isfinite(self.action_label_sigma)
                and self.action_label_sigma >= 0):
            raise UsageError(f"action_label_sigma must be a number >= 0 (bins), got {self.action_label_sigma!r}")
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        self.betas = tuple(self.betas)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _last_logged(path: Path) -> dict[str, float]:
    """The newest train/ and eval/ values in ``metrics.jsonl``."""
    last: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            row.pop("step", None)
            last.update({k: v for k, v in row.items() if k.startswith(("train/", "eval/"))})
    return last


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.default_rng([seed, rank, step, 11]).integers(0, 2**31 - 1))


class _Loggers:
    """TensorBoard, optional wandb and ``metrics.jsonl`` on rank 0."""

    def __init__(self, config: TrainConfig, out_dir: Path, is_main: bool):
        self.is_main = is_main
        self.tb = None
        self.wandb = None
        self.jsonl = None
        if not is_main:
            return
        self.jsonl = open(out_dir / "metrics.jsonl", "a")
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        if config.wandb_project:
            try:
                import wandb
            except ImportError as err:
                raise ImportError("wandb_project is set but wandb is not installed: pip install wandb") from err
            self.wandb = wandb.init(project=config.wandb_project, dir=str(out_dir), config=config.to_dict())

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class Trainer:
    """Trains ``model`` (a VLA) on ``train_data`` (a :class:`~ecot.train.data.StepDataset`).

    ``model`` is the plain, unwrapped model on CPU; the trainer moves, wraps and (when resuming)
    loads it. ``processor`` is saved with every checkpoint. ``action_stats`` (an ``ArrayStats``)
    enables the action L1 metric.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        processor: Any,
        train_data: Any,
        eval_data: Any = None,
        action_stats: Any = None,
    ):
        self.config = config
        self.processor = processor
        self.train_data = train_data
        self.eval_data = eval_data
        self.action_stats = action_stats
        self.action_tokenizer = getattr(processor, "action_tokenizer", None)
        if config.action_label_sigma > 0 and self.action_tokenizer is None:
            raise ValueError("action_label_sigma > 0 needs a processor with an action tokenizer")
        self.out_dir = Path(config.out_dir)
        self.info = dist_utils.setup(config.device)
        self.strategy = dist_utils.resolve_strategy(config.strategy, self.info)
        if self.strategy == "fsdp" and config.finetune == "lora":
            raise ValueError("LoRA with FSDP is not supported; use --strategy ddp (LoRA models fit in DDP)")
        self.model_cls = type(model)
        self.model_config = model.config
        self.step = 0
        self._check_same_tokenizer()
        self.resume_from = dist_utils.broadcast_object(
            self.info, ckpt.latest_checkpoint(self.out_dir) if config.resume else None
        )
        self._prepare(model)

    # ------------------------------------------------------------------ setup

    def _check_same_tokenizer(self) -> None:
        """Every rank must have built the same tokenizer (tiny presets train one per process)."""
        if not self.info.distributed:
            return
        import hashlib

        backend = getattr(self.processor.tokenizer, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else repr(sorted(self.processor.tokenizer.get_vocab().items()))
        mine = hashlib.sha256(text.encode()).hexdigest()
        if dist_utils.broadcast_object(self.info, mine) != mine:
            raise RuntimeError(f"rank {self.info.rank} built a different tokenizer than rank 0; load one saved tokenizer on every rank")

    @property
    def precision(self) -> str:
        if self.config.precision == "auto":
            return "bf16" if self.info.device.type == "cuda" else "fp32"
        return self.config.precision

    def _prepare(self, model: nn.Module) -> None:
        cfg = self.config
        state = ckpt.load_state(self.resume_from) if self.resume_from is not None else None
        if state is not None and cfg.finetune == "full":
            model.load_state_dict(ckpt.load_model_weights(self.resume_from))
        model.requires_grad_(True)
        if cfg.freeze_vision:
            model.vision_backbone.requires_grad_(False)
        if cfg.freeze_llm:
            model.language_model.requires_grad_(False)
        if cfg.gradient_checkpointing:
            lm = model.language_model
            if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x name
                lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.finetune == "lora":
            model = apply_lora(model, cfg.lora)
            if state is not None:
                missing = set(state["adapters"]) - set(model.state_dict())
                if missing:
                    raise ValueError(f"checkpoint {self.resume_from} has adapters this model lacks: {sorted(missing)[:3]}")
                model.load_state_dict(state["adapters"], strict=False)
        model.to(self.info.device)
        self.module = model  # unwrapped (possibly peft) module
        self.model = dist_utils.wrap(model, self.strategy, self.info)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        if state is not None:
            dist_utils.load_optimizer_state(self.model, self.optimizer, state["optimizer"], self.strategy)
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
            if state.get("world_size", 1) != self.info.world_size or state.get("batch_size") != cfg.batch_size:
                raise ValueError(
                    f"checkpoint {self.resume_from} was written with world size {state.get('world_size')} and "
                    f"batch size {state.get('batch_size')}; resume with the same values for an exact data order"
                )

    def _loader(self) -> torch.utils.data.DataLoader:
        cfg = self.config
        sampler = ResumableSampler(
            len(self.train_data),
            seed=cfg.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
            start=self.step * cfg.batch_size * cfg.grad_accum,
        )
        batch_sampler = torch.utils.data.BatchSampler(sampler, cfg.batch_size, drop_last=False)
        return torch.utils.data.DataLoader(
            self.train_data,
            batch_sampler=batch_sampler,
            collate_fn=partial(collate, pad_token_id=self.processor.tokenizer.pad_token_id),
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            prefetch_factor=4 if cfg.num_workers > 0 else None,
        )

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, batch: dict[str, Any]):
        inputs = {k: batch[k].to(self.info.device, non_blocking=True) for k in MODEL_INPUTS if k in batch}
        with self._autocast():
            return self.model(**inputs)

    # ------------------------------------------------------------------ loop

    def fit(self) -> dict[str, float]:
        """Train to ``max_steps``; returns the last logged training and evaluation metrics."""
        cfg = self.config
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        dist_utils.barrier(self.info)
        loggers = _Loggers(cfg, self.out_dir, self.info.is_main)
        last: dict[str, float] = {}
        try:
            if self.resume_from is not None and self.step >= cfg.max_steps:
                # Killed after the last checkpoint (its evaluation is logged already): only export.
                if self.info.is_main:
                    ckpt.copy_model_files(self.resume_from, self.out_dir / "final")
                    last = _last_logged(self.out_dir / "metrics.jsonl")
                dist_utils.barrier(self.info)
                return last
            coverage = getattr(self.train_data, "reasoning_coverage", None)
            if coverage is not None and self.step == 0:  # how much reasoning the run trains with
                loggers.log(0, {"data/reasoning_coverage": float(coverage["coverage"]),
                                "data/reasoning_steps": float(coverage["steps_with_reasoning"]),
                                "data/allow_partial_reasoning": float(bool(coverage.get("allow_partial")))})
            last = self._loop(loggers)
            if self.eval_data is not None:
                last.update(self.evaluate(loggers))
            saved = self.save_checkpoint()
            if self.info.is_main:
                ckpt.copy_model_files(saved, self.out_dir / "final")
            dist_utils.barrier(self.info)
        finally:
            loggers.close()
            dist_utils.teardown(self.info)
        return last

    def _loop(self, loggers: _Loggers) -> dict[str, float]:
        cfg = self.config
        last: dict[str, float] = {}
        if self.step >= cfg.max_steps:
            return last
        from tqdm.auto import tqdm

        batches = iter(self._loader())
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", disable=not (cfg.progress and self.info.is_main))
        sums: dict[str, float] = {}
        interval_start, interval_samples, interval_steps = time.perf_counter(), 0, 0
        grad_norm_sum = 0.0
        self.model.train()
        while self.step < cfg.max_steps:
            torch.manual_seed(_step_seed(cfg.seed, self.info.rank, self.step))
            for micro in range(cfg.grad_accum):
                batch = next(batches)
                sync = micro == cfg.grad_accum - 1
                with dist_utils.set_grad_sync(self.model, self.strategy, sync):
                    out = self._forward(batch)
                    loss = out.loss
                    if cfg.action_loss_weight != 1.0 or cfg.action_label_sigma > 0:
                        loss = weighted_loss(out, batch, cfg.action_loss_weight, cfg.action_label_sigma,
                                             self.action_tokenizer)
                    (loss / cfg.grad_accum).backward()
                add_sums(sums, batch_sums(out.logits.detach(), batch, self.action_tokenizer, self.action_stats,
                                           locator_loss=out.get("locator_loss")))
                interval_samples += int(batch["input_ids"].shape[0])
            if cfg.max_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
                grad_norm_sum += float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            interval_steps += 1
            bar.update(1)

            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                total = reduce_sums(sums)
                elapsed = time.perf_counter() - interval_start
                values = {f"train/{k}": v for k, v in summarize(total).items()}
                values["train/lr"] = lr
                values["train/samples_per_s"] = interval_samples * self.info.world_size / max(elapsed, 1e-9)
                if cfg.max_grad_norm > 0:
                    values["train/grad_norm"] = grad_norm_sum / interval_steps
                loggers.log(self.step, values)
                bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in values.items() if k in ("train/loss", "train/action_accuracy")})
                last = values
                sums, grad_norm_sum = {}, 0.0
                interval_start, interval_samples, interval_steps = time.perf_counter(), 0, 0
            if cfg.eval_every and self.eval_data is not None and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                self.evaluate(loggers)
                self.model.train()
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.max_steps:
                self.save_checkpoint()
        bar.close()
        return last

    @torch.no_grad()
    def evaluate(self, loggers: _Loggers | None = None) -> dict[str, float]:
        """Metrics on the held-out data (each rank takes an equal share)."""
        cfg = self.config
        self.model.eval()
        n = len(self.eval_data)
        per_rank = math.ceil(n / self.info.world_size)
        keys = [((self.info.rank + i * self.info.world_size) % n) for i in range(per_rank)]
        batches = [keys[i : i + cfg.batch_size] for i in range(0, len(keys), cfg.batch_size)]
        if cfg.eval_batches:
            batches = batches[: cfg.eval_batches]
        sums: dict[str, float] = {}
        pad_id = self.processor.tokenizer.pad_token_id
        rows = []
        for chunk in batches:
            batch = collate([self.eval_data[(k, k, 0)] for k in chunk], pad_id)
            out = self._forward(batch)
            add_sums(sums, batch_sums(out.logits, batch, self.action_tokenizer, self.action_stats,
                                      rows_out=rows if self.info.world_size == 1 else None,
                                      locator_loss=out.get("locator_loss")))
        values = {f"eval/{k}": v for k, v in summarize(reduce_sums(sums)).items()}
        if rows:  # per-dimension figures beside the majority-token and zero-motion predictors (one process)
            import numpy as np

            pred, true, truth = (np.concatenate([r[i] for r in rows]) for i in range(3))
            for k, v in action_baselines(pred, true, truth, self.action_tokenizer, self.action_stats).items():
                values.setdefault(f"eval/{k}", v)
        if loggers is not None:
            loggers.log(self.step, values)
        return values

    # ------------------------------------------------------------------ saving

    def _model_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Full model weights (LoRA merged) and the full optimizer state; complete on rank 0."""
        model_sd, optim_sd = dist_utils.full_state_dicts(self.model, self.optimizer, self.strategy)
        if is_peft(self.module):
            model_sd = merged_state_dict(self.module)
        return model_sd, optim_sd

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_XXXXXX`` atomically (all ranks must call this)."""
        model_sd, optim_sd = self._model_state()
        dest = self.out_dir / "checkpoints" / ckpt.step_dir_name(self.step)
        if self.info.is_main:
            state = {
                "step": self.step,
                "samples_per_rank": self.step * self.config.batch_size * self.config.grad_accum,
                "world_size": self.info.world_size,
                "batch_size": self.config.batch_size,
                "optimizer": optim_sd,
                "scheduler": self.scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "note": "reseeded per step from (seed, rank, step)"},
                "config": self.config.to_dict(),
            }
            if is_peft(self.module):
                state["adapters"] = adapter_state_dict(self.module)

            def fill(tmp: Path) -> None:
                ckpt.save_model_dir(self.model_cls, self.model_config, model_sd, self.processor, tmp)
                torch.save(state, tmp / ckpt.STATE_FILE)

            ckpt.write_atomically(dest, fill)
            ckpt.prune(self.out_dir, self.config.keep_last)
        dist_utils.barrier(self.info)
        return dest

    def export(self, dest: Path) -> Path:
        """The model (LoRA merged) in release format at ``dest``, loadable with ``from_pretrained``."""
        model_sd, _ = self._model_state() if not is_peft(self.module) else (merged_state_dict(self.module), None)
        if self.info.is_main:
            ckpt.write_atomically(Path(dest), lambda tmp: ckpt.save_model_dir(self.model_cls, self.model_config, model_sd, self.processor, tmp))
        dist_utils.barrier(self.info)
        return Path(dest)
