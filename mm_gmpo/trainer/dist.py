"""The one border to distributed code: the process group and every collective.

Everything else in the project is written for one process; the trainer and the actor call these helpers where data
crosses processes (reward statistics, validation accuracy, micro-batch plans, gradients). DeepSpeed's engine makes
its own collectives inside (:mod:`mm_gmpo.trainer.engine`). Launch with ``torchrun`` or ``deepspeed``; a single
process needs no launcher. Every helper is the identity for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mm_gmpo.errors import require


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_device(local_rank: int = 0) -> torch.device:
    """This process's GPU when there is one (made current), else the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(use_deepspeed: bool) -> DistContext:
    """Join the process group set up by torchrun/deepspeed (gloo on CPU, nccl on GPU), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = local_device(local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if use_deepspeed and not dist.is_initialized():
        if world_size == 1:  # DeepSpeed wants a process group even alone (else it tries MPI discovery)
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(free_port()))
            for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
                os.environ.setdefault(key, value)
        require("deepspeed", "trainer.deepspeed", "pip install -e '.[deepspeed]'").init_distributed(
            dist_backend=backend
        )
    elif world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _all_reduce(ctx: DistContext, values: list[float], op: dist.ReduceOp) -> list[float]:
    if ctx.world_size == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of a list of floats over processes."""
    return _all_reduce(ctx, values, dist.ReduceOp.SUM)


def all_reduce_max(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise maximum of a list of floats over processes."""
    return _all_reduce(ctx, values, dist.ReduceOp.MAX)


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (on every process)."""
    if ctx.world_size == 1:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def exchange_objects(ctx: DistContext, outgoing: list[Any]) -> list[Any]:
    """All-to-all of picklable objects: ``outgoing[d]`` goes to process d; returns what each process sent this one,
    in rank order (one scatter per process, so each object crosses only to its own destination)."""
    if ctx.world_size == 1:
        return list(outgoing)
    if len(outgoing) != ctx.world_size:
        raise ValueError(f"exchange_objects needs one object per process ({ctx.world_size}), got {len(outgoing)}")
    incoming: list[Any] = []
    for source in range(ctx.world_size):
        received: list[Any] = [None]
        dist.scatter_object_list(received, list(outgoing) if ctx.rank == source else None, src=source)
        incoming.append(received[0])
    return incoming


def barrier(ctx: DistContext) -> None:
    if ctx.world_size > 1:
        dist.barrier()


def broadcast_from_main(ctx: DistContext, tensors) -> None:
    """Overwrite ``tensors`` in place with the main process's values (every process starts from rank 0's weights)."""
    if ctx.world_size > 1:
        for t in tensors:
            dist.broadcast(t, src=0)


def sum_gradients(ctx: DistContext, params: list[torch.Tensor]) -> None:
    """Each parameter's ``.grad`` summed over processes in place (a missing gradient counts as zeros)."""
    if ctx.world_size == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def shutdown(ctx: DistContext) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
