"""The launcher options of ``tricks-train`` and ``tricks ablate`` (``--launcher local|slurm`` and the resources of
one run); the launchers are :mod:`tricks_registry.launch`."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_launcher_args", "resources_from_args", "job_argv", "launch_from_args"]

def add_launcher_args(p: argparse.ArgumentParser, *, ablate: bool = False) -> None:
    """``--launcher`` and the resources of one run (one job)."""
    g = p.add_argument_group("launcher (pip install 'timm-tricks[slurm]': submitit)")
    g.add_argument("--launcher", choices=["inprocess", "local", "slurm"], default="inprocess",
                   help="where the run(s) train: this process (default), submitit's local executor on this machine, "
                        "or SLURM jobs through submitit" + (" (one job array; returns once submitted)" if ablate else
                                                             " (returns once submitted)"))
    g.add_argument("--nodes", type=int, default=1, help="nodes per run (default: %(default)s)")
    g.add_argument("--gpus-per-node", type=int, default=0,
                   help="GPUs per node, one task (process) each; the recipe's global batch is split over nodes x "
                        "GPUs (default: %(default)s, one CPU task)")
    g.add_argument("--cpus-per-task", type=int, help="sbatch --cpus-per-task")
    g.add_argument("--partition", help="sbatch --partition")
    g.add_argument("--account", help="sbatch --account")
    g.add_argument("--qos", help="sbatch --qos")
    g.add_argument("--constraint", help="sbatch --constraint")
    g.add_argument("--timeout", default="24:00:00",
                   help="time limit of one attempt: minutes or HH:MM:SS / D-HH:MM (default: %(default)s); a job "
                        "reaching it saves and is requeued")
    g.add_argument("--mem", help="sbatch --mem (e.g. 64G)")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY[=VALUE]",
                   help="any other sbatch option, e.g. --sbatch mail-type=END --sbatch exclusive (repeatable)")
    g.add_argument("--max-requeues", type=int, default=3,
                   help="requeues after a time limit or preemption before the job gives up (default: %(default)s)")
    g.add_argument("--signal-delay", type=int, default=120, metavar="SECONDS",
                   help="how long before the time limit the job is told to save (default: %(default)s)")
    if ablate:
        g.add_argument("--max-parallel", type=int,
                       help="runs at a time (local: default one per GPU, else 1; SLURM: the array's %%N)")
        g.add_argument("--status", action="store_true",
                       help="show each run's state (pending, running, finished, failed) and submit nothing")
        g.add_argument("--partial", action="store_true",
                       help="write the table, results.json and chart for the runs finished so far")


def resources_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~tricks_registry.launch.Resources` the options give (bad values: a ``TimmTricksError``)."""
    from ..launch import Resources, parse_sbatch_option, parse_timeout

    return Resources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                     partition=args.partition, account=args.account, qos=args.qos, constraint=args.constraint,
                     timeout_min=parse_timeout(args.timeout), mem=args.mem,
                     sbatch=tuple(parse_sbatch_option(s) for s in args.sbatch),
                     max_parallel=getattr(args, "max_parallel", None), max_requeues=args.max_requeues,
                     signal_delay_s=args.signal_delay)


def job_argv(argv: list[str], leave_out: tuple[str, ...] = ()) -> list[str]:
    """``argv`` less the launcher's options (and the options named in ``leave_out``, e.g. ``--output``): the
    command line a launched job runs."""
    strip = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_launcher_args(strip, ablate=True)
    for option in leave_out:
        strip.add_argument(option, action="store_true" if option == "--resume-if-exists" else "store")
    return strip.parse_known_args(argv)[1]


def launch_from_args(args: argparse.Namespace, recipe: Any) -> int:
    """``tricks-train ... --launcher local|slurm``: this command, less the launcher's options, as one job."""
    from ..errors import TimmTricksError
    from ..launch import experiment_name, launch_train

    if args.resume:
        raise TimmTricksError("--launcher: the job continues its run folder itself (--resume-if-exists); drop "
                              "--resume and give the same --recipe, --output and --experiment")
    experiment = args.experiment or experiment_name(recipe)
    argv = job_argv(list(args.argv), ("--output", "--experiment", "--resume-if-exists"))
    info = launch_train(argv, launcher=args.launcher, resources=resources_from_args(args), output=args.output,
                        experiment=experiment, recipe=recipe, device_batch=args.device_batch)
    verb = "finished" if info.get("state") == "finished" else "submitted"
    print(f"{verb}: job {info['job_id']} | run folder {info['run_dir']} | log {info['log']}")
    return 0
