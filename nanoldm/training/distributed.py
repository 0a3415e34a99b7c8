"""Data parallelism for the training loop: the same command on one process, or on N under ``torchrun``.

Each rank takes its own slice of every micro-batch; after backward the gradients are summed over ranks and
divided by their number (an all-reduce, as PyTorch DDP does), so N ranks of ``B/N`` examples take the same
step as one process with ``B``. Gloo on CPU, NCCL on GPU. Only rank 0 writes files.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> tuple[int, int]:
    """(rank, world size); joins the process group when ``torchrun`` started more than one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_modules(modules: dict[str, torch.nn.Module], world: int) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if world > 1:
        for module in modules.values():
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Replace each gradient by its mean over the ranks."""
    if world > 1:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(world)


def average(value: float, world: int, device: torch.device) -> float:
    """Mean of a float over the ranks (for logging)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.item() / world


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()
