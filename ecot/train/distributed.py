"""torchrun integration: process group, device, and DDP / FSDP2 wrapping.

Launched with ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the trainer joins a process
group: NCCL on GPUs, gloo on CPU. Without torchrun it runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

STRATEGIES = ("auto", "none", "ddp", "fsdp")


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    initialized_here = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
        initialized_here = True
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev, initialized_here=initialized_here)


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown distributed strategy {strategy!r}; expected one of {STRATEGIES}")
    if not info.distributed:
        return "none"
    return "ddp" if strategy in ("auto", "none") else strategy


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """Modules that FSDP2 shards one by one: transformer blocks of the LM and of the vision towers."""
    units = []
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("DecoderLayer") or name in ("Block", "VisionBlock", "TransformerBlock"):
            units.append(module)
    return units


def wrap(model: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """The model wrapped for the strategy ("none" returns it unchanged)."""
    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: the ViTs read features from their second-to-last block, so the
        # last block (and SigLIP's attention pool) never get gradients.
        return DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None, find_unused_parameters=True
        )
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for unit in _shard_units(model):
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown strategy {strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under a DDP wrapper (FSDP2 shards in place and has no wrapper)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def set_grad_sync(model: nn.Module, strategy: str, enabled: bool):
    """A context manager that skips the gradient all-reduce on accumulation micro-steps."""
    import contextlib

    if strategy == "ddp" and not enabled:
        return model.no_sync()
    if strategy == "fsdp":
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, strategy: str) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state dicts, meaningful on rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    if strategy == "fsdp":
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=options)
    module = unwrap(model)
    model_sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return model_sd, optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, strategy: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if strategy == "fsdp":
        # strict=False: parameters that never get a gradient (the ViTs' unused last block) have no state.
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False, strict=False)
        set_optimizer_state_dict(model, optimizer, state, options=options)
    else:
        optimizer.load_state_dict(state)
