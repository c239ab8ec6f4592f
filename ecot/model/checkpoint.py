"""Checkpoint files: ``config.json`` + sharded ``*.safetensors`` + ``model.safetensors.index.json``.

Loading is strict and memory-aware:

1. every shard's header is read first (cheap), so a missing shard, a truncated or corrupt file,
   a missing or unexpected tensor and a shape mismatch are all reported by name before any
   weight is read;
2. the model is built on the ``meta`` device (no memory), then filled shard by shard, each
   tensor moved to its device/dtype and assigned in place, so peak memory is about one model.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecot.model.config import VLAConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_MAX_LISTED = 40
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model or is damaged; the message names what is wrong."""


def _listing(names: list[str]) -> str:
    shown = "\n  ".join(names[:_MAX_LISTED])
    more = f"\n  ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"\n  {shown}{more}"


def parse_size(size: int | str) -> int:
    """``"5GB"``, ``"500MB"``, ``"10KB"`` or a byte count -> bytes."""
    if isinstance(size, int):
        return size
    text = str(size).strip().upper()
    for unit, factor in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


# ---------------------------------------------------------------------- reading headers


def read_safetensors_header(file: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of a safetensors file, checking it is complete."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"shard {file.name} is truncated or corrupt: {size} bytes, no safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise CheckpointError(
                f"shard {file.name} is truncated or corrupt: header claims {header_len} bytes, file has {size}"
            )
        try:
            header = json.loads(fh.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"shard {file.name} is corrupt: unreadable header ({err})") from err
    header.pop("__metadata__", None)
    end = 0
    out = {}
    for name, info in header.items():
        try:
            start, stop = info["data_offsets"]
            out[name] = (tuple(int(d) for d in info["shape"]), str(info["dtype"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"shard {file.name} is corrupt: bad header entry for {name!r}") from err
        end = max(end, int(stop))
    expected = 8 + header_len + end
    if size != expected:
        raise CheckpointError(
            f"shard {file.name} is truncated or corrupt: expected {expected} bytes, found {size}"
        )
    return out


def checkpoint_tensors(directory: Path) -> dict[str, tuple[Path, tuple[int, ...], str]]:
    """``{name: (shard file, shape, dtype)}`` over all shards, with the index checked against them."""
    index_file = directory / INDEX_FILE
    if index_file.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index_file.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index_file} is not a valid safetensors index: {err}") from err
        shards = sorted(set(weight_map.values()))
        missing_files = [s for s in shards if not (directory / s).is_file()]
        if missing_files:
            raise CheckpointError(f"{directory}: shard files named in {INDEX_FILE} are missing:{_listing(missing_files)}")
    elif (directory / SINGLE_FILE).is_file():
        weight_map, shards = None, [SINGLE_FILE]
    else:
        raise CheckpointError(f"no weights in {directory}: expected {INDEX_FILE} with its shards, or {SINGLE_FILE}")

    tensors: dict[str, tuple[Path, tuple[int, ...], str]] = {}
    for shard in shards:
        for name, (shape, dtype) in read_safetensors_header(directory / shard).items():
            tensors[name] = (directory / shard, shape, dtype)
    if weight_map is not None:
        absent = [n for n, s in weight_map.items() if n not in tensors or tensors[n][0].name != s]
        if absent:
            raise CheckpointError(f"{INDEX_FILE} lists tensors that are not in their shard:{_listing(sorted(absent))}")
    return tensors


def check_against_model(model: nn.Module, tensors: dict[str, tuple[Path, tuple[int, ...], str]]) -> None:
    """Raise :class:`CheckpointError` naming missing / unexpected keys and shape mismatches."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(
        f"{n}: checkpoint {list(tensors[n][1])}, model {list(expected[n])}"
        for n in set(expected) & set(tensors)
        if tuple(tensors[n][1]) != expected[n]
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}):{_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}):{_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}):{_listing(mismatched)}")
    if problems:
        raise CheckpointError("checkpoint does not match the model config:\n" + "\n".join(problems))


# ---------------------------------------------------------------------- loading


def resolve_directory(path: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory, or a hub id downloaded with ``huggingface_hub``."""
    local = Path(path)
    if local.is_dir():
        return local
    if local.exists():
        raise NotADirectoryError(f"{path} is a file; expected a checkpoint directory (config.json + *.safetensors)")
    text = str(path)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text
    if not looks_like_hub_id:
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    from huggingface_hub import snapshot_download  # a dependency of transformers

    patterns = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]
    return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=patterns))


def _to_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        return None
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; expected e.g. 'bfloat16', 'float16', 'float32'")
    return value


def assign_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a (meta) parameter or buffer by ``value`` in place."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if leaf in module._parameters:
        old = module._parameters[leaf]
        param_cls = type(old) if old is not None and type(old) is not nn.Parameter else nn.Parameter
        if param_cls is nn.Parameter:
            module._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else True)
        else:  # a quantized parameter class (bitsandbytes): quantizes when moved to the GPU
            module._parameters[leaf] = param_cls(value.cpu(), requires_grad=False, **_quant_param_kwargs(old)).to(value.device)
    elif leaf in module._buffers:
        module._buffers[leaf] = value
    else:
        raise CheckpointError(f"the model has no parameter or buffer {name!r}")


def materialize_meta_buffers(model: nn.Module, device: torch.device | str) -> None:
    """Recreate non-persistent buffers left on ``meta`` (Llama's rotary ``inv_freq``, the locator's tables)."""
    for module_name, module in list(model.named_modules()):
        if not any(b is not None and b.is_meta for b in module.buffers(recurse=False)):
            continue
        if hasattr(module, "config") and "Rotary" in type(module).__name__:
            with torch.device(device):  # transformers 5 takes no device argument; 4.x computes on the default device
                fresh = type(module)(config=module.config)
            parent_name, _, leaf = module_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf, fresh)
        elif hasattr(module, "rebuild_buffers"):  # the locator's token tables (ecot.model.locator)
            module.rebuild_buffers(device)
        else:
            raise CheckpointError(f"buffer(s) of {module_name} ({type(module).__name__}) were not loaded")


def load_vla(
    cls,
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    revision: str | None = None,
    progress: bool = True,
):
    """Build ``cls`` (the VLA) on meta and fill it shard by shard; see :meth:`VLA.from_pretrained`."""
    from safetensors import safe_open
    from tqdm.auto import tqdm

    directory = resolve_directory(path, revision)
    config = VLAConfig.from_pretrained(directory)
    dtype = _to_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    tensors = checkpoint_tensors(directory)

    model = cls(config, device="meta")
    check_against_model(model, tensors)
    if load_in_4bit or load_in_8bit:
        from ecot.model.quantize import replace_linear_layers

        replace_linear_layers(model.language_model, "4bit" if load_in_4bit else "8bit", device, dtype)

    by_shard: dict[Path, list[str]] = {}
    for name, (shard, _, _) in tensors.items():
        by_shard.setdefault(shard, []).append(name)
    bar = tqdm(total=len(tensors), desc=f"loading {directory.name}", unit="tensor", disable=not progress)
    for shard, names in sorted(by_shard.items()):
        try:
            handle = safe_open(str(shard), framework="pt", device="cpu")
        except Exception as err:  # safetensors raises its own error type
            raise CheckpointError(f"shard {shard.name} is truncated or corrupt: {err}") from err
        with handle as f:
            for name in names:
                value = f.get_tensor(name)
                if dtype is not None and value.is_floating_point():
                    value = value.to(dtype)
                assign_tensor(model, name, value.to(device))
                bar.update(1)
    bar.close()
    materialize_meta_buffers(model, device)
    model.eval()

    from ecot.model.processor import VLAProcessor

    if any((directory / n).exists() for n in ("tokenizer.json", "tokenizer.model")):
        model.processor = VLAProcessor.from_pretrained(directory, config=config)
    return model


def _quant_param_kwargs(old: Any) -> dict:
    from ecot.model.quantize import param_kwargs

    return param_kwargs(old)


# ---------------------------------------------------------------------- saving


def save_vla(model: nn.Module, path: str | Path, max_shard_size: int | str = "5GB") -> Path:
    """Write config + shards + index into ``path``; files appear only when complete."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    state = model.state_dict()
    for name, value in state.items():
        if value.is_meta:
            raise ValueError(f"cannot save {name}: it is on the meta device (never loaded)")

    shards: list[dict[str, torch.Tensor]] = [{}]
    sizes = [0]
    seen: set[int] = set()
    for name, value in state.items():
        value = value.detach()
        whole = value.untyped_storage().nbytes() == value.numel() * value.element_size()
        if value.data_ptr() in seen or not whole:  # tied or fused (views): safetensors wants separate storage
            value = value.clone()
        seen.add(value.data_ptr())
        nbytes = value.numel() * value.element_size()
        if shards[-1] and sizes[-1] + nbytes > limit:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = value.contiguous().cpu()
        sizes[-1] += nbytes

    n = len(shards)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    staging = path / f".saving-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    weight_map = {}
    try:
        for shard_name, shard in zip(names, shards):
            save_file(shard, str(staging / shard_name), metadata={"format": "pt"})
            weight_map.update({k: shard_name for k in shard})
        index = {"metadata": {"total_size": int(sum(sizes))}, "weight_map": weight_map}
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    except Exception as err:
        shutil.rmtree(staging, ignore_errors=True)  # never leave a half-written staging directory
        from ecot.errors import is_disk_full

        if not isinstance(err, OSError) and is_disk_full(err):  # safetensors' own error for a full disk
            import errno

            raise OSError(errno.ENOSPC, f"no space left on device ({str(err).splitlines()[0]})", str(path)) from err
        raise
    # Old shards of an earlier save with another shard count would confuse loading: remove them.
    for old in path.glob("model-*-of-*.safetensors"):
        if old.name not in names:
            old.unlink()
    if (path / SINGLE_FILE).exists():
        (path / SINGLE_FILE).unlink()
    for shard_name in names:
        os.replace(staging / shard_name, path / shard_name)
    os.replace(staging / INDEX_FILE, path / INDEX_FILE)
    staging.rmdir()
    _config_with_saved_dtype(model.config, state).save_pretrained(path)
    return path


def _config_with_saved_dtype(config: VLAConfig, state: dict[str, torch.Tensor]) -> VLAConfig:
    """The config to write: ``torch_dtype`` says what the shards hold (as transformers does)."""
    import dataclasses

    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) != 1:
        return config
    name = str(dtypes.pop()).removeprefix("torch.")
    text_config = dict(config.text_config)
    if "torch_dtype" in text_config:
        text_config["torch_dtype"] = name
    return dataclasses.replace(config, torch_dtype=name, text_config=text_config)
