"""``tricks-train`` against timm's own ``train.py``: training images/s on the same data with the same recipe.
Target: at least as fast.

timm's ``train.py`` is not in timm's wheel: give the path of a copy (``--timm-train-py``, e.g. from a
checkout of huggingface/pytorch-image-models at the commit ``tricks_registry.export_timm.TIMM_TRAIN_PY_REF``
names). The recipe goes to it through ``tricks recipe export --format timm-args`` (``-c FILE``); both trainers
get the same ImageFolder subset (symlinks to the first ``--per-class`` images of each class), the same
batch, input size, workers, epochs and class count (timm's ``--num-classes``, which the export cannot know).
On CPU, timm gets ``--amp-dtype bfloat16`` (our bf16 on CPU; timm's default AMP dtype is float16).

Rates are each trainer's own per-epoch figure, both counted from the start of the epoch's first data fetch
to its last update: ours ``images_per_s`` in ``metrics.csv``, timm's average ``/s`` on the epoch's last
``Train:`` log line. The first epoch is not counted (worker start-up, compilation). The trainers alternate
(ours, timm, timm, ours ...) for ``--repeats`` pairs; the result is the per-pair ratio ours/timm.

    python -m benchmarks.vs_timm --timm-train-py ~/pytorch-image-models/train.py --data-dir /path/to/cifar10
"""
from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tricks_registry.run_folder import RunFolder

from .common import base_parser, cifar_dir, peak_for, ratio_summary, run_logged, setup, subset_folder, summary, \
    throughput, train_flops_per_image, write_result

NAME = "vs_timm"

#: the epoch's last ``Train:`` line of timm's train.py: epoch, then the running-average seconds and images/s
TIMM_EPOCH_LINE = re.compile(
    r"Train: (?P<epoch>\d+) \[\s*(?P<step>\d+)/(?P<steps>\d+) \(100%\)\].*?Time: [\d.]+s,\s*[\d.]+/s\s+"
    r"\(\s*(?P<avg_s>[\d.]+)s,\s*(?P<rate>[\d.]+)/s\)")


def timm_epoch_rates(log_text: str) -> dict[int, float]:
    """``{epoch: images/s}`` from timm train.py's log (the average rate on each epoch's last step)."""
    return {int(m["epoch"]): float(m["rate"]) for m in TIMM_EPOCH_LINE.finditer(log_text)}


def ours_epoch_rates(run_dir: Path) -> dict[int, float]:
    """``{epoch (0-based, as timm counts): images/s}`` from a tricks-train run folder's metrics.csv."""
    return {r["epoch"] - 1: r["images_per_s"] for r in RunFolder(run_dir).metrics()}


def _timed_mean(rates: dict[int, float], what: str) -> float:
    timed = [v for e, v in sorted(rates.items()) if e >= 1] or list(rates.values())
    if not timed:
        raise SystemExit(f"{what}: no per-epoch rate found (see the log)")
    return sum(timed) / len(timed)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--timm-train-py", required=True, help="path to a copy of timm's train.py")
    p.add_argument("--recipe", default="resnet50d_mixup", help="default: %(default)s")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", help="ImageFolder root or the CIFAR-10 archive (default: ../shared/data's archive)")
    p.add_argument("--per-class", type=int, default=100, help="training images per class (default: %(default)s)")
    p.add_argument("--val-per-class", type=int, default=20, help="default: %(default)s")
    p.add_argument("--input-size", type=int, default=32, help="default: %(default)s px")
    p.add_argument("--batch", type=int, default=64, help="default: %(default)s")
    p.add_argument("--epochs", type=int, default=3, help="the first is not timed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="default: %(default)s")
    p.add_argument("--repeats", type=int, default=2, help="pairs of runs (default: %(default)s)")
    p.add_argument("--timm-arg", action="append", default=[], metavar="ARG",
                   help="an extra argument for timm's train.py (repeatable), e.g. --timm-arg=--no-prefetcher")
    p.add_argument("--keep", help="keep the runs and logs in this folder (default: a temporary folder)")
    p.add_argument("--no-peak", action="store_true")
    args = p.parse_args(argv)
    started = time.perf_counter()
    dev = setup(args)
    timm_py = Path(args.timm_train_py).expanduser().resolve()
    if not timm_py.is_file():
        raise SystemExit(f"--timm-train-py {timm_py}: no such file (clone huggingface/pytorch-image-models)")

    from tricks_registry.models import build_model
    from tricks_registry.export.timm_args import TIMM_TRAIN_PY_REF, export_timm_args
    from tricks_registry.recipe import resolve

    base = resolve(args.recipe, args.overrides).tricks
    sets = [*args.overrides, f"data.input_size={args.input_size}", "data.eval_crop_pct=1.0",
            f"data.workers={args.workers}", "data.train_split=train", "data.val_split=val",
            f"train.global_batch_size={args.batch}", f"train.epochs={args.epochs}", "train.log_every=1000"]
    if "linear_warmup" in base:
        sets.append("tricks.linear_warmup.epochs=1")
    if "multistep" in base:
        sets.append(f"tricks.multistep.milestones=[{args.epochs}]")
    recipe = resolve(args.recipe, sets)
    amp = "amp" in recipe.tricks

    tmp_ctx = tempfile.TemporaryDirectory(prefix="vs_timm-")
    work = Path(args.keep) if args.keep else Path(tmp_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    data = subset_folder(cifar_dir(args.data_dir), work / "data", {"train": args.per_class, "val": args.val_per_class})
    num_classes = len([c for c in (data / "train").iterdir() if c.is_dir()])
    config = work / "timm_args.yaml"
    config.write_text(export_timm_args(recipe, world_size=1))
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}

    def ours(i: int) -> tuple[float, float]:
        out = work / f"ours-{i}"
        cmd = [sys.executable, "-m", "tricks_registry.cli", "train", "--recipe", args.recipe, "--data-dir", str(data),
               "--output", str(out), "--device", args.device, "--no-progress", *[f"--set={s}" for s in sets]]
        wall = run_logged(cmd, work / f"ours-{i}.log", env=env)
        run_dir = next(d for d in out.iterdir() if RunFolder(d).metrics())
        return _timed_mean(ours_epoch_rates(run_dir), f"ours run {i}"), wall

    def timm(i: int) -> tuple[float, float]:
        cmd = [sys.executable, str(timm_py), "-c", str(config), "--data-dir", str(data), "--device", args.device,
               "--num-classes", str(num_classes), "--output", str(work / f"timm-{i}"), "--experiment", "run",
               "--log-interval", "1000",
               *(["--amp-dtype", "bfloat16"] if amp and dev.type == "cpu" else []), *args.timm_arg]
        log = work / f"timm-{i}.log"
        wall = run_logged(cmd, log, env=env, cwd=timm_py.parent)
        return _timed_mean(timm_epoch_rates(log.read_text(errors="replace")), f"timm run {i} ({log})"), wall

    rates: dict[str, list[float]] = {"ours": [], "timm": []}
    walls: dict[str, list[float]] = {"ours": [], "timm": []}
    for i in range(args.repeats):
        for name, fn in ((("ours", ours), ("timm", timm)) if i % 2 == 0 else (("timm", timm), ("ours", ours))):
            print(f"pair {i + 1}/{args.repeats}: {name} ...", flush=True)
            rate, wall = fn(i)
            rates[name].append(rate)
            walls[name].append(wall)

    per_image = train_flops_per_image(build_model(recipe.mapping["model"], num_classes), args.input_size)["train_step"]
    peak = peak_for(dev, torch.bfloat16 if amp and dev.type == "cpu" else
                    (torch.float16 if amp else torch.float32), measure_cpu=not args.no_peak)
    ratio = ratio_summary(rates["ours"], rates["timm"])
    payload = {
        "what": "training images/s of tricks-train against timm's train.py, same recipe (exported), data and settings",
        "config": {"recipe": f"{recipe.name}@{recipe.version}", "recipe_sha256": recipe.sha256, "overrides": sets,
                   "timm_train_py": str(timm_py), "export_written_for": TIMM_TRAIN_PY_REF,
                   "timm_extra_args": args.timm_arg, "per_class": args.per_class, "input_size": args.input_size,
                   "batch": args.batch, "epochs": args.epochs, "workers": args.workers, "repeats": args.repeats},
        "timm_args_file": config.read_text(),
        "ours": {**throughput(rates["ours"], per_image, peak), "process_wall_s": summary(walls["ours"])},
        "timm": {**throughput(rates["timm"], per_image, peak), "process_wall_s": summary(walls["timm"])},
        "images_per_s_ratio_ours_over_timm": ratio,
        "target": {"min_ratio": 1.0, "met": ratio["median"] >= 1.0},
    }
    write_result(NAME, payload, args.out, device=dev, started=started)
    tmp_ctx.cleanup()
    print(f"images/s ours/timm: median {ratio['median']:.3f} (min {ratio['min']:.3f}, max {ratio['max']:.3f}); "
          f"target >= 1: {'met' if payload['target']['met'] else 'NOT met'}")
    return payload


if __name__ == "__main__":
    run()
