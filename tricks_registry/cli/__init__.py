"""The command line: ``tricks`` (subcommands) and ``tricks-train``. The only place that reads argv or ends
the process.

Bad input (a recipe, a trick, an override, a missing folder) raises a :class:`~tricks_registry.TimmTricksError`
in the library; here it becomes one clear line on stderr and exit code 2, never a traceback (a run stopped by a
signal after its checkpoint: the signal's 128 + N).

Modules: :mod:`.train` (``train``, ``tricks-train``), :mod:`.recipes` (``list``, ``show``, ``recipe``,
``lr-find``), :mod:`.export` (``export``, ``push``, ``export-transfer``), :mod:`.ablate` (``ablate``).
``python -m tricks_registry.cli train ...`` (what ``torchrun`` starts) is ``tricks train ...``.

Start-up: ``tricks --help``, ``--version``, ``tricks-train --help`` and the recipe commands import neither torch
nor timm. Each command module has ``add_commands(sub)``, which only adds its argparse parsers, and imports the
library it runs inside its command functions (``tests/test_startup.py`` checks it). A command whose options come
from a heavy module (``ablate``) adds a stub parser that sets ``full_parser``: :func:`main` parses the rest of the
command line with the full parser, built when that command runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from .. import __version__
from ..errors import TimmTricksError, TrainingStopped
from . import ablate, export, recipes, train

__all__ = ["main", "train_main", "build_parser", "run_command"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tricks", description="Bag of Tricks (He et al. 2019) for timm: "
                                     "train recipes, list and show tricks, resolve and export recipes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s (timm-tricks) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_commands(sub)    # train
    recipes.add_commands(sub)  # list, show, lr-find, recipe
    export.add_commands(sub)   # export, push, export-transfer
    ablate.add_commands(sub)   # ablate: a ladder x seeds, table and chart beside the paper
    from . import evaluate     # validate, predict (torch and timm load inside the commands)
    evaluate.add_commands(sub)
    return parser


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a :class:`TimmTricksError` becomes one line on stderr and exit code 2 (a run stopped by
    a signal after its checkpoint: the signal's 128 + N), never a traceback."""
    try:
        return func(args)
    except TrainingStopped as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    except TimmTricksError as err:
        data = sys.modules.get("tricks_registry.data")  # a BadImageError only if the command loaded that module
        if data is not None and isinstance(err, data.BadImageError):
            # read during training (--no-scan), in this process or in a data-loader worker
            print(f"error: data: {err.summary}; remove or replace it, or run with --skip-bad-images", file=sys.stderr)
            return 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tricks list | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``tricks``."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    full_parser = getattr(args, "full_parser", None)
    if full_parser is not None:  # a stub (tricks ablate): its own parser reads the rest of the command line
        args = full_parser().parse_args(rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)[1:]  # the command's own arguments (--launcher jobs)
    return run_command(args.func, args)


def train_main(argv: Sequence[str] | None = None) -> int:
    """``tricks-train``: the same as ``tricks train``."""
    parser = argparse.ArgumentParser(prog="tricks-train", description="Train a timm-tricks recipe "
                                     "(single process, or torchrun --nproc_per_node N for DDP).")
    train.add_train_args(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line again, for --launcher jobs
    return run_command(train.cmd_train, args)
