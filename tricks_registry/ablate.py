"""``tricks ablate``: train a ladder of recipes for several seeds and tabulate it beside the paper.

The library side of the command (its arguments are read in :mod:`tricks_registry.cli`).

He et al. 2019 report their tricks as a cumulative ladder: the baseline (Table 2), efficient training
(Table 3), the ResNet-D tweak (Table 5), then cosine decay, label smoothing, distillation and mixup (Table 6).
``tricks ablate --ladder table6 --data-dir DIR --preset cifar --seeds 2 --output OUT`` trains every rung for
every seed with :func:`tricks_registry.train.train` and writes, atomically, after every run:

* ``results.json``: every run (seed, run folder, final and best top-1, seconds per epoch) and per rung the
  mean, sample standard deviation, minimum and maximum of the final top-1 over the seeds;
* ``results.md``: the table (mean ± s.d. of top-1, the gain over the rung it extends, time per epoch, and the
  paper's figure for the same rung, read from the recipe's ``reference``);
* ``results.png``: a bar chart of the same (top-1 per rung; gain over the parent rung, ours against the paper).

A rung whose run folder already holds a finished run of the same resolved recipe (same SHA-256) is not
trained again, so an interrupted ablation continues where it stopped.

A *preset* scales the published recipes to other data and hardware as a list of ``--set`` overrides per
recipe (see :data:`PRESETS`); ``--set`` given on the command line applies after it, to every rung.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from .checkpoint import atomic_write_png, atomic_write_text
from .data import open_split
from .errors import CheckpointError, TimmTricksError
from .recipe import Recipe, resolve
from .run_folder import RunFolder
from .train import train

__all__ = ["LADDERS", "PRESETS", "RUNG_LABELS", "Preset", "Rung", "plan_ladder", "run_ablation", "read_run",
           "finished_run", "preset_teacher", "rung_stats", "paper_figure", "render_markdown", "render_chart"]

#: named ladders: recipe names in the paper's order
LADDERS: dict[str, tuple[str, ...]] = {
    "table6": ("resnet50_baseline", "resnet50_efficient", "resnet50d_efficient", "resnet50d_cosine",
               "resnet50d_label_smoothing", "resnet50d_distill", "resnet50d_mixup"),
    "table5": ("resnet50_efficient", "resnet50b_efficient", "resnet50c_efficient", "resnet50d_efficient"),
}

#: how each rung of the paper's ladders reads in a table
RUNG_LABELS: dict[str, str] = {
    "resnet50_baseline": "baseline (Table 2)", "resnet50_efficient": "+ efficient training",
    "resnet50b_efficient": "ResNet-B", "resnet50c_efficient": "ResNet-C",
    "resnet50d_efficient": "+ ResNet-D", "resnet50d_cosine": "+ cosine decay",
    "resnet50d_label_smoothing": "+ label smoothing", "resnet50d_distill": "+ distillation (w/o mixup)",
    "resnet50d_mixup": "+ mixup (w/o distillation)", "resnet50d_all": "+ distillation + mixup",
}

_RESNET_TWEAK = re.compile(r"^resnet(\d+)_v1([abcd])$")


# ---------------------------------------------------------------------------------------------------------
# presets
@dataclass(frozen=True)
class Preset:
    """Per-recipe ``--set`` overrides that scale a ladder to other data and hardware, and its teacher.

    ``teacher`` gives the recipe and overrides of a teacher the ablation trains once (seed fixed) before the
    rungs that distil; ``None`` keeps the teacher the recipe names.
    """

    name: str
    doc: str
    overrides: Callable[[Recipe], list[str]]
    teacher: tuple[str, Callable[[Recipe], list[str]]] | None = None


def _none(recipe: Recipe) -> list[str]:
    return []


#: the cifar preset's scale: a rung trained for E epochs in the paper trains for E * this / 120 here
CIFAR_EPOCHS_PER_120 = 2
CIFAR_DEPTH = 18
CIFAR_BATCH_DIVISOR = 4
CIFAR_TEACHER_EPOCHS = 4


def _cifar(recipe: Recipe) -> list[str]:
    """The ``cifar`` preset's overrides for one rung (see :data:`PRESETS`)."""
    tricks = recipe.tricks
    out = ["data.input_size=32", "data.eval_crop_pct=1.0", "data.workers=1", "train.log_every=50"]
    m = _RESNET_TWEAK.match(recipe.model.name)
    if m:
        out.append(f"model.name=resnet{CIFAR_DEPTH}_v1{m.group(2)}")
    batch = max(1, recipe.train.global_batch_size // CIFAR_BATCH_DIVISOR)
    out.append(f"train.global_batch_size={batch}")
    if "linear_scaling" not in tricks:  # the paper's 0.1 per 256 images; linear_scaling derives it itself
        out.append(f"train.lr={recipe.lr * batch / recipe.train.global_batch_size:g}")
    scale = CIFAR_EPOCHS_PER_120 / 120
    epochs = max(1, round(recipe.train.epochs * scale))
    out.append(f"train.epochs={epochs}")
    if "linear_warmup" in tricks:
        out.append(f"tricks.linear_warmup.epochs={(tricks['linear_warmup'] or {}).get('epochs', 5.0) * scale:.4g}")
    if "multistep" in tricks:
        milestones = (tricks["multistep"] or {}).get("milestones", [30, 60, 90])
        scaled = sorted({round(m * scale) for m in milestones} & set(range(1, epochs)))
        out.append(f"tricks.multistep.milestones={scaled or [epochs]}")
    return out


def _cifar_teacher(recipe: Recipe) -> list[str]:
    """The teacher's overrides: a rung's, trained longer, with a seed of its own."""
    return [s for s in _cifar(recipe) if not s.startswith("train.epochs=")] + \
        [f"train.epochs={CIFAR_TEACHER_EPOCHS}", "train.seed=1000"]


PRESETS: dict[str, Preset] = {
    "none": Preset("none", "the recipes as published (the paper's ImageNet setting); distillation uses the "
                           "teacher the recipe names", _none),
    "cifar": Preset(
        "cifar",
        "The paper's ladder scaled to CIFAR-10 (50,000 training images, 32x32) on a 2-core CPU: the full Table 6 "
        f"ladder (7 rungs) x 2 seeds plus the teacher in about 45-55 minutes. ResNet-{CIFAR_DEPTH} replaces "
        "ResNet-50 with the same A/B/C/D tweak (at 32 px ResNet-50-D trains ~160 img/s, ResNet-18-D ~400 img/s "
        f"in fp32 on 2 threads: 50 would allow well under one epoch per rung); every rung trains "
        f"{CIFAR_EPOCHS_PER_120} epochs per 120 of the paper's (2 epochs; the mixup rung's 200 become 3), "
        "with warmup and step milestones scaled alike; the global batches are divided by "
        f"{CIFAR_BATCH_DIVISOR} (baseline 64 at LR 0.025, efficient 256 at LR 0.1 by linear scaling: the paper's "
        "4:1 ratio and 0.1 per 256 images); 32 px input, no resize at evaluation, 1 loader worker. Every trick "
        "stays on, including the paper's augmentation. The distillation teacher is a ResNet-18-D trained once "
        f"with the label-smoothing rung's recipe (cosine + label smoothing, the paper's teacher recipe) for "
        f"{CIFAR_TEACHER_EPOCHS} epochs (twice a rung's), seed 1000, reused by every seed.",
        _cifar, teacher=("resnet50d_label_smoothing", _cifar_teacher)),
}


# ---------------------------------------------------------------------------------------------------------
# plan
@dataclass
class Rung:
    """One recipe of the ladder, resolved per seed with the preset and the command line's overrides."""

    ref: str
    label: str
    overrides: list[str]
    recipes: dict[int, Recipe] = field(default_factory=dict)
    parent: str | None = None
    paper: dict[str, Any] | None = None  # the paper's figure for the published recipe (:func:`paper_figure`)

    @property
    def name(self) -> str:
        return next(iter(self.recipes.values())).name


def paper_figure(reference: str) -> dict[str, Any] | None:
    """The paper's top-1 and table for a recipe, from its ``reference`` (``... Table 6, ... (77.91 top-1 ...``)."""
    top1 = re.search(r"\(([0-9]+(?:\.[0-9]+)?) top-1", reference or "")
    if not top1:
        return None
    table = re.search(r"Table (\d+)", reference)
    return {"top1": float(top1.group(1)), "table": int(table.group(1)) if table else None}


def plan_ladder(refs: Sequence[str], preset: Preset, seeds: Sequence[int], extra: Sequence[str] = (),
                teacher: str | None = None) -> list[Rung]:
    """Resolve every rung for every seed: the preset's overrides, then ``extra`` (``--set``), the seed, and the
    teacher (a run folder or a spec) for rungs that distil."""
    rungs: list[Rung] = []
    for ref in refs:
        published = resolve(ref)
        sets = [*preset.overrides(published), *extra]
        if teacher is not None and "distillation" in published.tricks:
            sets.append(f"tricks.distillation.teacher={teacher}")
        rung = Rung(ref=ref, label=RUNG_LABELS.get(published.name, published.name), overrides=sets,
                    paper=paper_figure(published.reference))
        rung.recipes = {s: resolve(ref, [*sets, f"train.seed={s}"]) for s in seeds}
        rungs.append(rung)
    names = [r.name for r in rungs]
    for rung in rungs:
        lineage = next(iter(rung.recipes.values())).lineage
        parents = [ident.split("@")[0] for ident in lineage[1:]]
        rung.parent = next((p for p in parents if p in names), None)
    return rungs


# ---------------------------------------------------------------------------------------------------------
# runs and statistics
def finished_run(folder: Path, sha256: str) -> Path | None:
    """A finished run (it wrote its summary) of the recipe with this hash under ``folder``, newest first."""
    if not folder.is_dir():
        return None
    for run_dir in sorted(folder.iterdir(), reverse=True):
        run = RunFolder(run_dir)
        if run.finished and run.recipe_sha256() == sha256:
            return run_dir
    return None


def read_run(run_dir: Path) -> dict[str, Any]:
    """Final and best top-1, epochs and mean seconds / images per second per epoch of a finished run."""
    run = RunFolder(run_dir)
    summary = run.summary()
    if summary is None:
        raise CheckpointError(f"{run_dir}: the run has not finished (no summary.json)")
    rows = run.metrics()
    epoch_s = [r["epoch_s"] for r in rows if r.get("epoch_s")]
    rates = [r["images_per_s"] for r in rows if r.get("images_per_s")]
    return {"run_dir": str(run_dir), "top1": float(summary["final"]["top1"]), "best_top1": summary["best_top1"],
            "epochs": summary["epochs_run"], "model": summary["model"],
            "epoch_s": statistics.fmean(epoch_s) if epoch_s else None, "train_s": sum(epoch_s),
            "images_per_s": statistics.fmean(rates) if rates else None}


def rung_stats(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of the final top-1 over seeds; mean time per epoch."""
    top1 = [r["top1"] for r in runs]
    epoch_s = [r["epoch_s"] for r in runs if r["epoch_s"] is not None]
    return {"n": len(top1), "top1_mean": statistics.fmean(top1) if top1 else None,
            "top1_sd": statistics.stdev(top1) if len(top1) > 1 else None,
            "top1_min": min(top1) if top1 else None, "top1_max": max(top1) if top1 else None,
            "epoch_s_mean": statistics.fmean(epoch_s) if epoch_s else None}


def _fmt(x: float | None, digits: int = 2, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def render_markdown(results: dict[str, Any]) -> str:
    """The ladder as a Markdown table, ours beside the paper's figure for each rung."""
    lines = [f"# Ablation: {results['ladder']} (preset `{results['preset']}`)", "",
             f"Command: `{results['command']}`", "",
             f"Data: `{results['data_dir']}` ({results['data']['train_images']} train / "
             f"{results['data']['val_images']} val images, {results['data']['classes']} classes); seeds: "
             f"{', '.join(map(str, results['seeds']))}; device: {results['device']}."]
    if results.get("teacher"):
        t = results["teacher"]
        lines.append(f"Distillation teacher: {t['model']} ({t['recipe']}, {t['epochs']} epochs, top-1 "
                     f"{_fmt(t['top1'])}%), `{t['run_dir']}`.")
    lines += ["", "Top-1: validation accuracy after the last epoch (not the best epoch), mean ± sample standard "
              "deviation over the seeds. Δ: gain over the rung this recipe extends (its parent in the ladder). "
              "Time per epoch: training only, mean over epochs and seeds. Paper: He et al. 2019, ResNet-50 on "
              "ImageNet, 120 epochs (200 with mixup).", "",
              "| # | rung | recipe | model | epochs | top-1 % | Δ | time / epoch (s) | paper top-1 % | paper Δ |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results["rungs"], 1):
        s, paper = r["stats"], r["paper"]
        ours = f"{_fmt(s['top1_mean'])} ± {_fmt(s['top1_sd'])}" if s["n"] else "not run"
        paper_txt = f"{paper['top1']:.2f} (Table {paper['table']})" if paper else "—"
        lines.append(f"| {i} | {r['label']} | {r['recipe']} | {r['model']} | {r['epochs']} | {ours} | "
                     f"{_fmt(r['delta'], signed=True)} | {_fmt(s['epoch_s_mean'], 1)} | {paper_txt} | "
                     f"{_fmt(r['paper_delta'], signed=True)} |")
    lines += ["", f"Total training time: {results['train_s'] / 60:.1f} min over {results['runs_done']} runs "
              f"(training epochs only, runs reused from earlier invocations included); this invocation took "
              f"{results['wall_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def render_chart(results: dict[str, Any], path: Path) -> None:
    """Top-1 per rung (bars: mean, whiskers: s.d., dots: seeds) and the gain over the parent rung, ours beside
    the paper's."""
    import matplotlib  # here: the Agg backend is chosen before pyplot loads
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rungs = results["rungs"]
    labels = [r["label"] for r in rungs]
    x = np.arange(len(rungs))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8.0, 1.3 * len(rungs)), 9.0))
    means = [r["stats"]["top1_mean"] or 0.0 for r in rungs]
    sds = [r["stats"]["top1_sd"] or 0.0 for r in rungs]
    bars = ax1.bar(x, means, yerr=sds, capsize=4, color="tab:blue", alpha=0.8, label="mean ± s.d.")
    ax1.bar_label(bars, labels=[f"{m:.2f}" if r["stats"]["n"] else "" for m, r in zip(means, rungs)],
                  padding=3, fontsize=8)
    for i, r in enumerate(rungs):
        seeds = [run["top1"] for run in r["runs"]]
        ax1.plot([i] * len(seeds), seeds, "k.", ms=6, label="seeds" if i == 0 else None)
    done = [m for m, r in zip(means, rungs) if r["stats"]["n"]]
    if done:
        lo, hi = min(done) - 2 * max(sds + [1.0]), max(done) + 2 * max(sds + [1.0])
        ax1.set_ylim(max(0.0, lo), min(100.0, hi))
    ax1.set(ylabel="top-1 (%)", title=f"ours: {results['preset']} preset, {len(results['seeds'])} seed(s)")
    ax1.set_xticks(x, labels, rotation=30, ha="right")
    ax1.legend(loc="upper left", framealpha=0.9)
    width = 0.38
    ours = [r["delta"] if r["delta"] is not None else 0.0 for r in rungs]
    paper = [r["paper_delta"] if r["paper_delta"] is not None else 0.0 for r in rungs]
    ax2.bar(x - width / 2, ours, width, label="ours", color="tab:blue")
    ax2.bar(x + width / 2, paper, width, label="paper (ImageNet)", color="tab:gray")
    ax2.axhline(0, color="k", lw=0.8)
    ax2.set(ylabel="top-1 gain over parent rung (points)", title="gain of each trick")
    ax2.set_xticks(x, labels, rotation=30, ha="right")
    ax2.legend()
    d = results["data"]
    fig.suptitle(f"He et al. 2019 ladder '{results['ladder']}', preset '{results['preset']}': "
                 f"{d['train_images']:,} training images, {d['classes']} classes")
    fig.tight_layout()
    atomic_write_png(path, fig)
    plt.close(fig)


def _count_images(data_dir: Path, split: str, dataset: str | None = None) -> tuple[int, int]:
    """(images, classes) of a split, listed as the training run lists them (:func:`~.data.open_split`: a folder
    or ``.tar`` split, ``torch/NAME``, ``hfds/NAME``; a stream is refused there)."""
    source = open_split(dataset, data_dir, split)
    return len(source), len(source.classes)


# ---------------------------------------------------------------------------------------------------------
# the ablation
def run_ablation(refs: Sequence[str], *, data_dir: str | Path, output: str | Path, preset: str = "none",
                 seeds: int = 2, extra: Sequence[str] = (), teacher: str | None = None, device: str | None = None,
                 progress: bool = True, ladder_name: str | None = None, command: str | None = None,
                 results_dir: str | Path | None = None, scan: bool = True, rescan: bool = False,
                 only_finished: bool = False) -> dict[str, Any]:
    """Train every rung of ``refs`` for ``seeds`` seeds (0 .. seeds-1) into ``output``; write results.json,
    results.md and results.png into ``results_dir`` (default ``output``) after every run; return the results.
    The first run trained scans the images (``scan``; ``rescan``: every file decoded again, see :mod:`.scan`),
    the later ones trust it. ``only_finished`` trains nothing: the results of the runs that have finished (those
    of a launched ablation, :mod:`.launch`)."""
    if preset not in PRESETS:
        raise TimmTricksError(f"--preset {preset}: unknown; presets: {', '.join(PRESETS)}")
    if seeds < 1:
        raise TimmTricksError(f"--seeds {seeds}: give at least 1")
    p = PRESETS[preset]
    out, data_dir = Path(output), Path(data_dir)
    if not data_dir.is_dir():
        raise TimmTricksError(f"--data-dir {data_dir}: not a folder (an ImageFolder tree with train/ and val/ or test/)")
    out.mkdir(parents=True, exist_ok=True)
    res = Path(results_dir) if results_dir else out
    seed_list = list(range(seeds))
    published = [resolve(r) for r in refs]
    needs_teacher = any("distillation" in r.tricks for r in published)
    started = time.perf_counter()
    teacher_info: dict[str, Any] | None = None
    scanned = not scan
    probe = plan_ladder(refs[:1], p, seed_list[:1], extra)[0].recipes[0]  # for the data splits
    dataset = probe.data.dataset or None  # --set data.dataset=SPEC: any source read by index
    train_images, classes = _count_images(data_dir, probe.data.train_split, dataset)
    val_images, _ = _count_images(data_dir, probe.data.val_split, dataset)

    # the teacher: trained once by the preset (or given), before any rung that distils
    if only_finished and needs_teacher and teacher is None and p.teacher is not None and \
            finished_run(out / "teacher", preset_teacher(p, extra).sha256) is None:
        needs_teacher = False  # a launched ablation whose teacher has not finished: nor have its students
    if needs_teacher and teacher is None and p.teacher is not None:
        t_ref, t_sets = p.teacher
        t_overrides = [*t_sets(resolve(t_ref)), *extra]
        t_recipe = resolve(t_ref, t_overrides)
        t_dir = finished_run(out / "teacher", t_recipe.sha256)
        if t_dir is None:
            tqdm.write(f"ablate: training the distillation teacher first ({t_recipe.model.name}, "
                       f"{t_recipe.train.epochs} epochs of {t_ref}) into {out / 'teacher'}")
            t_dir = train(t_recipe, data_dir=str(data_dir), output=out / "teacher", device=device, progress=progress,
                          scan_data=not scanned, rescan=rescan and not scanned)
            scanned = True
        else:
            tqdm.write(f"ablate: reusing the teacher trained before in {t_dir}")
        teacher = str(t_dir)
        t_run = read_run(t_dir)
        teacher_info = {"recipe": f"{t_recipe.name}@{t_recipe.version}",
                        "overrides": t_overrides, **t_run, "sha256": t_recipe.sha256}

    rungs = plan_ladder(refs, p, seed_list, extra, teacher=teacher if needs_teacher else None)
    results: dict[str, Any] = {
        "ladder": ladder_name or ",".join(refs), "recipes": list(refs), "preset": p.name, "preset_doc": p.doc,
        "seeds": seed_list, "command": command or "", "data_dir": str(data_dir), "device": device or "auto",
        "data": {"train_images": train_images, "val_images": val_images, "classes": classes},
        "extra_overrides": list(extra), "teacher": teacher_info, "rungs": [], "runs_done": 0, "train_s": 0.0,
        "wall_s": 0.0,
    }
    runs: dict[str, list[dict[str, Any]]] = {r.name: [] for r in rungs}
    total = len(rungs) * len(seed_list)
    bar = tqdm(total=total, desc="ablate", disable=not progress, position=0, dynamic_ncols=True)

    def write() -> None:
        results["rungs"] = _summarise(rungs, runs)
        results["runs_done"] = sum(len(v) for v in runs.values())
        results["train_s"] = sum(run["train_s"] for v in runs.values() for run in v)
        results["wall_s"] = time.perf_counter() - started
        atomic_write_text(res / "results.json", json.dumps(results, indent=2, allow_nan=False) + "\n")
        atomic_write_text(res / "results.md", render_markdown(results))
        render_chart(results, res / "results.png")

    done = 0
    for i, rung in enumerate(rungs, 1):
        for seed in seed_list:
            done += 1
            recipe = rung.recipes[seed]
            folder = out / "runs" / f"{i:02d}-{rung.name}" / f"seed{seed}"
            run_dir = finished_run(folder, recipe.sha256)
            if run_dir is None and only_finished:
                bar.update(1)
                continue
            if run_dir is None:
                tqdm.write(f"ablate [{done}/{total}] {rung.label}: {recipe.name}, seed {seed}, "
                           f"{recipe.model.name}, {recipe.train.epochs} epoch(s)")
                run_dir = train(recipe, data_dir=str(data_dir), output=folder, device=device, progress=progress,
                                scan_data=not scanned, rescan=rescan and not scanned)  # every image decodes: checked once, by the first run
                scanned = True
            else:
                tqdm.write(f"ablate [{done}/{total}] {rung.label}, seed {seed}: reusing {run_dir}")
            runs[rung.name].append({"seed": seed, **read_run(run_dir)})
            write()
            bar.update(1)
    bar.close()
    write()
    tqdm.write(f"ablate: wrote {res / 'results.md'}, {res / 'results.json'} and {res / 'results.png'}")
    return results


def _summarise(rungs: Sequence[Rung], runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    for rung in rungs:
        recipe = next(iter(rung.recipes.values()))
        stats = rung_stats(runs[rung.name])
        entry = {"recipe": f"{recipe.name}@{recipe.version}", "name": recipe.name, "label": rung.label,
                 "parent": rung.parent, "model": recipe.model.name,
                 "epochs": recipe.train.epochs, "global_batch_size": recipe.train.global_batch_size,
                 "lr": recipe.lr, "overrides": rung.overrides, "sha256": {str(s): r.sha256 for s, r in rung.recipes.items()},
                 "paper": rung.paper, "stats": stats,
                 "runs": runs[rung.name], "delta": None, "paper_delta": None}
        parent = by_name.get(rung.parent) if rung.parent else None
        if parent is not None:
            if stats["top1_mean"] is not None and parent["stats"]["top1_mean"] is not None:
                entry["delta"] = stats["top1_mean"] - parent["stats"]["top1_mean"]
            if entry["paper"] and parent["paper"]:
                entry["paper_delta"] = entry["paper"]["top1"] - parent["paper"]["top1"]
        by_name[recipe.name] = entry
        out.append(entry)
    return out


def preset_teacher(preset: Preset, extra: Sequence[str] = ()) -> Recipe:
    """The recipe of the teacher a preset trains (``preset.teacher`` set), with the command line's overrides."""
    t_ref, t_sets = preset.teacher
    return resolve(t_ref, [*t_sets(resolve(t_ref)), *extra])
