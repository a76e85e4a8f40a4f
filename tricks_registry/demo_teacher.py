"""The small teacher of a ``--demo`` distillation run (section 5.3 needs a teacher; offline there is no pretrained
one to download): a ResNet-18-D trained once on the demo digits with the student's label-smoothing rung, kept in
the cache (``demo-teachers/``) and reused by every later demo, under a lock so that two demos started together
train it once.

The teacher's recipe is derived from the student's resolved recipe (:func:`demo_teacher_recipe`), so a new demo
and the resume of one (whose run folder holds the student's resolved recipe) derive the same teacher, with the
same hash, and find the same cache folder.
"""
from __future__ import annotations

import json
from pathlib import Path

from .cache import cache_dir
from .fsutil import ExclusiveLock
from .recipe import Recipe, resolve

__all__ = ["DEMO_TEACHER_MODEL", "DEMO_TEACHER_EPOCHS", "demo_teacher_overrides", "demo_teacher_recipe",
           "demo_teacher"]

#: what the ``--demo`` teacher is: the student's recipe as resolved, as a ResNet-18-D on the label-smoothing rung
DEMO_TEACHER_MODEL = "resnet18_v1d"
DEMO_TEACHER_EPOCHS = 3


def demo_teacher_overrides(student: Recipe) -> list[str]:
    """The ``--set`` overrides that make a ``--demo`` student's resolved recipe into its teacher's: ResNet-18-D, the
    student's tricks without distillation and mixup (the label-smoothing rung of the paper's ladder),
    :data:`DEMO_TEACHER_EPOCHS` epochs, and a name and description that say so."""
    base = f"{student.name}@{student.version}"
    description = (f"The --demo teacher of {base}: ResNet-18-D ({DEMO_TEACHER_MODEL}) trained with the "
                   f"label-smoothing rung ({base} without distillation and mixup) for {DEMO_TEACHER_EPOCHS} epochs on "
                   "the demo digits, because no pretrained teacher is reachable offline")
    return [f"name=resnet18d_teacher_for_{student.name}", f"description={json.dumps(description)}", "reference=''",
            f"model.name={DEMO_TEACHER_MODEL}", "model.kwargs={}", "tricks.distillation=null", "tricks.mixup=null",
            f"train.epochs={DEMO_TEACHER_EPOCHS}"]


def demo_teacher_recipe(student: Recipe) -> Recipe:
    """The teacher's recipe, resolved from the student's resolved recipe (:attr:`Recipe.mapping`) with
    :func:`demo_teacher_overrides`."""
    return resolve(student.mapping, demo_teacher_overrides(student), source=student.source)


def demo_teacher(student: Recipe, *, device: str | None = None, progress: bool = True) -> Path:
    """The run folder of the small teacher of the ``--demo`` student ``student``: trained once on the demo digits
    (see :func:`demo_teacher_overrides`) into the cache, under a lock, and reused after that; an interrupted one is
    resumed. One process trains it; another demo started meanwhile waits for it, then reuses it (the kernel drops
    the lock of a killed holder)."""
    from tqdm import tqdm

    from .checkpoint import resumable_checkpoints
    from .run_folder import RunFolder
    from .train import train  # imported on use: train.py brings torch and the loop

    teacher = demo_teacher_recipe(student)
    folder = cache_dir() / "demo-teachers" / teacher.sha256[:16]
    folder.mkdir(parents=True, exist_ok=True)

    def wait_note(holder: str) -> None:
        tqdm.write(f"demo: another demo ({holder or 'another process'}) is training the same teacher; waiting for it "
                   f"(lock {folder / '.lock'})")

    with ExclusiveLock(folder / ".lock", wait=True, on_wait=wait_note):
        runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "recipe.yaml").is_file())
        done = [p for p in runs if RunFolder(p).finished]
        if done:
            tqdm.write(f"demo: reusing the teacher trained before ({teacher.name}@{teacher.version}, ResNet-18-D) in "
                       f"{done[-1]}")
            return done[-1]
        stopped = [p for p in runs if resumable_checkpoints(RunFolder(p).checkpoints)]
        if stopped:
            tqdm.write(f"demo: resuming the teacher stopped before in {stopped[-1]}")
            return train(teacher, data_dir=None, output=folder, device=device, demo=True, resume=stopped[-1],
                         progress=progress)
        tqdm.write(f"demo: no pretrained teacher offline, so first training a small one: "
                   f"{teacher.name}@{teacher.version}, ResNet-18-D with the label-smoothing rung "
                   f"(no distillation, no mixup), {teacher.train.epochs} epochs on the demo digits, into {folder}; "
                   "later demos reuse it")
        return train(teacher, data_dir=None, output=folder, device=device, demo=True, progress=progress)
