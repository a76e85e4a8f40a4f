"""``tricks ablate``: train a ladder of recipes for several seeds and tabulate it beside the paper (the library
side is :mod:`tricks_registry.ablate`)."""
from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..errors import TimmTricksError
from ..recipe import resolve
from .launch import add_launcher_args, resources_from_args
from .train import add_scan_args

__all__ = ["add_commands", "full_parser", "cmd_ablate"]

HELP = "train a ladder of recipes for several seeds; table and chart beside the paper"


def add_commands(sub: Any) -> argparse.ArgumentParser:
    """Add ``tricks ablate`` to the ``tricks`` subcommands: a stub whose options :func:`full_parser` gives (its
    ladders and presets come from :mod:`tricks_registry.ablate`, which imports torch and timm), read by
    :func:`tricks_registry.cli.main` when the command runs."""
    p = sub.add_parser("ablate", help=HELP, add_help=False)
    p.set_defaults(full_parser=full_parser)
    return p


def full_parser() -> argparse.ArgumentParser:
    """``tricks ablate``'s own parser, with every option."""
    from .. import ablate as library
    from ..ablate import LADDERS, PRESETS

    p = argparse.ArgumentParser(prog="tricks ablate", description=library.__doc__.split("\n\n")[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--ladder", choices=sorted(LADDERS), help="a named ladder (default: table6): "
                       + "; ".join(f"{k}: {', '.join(v)}" for k, v in LADDERS.items()))
    which.add_argument("--recipes", help="any recipes instead, comma-separated, in ladder order")
    p.add_argument("--data-dir", required=True, help="ImageFolder tree with train/<class>/ and val/<class>/ (or test/)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="none",
                   help="scale the recipes to other data/hardware: "
                        + "; ".join(f"{k}: {v.doc.split(':')[0]}" for k, v in PRESETS.items()))
    p.add_argument("--seeds", type=int, default=2, help="seeds per rung, 0 .. N-1 (default: %(default)s)")
    p.add_argument("--output", default="ablation", help="folder for the runs and results (default: %(default)s)")
    p.add_argument("--results", help="write results.json/.md/.png here instead of --output (e.g. a folder of the "
                                     "repository, without the runs' checkpoints)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every rung, after the preset (repeatable)")
    p.add_argument("--teacher", help="distillation teacher for every rung that distils (a run folder or a spec); "
                                     "default: the preset trains one, or the recipe's own")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their overrides, train nothing")
    p.add_argument("--no-progress", action="store_true")
    add_scan_args(p)
    add_launcher_args(p, ablate=True)
    p.set_defaults(func=cmd_ablate)
    return p


def _command(args: argparse.Namespace) -> str:
    parts = ["tricks", "ablate"]
    parts += ["--recipes", args.recipes] if args.recipes else ["--ladder", args.ladder or "table6"]
    parts += ["--data-dir", str(args.data_dir), "--preset", args.preset, "--seeds", str(args.seeds),
              "--output", str(args.output)]
    if args.results:
        parts += ["--results", str(args.results)]
    parts += [f"--set={s}" for s in args.overrides]
    if args.teacher:
        parts += ["--teacher", args.teacher]
    if args.device:
        parts += ["--device", args.device]
    return shlex.join(parts)


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..ablate import LADDERS, PRESETS, plan_ladder, run_ablation

    if args.recipes:
        refs = [r.strip() for r in args.recipes.split(",") if r.strip()]
        if not refs:
            raise TimmTricksError("--recipes: give at least one recipe name")
        ladder = "custom"
    else:
        ladder = args.ladder or "table6"
        refs = list(LADDERS[ladder])
    for ref in refs:
        resolve(ref)  # an unknown name fails here, before any training (RecipeError: exit code 2)
    if args.dry_run:
        preset = PRESETS[args.preset]
        rungs = plan_ladder(refs, preset, list(range(args.seeds)), args.overrides, teacher=args.teacher)
        if preset.teacher and not args.teacher and any("distillation" in r.recipes[0].tricks for r in rungs):
            t_ref, t_sets = preset.teacher
            print(f"teacher (trained first, once): {t_ref} --set {' --set '.join(t_sets(resolve(t_ref)))}")
        for rung in rungs:
            r = rung.recipes[0]
            print(f"{rung.label}: {r.name}@{r.version} x {args.seeds} seed(s) | {r.model.name}, "
                  f"{r.train.epochs} epochs, batch {r.train.global_batch_size}, lr {r.lr:g}")
            print(f"    --set {' --set '.join(rung.overrides) if rung.overrides else '(none)'}")
        return 0
    if args.launcher != "inprocess" or args.status or args.partial:
        return _launched(args, refs, ladder)
    run_ablation(refs, data_dir=args.data_dir, output=args.output, preset=args.preset, seeds=args.seeds,
                 extra=args.overrides, teacher=args.teacher, device=args.device, progress=not args.no_progress,
                 ladder_name=ladder, command=_command(args), results_dir=args.results,
                 scan=not args.no_scan, rescan=args.rescan)
    return 0


def _launched(args: argparse.Namespace, refs: list[str], ladder: str) -> int:
    """``--launcher local|slurm``, ``--status``, ``--partial``: the runs as jobs (:mod:`tricks_registry.launch`)."""
    import json
    from pathlib import Path

    from ..ablate import run_ablation
    from ..launch import JOBS_FILE, launch_ablation

    launcher = args.launcher
    if launcher == "inprocess":  # --status / --partial: the launcher that submitted the recorded jobs
        jobs = Path(args.output) / JOBS_FILE
        recorded = [r.get("launcher") for r in json.loads(jobs.read_text())["runs"].values()] if jobs.is_file() else []
        if not recorded:
            raise TimmTricksError(f"--status / --partial: no launched jobs recorded in {jobs}; give --launcher")
        launcher = recorded[0]

    def write_results(out: Path, only_finished: bool) -> None:
        run_ablation(refs, data_dir=args.data_dir, output=out, preset=args.preset, seeds=args.seeds,
                     extra=args.overrides, teacher=args.teacher, device=args.device, progress=False,
                     ladder_name=ladder, command=_command(args), results_dir=args.results, scan=False,
                     only_finished=only_finished)

    launch_ablation(refs, launcher=launcher, resources=resources_from_args(args), data_dir=args.data_dir,
                    output=args.output, preset=args.preset, seeds=args.seeds, extra=args.overrides,
                    teacher=args.teacher, device=args.device, status_only=args.status, partial=args.partial,
                    scan=not args.no_scan, rescan=args.rescan, write_results=write_results)
    return 0

