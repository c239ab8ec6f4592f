"""Run-directory checkpoints: the model in its release format plus the trainer's state.

::

    RUN_DIR/checkpoints/step_000100/   config.json, *.safetensors, tokenizer + processor files
                                       trainer_state.pt  (step, optimizer, scheduler, RNG, data position,
                                                          LoRA adapters when training with LoRA)
    RUN_DIR/final/                     the exported model, loadable with VLA.from_pretrained

A checkpoint is written into a hidden temporary directory and renamed into place when complete,
so a crash never leaves a half-written checkpoint where resuming would look for one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ecot.io import write_dir_atomically

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_model_dir(cls: type, config: Any, state_dict: dict[str, torch.Tensor], processor: Any, dest: Path) -> None:
    """Write ``state_dict`` in the model's own format (``save_pretrained``) plus the processor files.

    A fresh model of the same class and config is built on the meta device and given the
    tensors, so this works for sharded (FSDP2) and LoRA-wrapped training models alike.
    """
    try:
        with torch.device("meta"):
            fresh = cls(config)
        fresh.load_state_dict(state_dict, strict=True, assign=True)
    except Exception:  # a model whose constructor does not work on meta: build it for real
        fresh = cls(config)
        fresh.load_state_dict(state_dict, strict=True)
    fresh.save_pretrained(dest)
    if processor is not None:
        processor.save_pretrained(dest)


def write_atomically(dest: Path, fill) -> Path:
    """Call ``fill(tmp_dir)`` then rename ``tmp_dir`` to ``dest`` (replacing an old ``dest``)."""
    return write_dir_atomically(dest, fill)


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (0 keeps all)."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def copy_model_files(src: Path, dest: Path) -> Path:
    """Export a checkpoint's model files (everything but the trainer state) to ``dest``, atomically."""

    def fill(tmp: Path) -> None:
        for item in Path(src).iterdir():
            if item.name == STATE_FILE:
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)

    return write_atomically(dest, fill)


def load_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory's ``*.safetensors`` files, by name."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} holds no *.safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint: it has no {STATE_FILE}")
    return torch.load(state_path, map_location="cpu", weights_only=False)
