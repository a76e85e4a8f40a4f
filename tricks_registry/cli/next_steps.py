"""What to do with a run that just ended: the last lines of ``tricks-train`` (issue 25).

:func:`next_steps` gives the commands with the run's folder filled in, each runnable as printed from the folder
the run was started in: score it (``tricks validate``; a ``--demo`` run on the validation digits it was scored on),
label a few of them (``tricks predict --demo``), export it (``tricks export``) and load the export in plain timm
(``timm.create_model("local-dir:...")`` in a Python that imports no plugin). The programs are named as this
process was started (:func:`programs`): ``tricks`` when that is the one on ``PATH``, else its path (the README's
``.venv/bin/tricks``). :func:`print_next_steps` prints them on the main process unless ``--quiet``.

Plain data and strings: importing this module loads neither torch nor timm (only :func:`next_steps` asks
:mod:`tricks_registry.models` how the export names the model).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .evaluate import DEMO_COUNT

if TYPE_CHECKING:
    from ..recipe import Recipe

__all__ = ["NextStep", "Programs", "programs", "next_steps", "format_next_steps", "print_next_steps", "HEADER",
           "EXPORT_SUBFOLDER"]

#: the line above the commands
HEADER = "next steps (each line runs as printed, from this folder):"
#: where the printed ``tricks export`` writes: inside the run folder, beside ``--push-to-hub``'s ``hub/``
EXPORT_SUBFOLDER = "export"
#: the ``data.dataset`` kinds ``tricks validate`` cannot score (streams)
_STREAMS = ("wds", "hfids")


@dataclass(frozen=True)
class NextStep:
    command: str  # a shell line
    what: str     # what it does, the comment after it

    def lines(self) -> list[str]:
        """What it does as a shell comment, then the command: both run as printed."""
        return [f"  # {self.what}", f"  {self.command}"]


@dataclass(frozen=True)
class Programs:
    """How to start ``tricks`` and the Python that has timm, as shell words."""

    tricks: str
    python: str


def _shown(path: str) -> str:
    """``path`` as a user would type it: relative when it lies below the working folder, else absolute."""
    absolute = os.path.abspath(path)
    try:
        rel = os.path.relpath(absolute)
    except ValueError:  # another drive
        return absolute
    return rel if not rel.startswith(os.pardir) else absolute


def _on_path(name: str, path: str) -> bool:
    found = shutil.which(name)
    return found is not None and os.path.abspath(found) == os.path.abspath(path)


def programs(argv0: str | None = None, executable: str | None = None) -> Programs:
    """The ``tricks`` beside the running ``tricks-train`` / ``tricks`` (``argv0``: default ``sys.argv[0]``), else
    the one beside the running Python (``executable``), else ``python -m tricks_registry.cli``; each by its bare name
    when it is what ``PATH`` finds (compared without following links: a venv's ``python`` links to the system one)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    python = "python" if _on_path("python", executable) else shlex.quote(_shown(executable))
    candidates = []
    if Path(argv0).name in ("tricks", "tricks-train"):
        candidates.append(Path(argv0).with_name("tricks"))
    candidates.append(Path(executable).with_name("tricks"))
    for tricks in candidates:
        if tricks.is_file() and os.access(tricks, os.X_OK):
            name = "tricks" if _on_path("tricks", str(tricks)) else shlex.quote(_shown(str(tricks)))
            return Programs(name, python)
    return Programs(f"{python} -m tricks_registry.cli", python)


def next_steps(run_dir: str | os.PathLike, recipe: "Recipe", *, demo: bool, data_dir: str | None = None,
               progs: Programs | None = None) -> list[NextStep]:
    """The commands for the run in ``run_dir`` trained from the resolved ``recipe``: validate, predict
    (a ``--demo`` run, or a folder run's validation folder), export, and the plain-timm load of the export; for a
    detection / segmentation run, ``tricks export-transfer``. ``data_dir`` is the run's ``--data-dir``."""
    progs = progs or programs()
    run = shlex.quote(str(run_dir))
    export = Path(run_dir) / EXPORT_SUBFOLDER
    tricks = progs.tricks
    if recipe.task != "classification":
        return [NextStep(f"{tricks} export-transfer {run} {shlex.quote(str(export))}",
                         "export it: a folder that tricks_registry.transfer.load_exported rebuilds")]
    steps: list[NextStep] = []
    data = recipe.data
    dataset = data.dataset or "folder"
    kind = dataset.split("/", 1)[0]
    if demo:
        steps.append(NextStep(f"{tricks} validate {run} --demo",
                              "score it on the demo's validation digits (the ones it was scored on)"))
        steps.append(NextStep(f"{tricks} predict {run} --demo --count {DEMO_COUNT}",
                              f"label {DEMO_COUNT} of them: index, true digit, top-5"))
    elif data_dir is not None and kind not in _STREAMS:
        split = data.val_split
        where = f" --data-dir {shlex.quote(str(data_dir))}"
        where += "" if split == "val" else f" --split {shlex.quote(split)}"
        where += "" if kind == "folder" else f" --dataset {shlex.quote(dataset)}"
        steps.append(NextStep(f"{tricks} validate {run}{where}",
                              "score it on its validation split: top-1, top-5, per-class accuracy"))
    portable = _portable(str(recipe.model.name))
    if portable is None:  # no timm architecture to export it as (a torchvision: model): tricks export would refuse
        return steps
    plugin = portable.plugin_module
    steps.append(NextStep(f"{tricks} export {run} --out {shlex.quote(str(export))}",
                          "export it: weights, timm's config.json, a model card (tricks push uploads it)"))
    code = (f"import timm{', ' + plugin if plugin else ''}; "
            f"m = timm.create_model({json.dumps('local-dir:' + str(export))}, pretrained=True); "
            'print(m.pretrained_cfg["architecture"], m.num_classes, "classes")')
    steps.append(NextStep(f"{progs.python} -c {shlex.quote(code)}",
                          "load the export in plain timm, without this plugin" if not plugin else
                          f"load the export in timm ({portable.architecture} is not timm's own: it needs {plugin})"))
    return steps


def _portable(model: str) -> Any:
    """How the export names ``model`` in timm (:func:`tricks_registry.models.portable_architecture`), or None when
    it cannot be exported. Imported here: that module loads torch and timm (after a run they are loaded)."""
    from ..errors import TimmTricksError
    from ..models import portable_architecture

    try:
        return portable_architecture(model)
    except TimmTricksError:
        return None


def format_next_steps(steps: Sequence[NextStep]) -> str:
    return "\n".join([HEADER, *(line for s in steps for line in s.lines())])


def print_next_steps(args: Any, recipe: Any, run_dir: str | os.PathLike) -> None:
    """``tricks-train``'s last lines: :func:`next_steps` for ``run_dir``, printed by the main process only (rank 0
    under torchrun or srun), not with ``--quiet``."""
    if getattr(args, "quiet", False):
        return
    from ..distributed import launch_info  # torchrun's, srun's or MPI's rank, as timm reads them

    if launch_info()[1] != 0:
        return
    steps = next_steps(run_dir, recipe, demo=recipe.demo_run, data_dir=getattr(args, "data_dir", None))
    if steps:
        print(format_next_steps(steps), flush=True)

