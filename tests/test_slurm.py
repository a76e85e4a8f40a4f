"""SLURM launches: ``srun`` sets SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID (no RANK, no MASTER_ADDR); the
processes find each other from those and the node list, as timm's ``init_distributed_device`` reads them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tricks_registry.distributed import first_slurm_host, slurm_master_addr
from tricks_registry.errors import TimmTricksError


@pytest.mark.parametrize("nodelist, first", [("gpu[03-05,9],cpu1", "gpu03"), ("node7", "node7"),
                                             ("a100-[12,14]", "a100-12"), ("n[001-128]", "n001"),
                                             ("host1,host2", "host1")])
def test_first_host_of_a_slurm_node_list(nodelist, first):
    assert first_slurm_host(nodelist) == first


def test_master_address_from_slurm_unless_set():
    env = {"SLURM_JOB_NODELIST": "gpu[03-05]", "SLURM_JOB_ID": "123456"}
    assert slurm_master_addr(env) == ("gpu03", str(12000 + 123456 % 20000))
    assert slurm_master_addr({**env, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400"}) == ("10.0.0.1", "29400")
    with pytest.raises(TimmTricksError, match="SLURM_JOB_NODELIST"):
        slurm_master_addr({"SLURM_JOB_NODELIST": "[bad"})


WORKER = textwrap.dedent("""
    import json, os, torch, torch.distributed as dist
    from tricks_registry.distributed import init_distributed
    env = init_distributed("cpu")
    total = torch.tensor([float(env.rank + 1)])
    dist.all_reduce(total)
    print(json.dumps({"rank": env.rank, "world": env.world_size, "local": env.local_rank, "sum": total.item(),
                      "backend": dist.get_backend(), "master": os.environ["MASTER_ADDR"]}))
    dist.destroy_process_group()
""")


def test_two_srun_style_processes_join_one_group():
    """What srun gives two tasks on one node: only SLURM_* variables (torchrun's are removed here)."""
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    base.update(SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="4242", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER], env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    got = sorted((json.loads(o.strip().splitlines()[-1]) for o, _ in outs), key=lambda d: d["rank"])
    assert [(g["rank"], g["world"], g["local"]) for g in got] == [(0, 2, 0), (1, 2, 1)]
    assert all(g["sum"] == 3.0 and g["backend"] == "gloo" and g["master"] == "localhost" for g in got)
