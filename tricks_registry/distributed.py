"""Where this process stands in a run: rank, number of processes, device, and the few collective helpers
every loop uses (gather, agree on flags, mean over processes). One process is the degenerate case of each.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed`
joins the process group (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from .errors import TimmTricksError

__all__ = ["DistInfo", "init_distributed", "unwrap_model", "say", "gather", "mean_over_processes", "agree_flags"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, number of processes, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group when launched by it (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TimmTricksError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP's ``module`` and ``torch.compile``'s ``_orig_mod``."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def say(env: DistInfo, message: str) -> None:
    """Print ``message`` on the main process only (through tqdm, so progress bars stay intact)."""
    if env.is_main:
        tqdm.write(message)


def gather(obj: Any, env: DistInfo) -> list[Any]:
    """``obj`` of every process, in rank order (``[obj]`` on one process)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_processes(totals: torch.Tensor, count: int, env: DistInfo) -> list[float]:
    """``sum(totals) / sum(count)`` over all processes, element by element (``totals`` 1-D)."""
    both = torch.cat([totals.double(), torch.tensor([float(count)], device=totals.device, dtype=torch.float64)])
    if env.distributed:
        dist.all_reduce(both)
    return (both[:-1] / both[-1].clamp(min=1)).tolist()


def agree_flags(nonfinite_at: torch.Tensor, stop: bool, env: DistInfo) -> tuple[int, bool]:
    """(first update with a non-finite loss or -1, stop requested), agreed by every process so that all of them
    stop at the same step."""
    if not env.distributed:
        return int(nonfinite_at), stop
    both = torch.stack([nonfinite_at.double(), torch.tensor(float(stop), device=nonfinite_at.device,
                                                            dtype=torch.float64)])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return int(both[0]), bool(both[1])
