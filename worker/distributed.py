"""Single process or DDP under ``torchrun``, detected from the environment (as nanoGPT does).

Under ``torchrun`` every rank trains its shard; gradients are averaged by DDP, so the gradient
norms are identical on every rank and need no reduction; losses and accuracies are summed
across ranks. Only rank 0 talks to the API and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> Context:
    """Join the process group when launched by ``torchrun``; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
            backend = "nccl"
        else:
            device = torch.device("cpu")
            backend = "gloo"
        dist.init_process_group(backend=backend)
        return Context(dist.get_rank(), world, local_rank, device)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return Context(0, 1, 0, device)


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(ctx: Context, flag: bool) -> bool:
    """True on every rank when it is true on any (a stop request must stop all ranks)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(ctx: Context, flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank (e.g. the API's cancel request)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.broadcast(t, src=0)
    return bool(t.item())
