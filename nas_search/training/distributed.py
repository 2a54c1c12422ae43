"""Device selection and ``torchrun`` process-group set-up (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from nas_search.errors import UserError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a ``torchrun`` job (a single process when not launched
    by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that prints and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op when not distributed)."""
        if self.enabled:
            dist.barrier()


#: Training devices; ``auto`` picks CUDA when available.
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; accepted: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group described by torchrun's environment variables, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(context: DistributedContext) -> None:
    """Leave the process group."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def distributed_step_module(step_module: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """A sandwich step module wrapped in ``DistributedDataParallel`` under ``torchrun``
    (``find_unused_parameters``: no subnet of a step uses every branch); as it is otherwise."""
    if not context.enabled:
        return step_module
    return nn.parallel.DistributedDataParallel(
        step_module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )
