"""Where this process stands in a run: rank, number of processes, device, and the few collective helpers
every loop uses (gather, agree on flags, mean over processes). One process is the degenerate case of each.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; SLURM's ``srun`` sets
``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID`` (read by timm's ``world_info_from_env``, as timm's
``init_distributed_device`` reads them), and the first host of ``SLURM_JOB_NODELIST`` is the master address
unless ``MASTER_ADDR`` is set. :func:`init_distributed` joins the process group (gloo on CPU, nccl on CUDA) and,
on CUDA, turns on ``cudnn.benchmark`` and TF32 matmuls as timm's ``train.py`` does.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from .compat import uncompiled
from .errors import TimmTricksError

__all__ = ["DistInfo", "launch_info", "init_distributed", "slurm_master_addr", "first_slurm_host", "unwrap_model", "say", "gather", "mean_over_processes", "agree_flags"]


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


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03`` (what ``scontrol show hostnames``
    prints first)."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise TimmTricksError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot read a host name from it; set MASTER_ADDR")
    prefix, ranges = m[1], m[2]
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def slurm_master_addr(environ: dict[str, str] | None = None) -> tuple[str, str]:
    """``(MASTER_ADDR, MASTER_PORT)`` for an ``srun`` launch: the environment's when set, else the first host of
    ``SLURM_JOB_NODELIST`` (``SLURM_NODELIST``) and a port derived from the job id (``12000 + id % 20000``:
    two jobs sharing a node do not collide)."""
    env = os.environ if environ is None else environ
    addr = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST") or
                                                     env.get("SLURM_NODELIST") or "127.0.0.1")
    port = env.get("MASTER_PORT") or str(12000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000)
    return addr, port


def launch_info() -> tuple[int, int, int]:
    """``(local_rank, rank, world_size)`` as this process's launcher set them (torchrun's ``LOCAL_RANK``, ``RANK``,
    ``WORLD_SIZE``; SLURM's ``srun``; MPI), read as timm's ``world_info_from_env`` reads them, before any process
    group is joined: what a command asks first (one process downloads, the main process prints and pushes).
    Nothing set, or a value that is not a number, is one process: ``(0, 0, 1)``."""
    from timm.utils.distributed import world_info_from_env

    try:
        return world_info_from_env()
    except ValueError:
        return 0, 0, 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun`` or by SLURM's ``srun`` (gloo on CPU, nccl on CUDA)."""
    from timm.utils.distributed import world_info_from_env  # torchrun's, SLURM's, MPI's variables, in timm's order

    local_rank, rank, world = world_info_from_env()
    if "SLURM_PROCID" in os.environ and "RANK" not in os.environ and world > 1:  # srun: torch reads env://
        addr, port = slurm_master_addr()
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank), MASTER_ADDR=addr,
                          MASTER_PORT=port)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TimmTricksError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True  # as timm's train.py: fixed input sizes, the fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP's ``module`` and ``torch.compile``'s ``_orig_mod``."""
    return uncompiled(getattr(model, "module", model))


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
