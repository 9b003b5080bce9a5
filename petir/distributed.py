"""Data-parallel helpers: joining torchrun's process group, and gathering a batch from every rank.

The one trainer runs on CPU, one GPU, or several processes launched with ``torchrun``; a task's loss gathers what
its in-batch negatives need (:func:`gather_with_gradient`, :func:`gather_objects`), so each query sees every
process's passages and the loss equals one process on the whole batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from petir.cli import resolve_device


def init_distributed(device: str = "auto") -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group when launched by torchrun (NCCL for GPUs, gloo
    for CPU processes). Idempotent."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolve_device(device).startswith("cuda") else "gloo")
    return int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))


@contextmanager
def main_process_first(device: str = "auto") -> Iterator[None]:
    """Under torchrun, rank 0 runs the block first (building shared caches), the other ranks after it."""
    rank, world_size, _ = init_distributed(device)
    if rank != 0:
        barrier(world_size)
    yield
    if rank == 0:
        barrier(world_size)


def barrier(world_size: int) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if world_size > 1:
        dist.barrier()


def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order."""
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, value)
    return everyone


class _GatherWithGradient(torch.autograd.Function):
    """All ranks' tensors concatenated in rank order; the gradient of each part returns, summed over the ranks
    whose losses used it, to the rank that computed it (all-reduce then slice: any backend, gloo included)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        gradient = gradient.contiguous()
        dist.all_reduce(gradient)
        return gradient.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` [n, ...] concatenated [world_size * n, ...] in rank order; gradients flow back to the
    rank that computed each part."""
    return _GatherWithGradient.apply(tensor)
