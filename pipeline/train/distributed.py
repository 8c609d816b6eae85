"""Process-group set-up for torchrun (DDP): gloo on CPU, nccl on CUDA; a no-op for one process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_info() -> ProcessInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); one process when absent."""
    return ProcessInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))


def init_process_group(info: ProcessInfo, device: torch.device) -> None:
    """Join the process group when several processes train (each CUDA process on its own GPU)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def destroy_process_group(info: ProcessInfo) -> None:
    """Leave the process group, if any."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def reduction_device(device: torch.device) -> torch.device:
    """Where a tensor must be for a collective: gloo reduces host tensors, nccl CUDA ones."""
    return device if device.type == "cuda" else torch.device("cpu")


def all_sum(values: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """Sum a tensor over all processes (identity for one process)."""
    if info.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def from_main(value: T, info: ProcessInfo) -> T:
    """Rank 0's `value` on every process, so that decisions (resume, stop) cannot differ between ranks."""
    if not info.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: nn.Module, info: ProcessInfo) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics), so evaluation agrees everywhere."""
    if info.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
