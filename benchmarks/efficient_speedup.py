"""Epoch time of ``resnet50d_efficient`` against fp32 training of the same model on the same data (paper
section 3.2, Table 3: efficient training is about 3x faster per epoch on V100s).

The two arms are one recipe, ``resnet50d_efficient``, run two ways:

* **fp32** (the baseline's precision): ``--set tricks.amp=null``, NCHW memory;
* **efficient**: its mixed precision (bf16 autocast on CPU, fp16 + loss scaling on CUDA), plus
  ``channels_last``, plus ``compile`` on CUDA (``--compile``).

Same batch (``--batch``), input size and data for both, so the ratio is the runtime's alone. Three
measurements, each a ratio fp32 time / efficient time:

1. ``raw``: the hand-written loop of :mod:`benchmarks.steps` (plain timm + torch) on an in-memory batch, the
   reference (ResNet-50-D at 128 px on a 2-core EPYC: about 2.1x);
2. ``ours_step``: our step (built as ``train.py`` builds it) on the same in-memory batch;
3. ``ours_epoch``: ``tricks_registry.train.train`` on an ImageFolder, the epoch time of every epoch after
   the first (the first pays for worker start-up and compilation), ``--repeats`` runs of each arm in turn.

``kept`` = ours / raw: how much of the raw speed-up our trainer keeps (target: all of it).

    python -m benchmarks.efficient_speedup --data-dir /path/to/cifar10         # CPU, 128 px, ~5 min on 2 cores
    python -m benchmarks.efficient_speedup --device cuda --data-dir synthetic --batch 256 --input-size 224 \\
        --subset-per-class 512 --epochs 3 --workers 12 --rounds 10 --steps 10
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .common import add_ab_args, base_parser, data_root, peak_for, ratio_summary, setup, step_rounds, summary, \
    throughput, train_flops_per_image, write_result
from .steps import OurStep, PlainStep, step_source, synthetic_batch

NAME = "efficient_speedup"


def arm_overrides(arm: str, device: torch.device, compile_model: bool) -> list[str]:
    """The --set list that makes the fp32 or the efficient arm out of ``resnet50d_efficient``."""
    if arm == "fp32":
        return ["tricks.amp=null"]
    return ["tricks.channels_last={}"] + (["tricks.compile={}"] if compile_model else [])


def _step_rounds(kind: str, recipes: dict[str, Any], args: Any, dev: torch.device) -> dict[str, list[float]]:
    images, labels = synthetic_batch(args.batch, args.input_size, 10, dev, seed=args.seed)
    runners = {arm: OurStep.build(recipe, 10, dev) if kind == "ours" else PlainStep(recipe, 10, dev)
               for arm, recipe in recipes.items()}
    seconds = step_rounds(runners, images, labels, args, dev, f"{kind} step rounds")
    del runners
    return seconds


def _epoch_runs(recipes: dict[str, Any], args: Any, data_dir: Path, out: Path) -> dict[str, Any]:
    from tricks_registry.run_folder import RunFolder
    from tricks_registry.train import train

    epoch_s: dict[str, list[float]] = {a: [] for a in recipes}
    runs: dict[str, list[str]] = {a: [] for a in recipes}
    arms = list(recipes)
    for r in range(args.repeats):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            run_dir = train(recipes[arm], data_dir=str(data_dir), output=out / arm, device=args.device,
                            progress=not args.no_progress)
            rows = RunFolder(run_dir).metrics()
            timed = rows[1:] if len(rows) > 1 else rows
            epoch_s[arm].append(sum(row["epoch_s"] for row in timed) / len(timed))
            runs[arm].append(str(run_dir))
    return {"epoch_s": epoch_s, "run_dirs": runs}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="resnet50d_efficient", help="default: %(default)s")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for both arms (repeatable)")
    p.add_argument("--data-dir", help="ImageFolder root, the CIFAR-10 archive, or 'synthetic' (default: the "
                                      "archive at ../shared/data)")
    p.add_argument("--batch", type=int, default=32, help="default: %(default)s")
    p.add_argument("--input-size", type=int, default=128, help="default: %(default)s px")
    p.add_argument("--subset-per-class", type=int, default=32,
                   help="images per class for the epoch runs, both splits (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is not timed (default: 2)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each arm for the epoch time (default: 1)")
    p.add_argument("--workers", type=int, default=1, help="data-loader workers (default: %(default)s)")
    add_ab_args(p, rounds=4, steps=2, warmup=2)
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile in the efficient arm (auto: on CUDA only)")
    p.add_argument("--skip", action="append", default=[], choices=["raw", "ours_step", "ours_epoch"],
                   help="leave out a measurement (repeatable)")
    p.add_argument("--keep-runs", help="keep the epoch runs' folders here (default: a temporary folder)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    dev = setup(args)
    compile_model = args.compile == "on" or (args.compile == "auto" and dev.type == "cuda")

    from tricks_registry.models import build_model
    from tricks_registry.parts import compose, parts_from_config
    from tricks_registry.recipe import resolve
    from tricks_registry.tricks.efficiency import amp_dtype

    common_sets = [*args.overrides, f"data.input_size={args.input_size}", "data.eval_crop_pct=1.0",
                   f"data.workers={args.workers}", f"data.subset_per_class={args.subset_per_class}",
                   f"train.global_batch_size={args.batch}", f"train.epochs={args.epochs}",
                   "tricks.linear_warmup=null"]
    if "multistep" in resolve(args.recipe, args.overrides).tricks:  # no LR drop inside the short run
        common_sets.append(f"tricks.multistep.milestones=[{args.epochs + 1}]")
    recipes = {arm: resolve(args.recipe, common_sets + arm_overrides(arm, dev, compile_model))
               for arm in ("fp32", "efficient")}
    eff_dtype = amp_dtype(compose(parts_from_config(recipes["efficient"].tricks)).runtime, dev)
    if eff_dtype is None:
        raise SystemExit(f"{args.recipe} has no amp trick: nothing to compare with fp32")
    per_image = train_flops_per_image(build_model(recipes["fp32"].mapping["model"], 10), args.input_size)["train_step"]
    peaks = {"fp32": peak_for(dev, torch.float32, measure_cpu=not args.no_peak),
             "efficient": peak_for(dev, eff_dtype, measure_cpu=not args.no_peak)}
    n = args.batch * args.steps
    results: dict[str, Any] = {}

    for kind, label in (("plain", "raw"), ("ours", "ours_step")):
        if label in args.skip:
            continue
        seconds = _step_rounds(kind, recipes, args, dev)
        results[label] = {
            "fp32": throughput([n / s for s in seconds["fp32"]], per_image, peaks["fp32"]),
            "efficient": throughput([n / s for s in seconds["efficient"]], per_image, peaks["efficient"]),
            "seconds_per_round": seconds,
            "speedup": ratio_summary(seconds["fp32"], seconds["efficient"]),
        }
    if "ours_epoch" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="efficient_speedup-") as tmp:
            data_dir = data_root(args.data_dir, Path(tmp), per_class=args.subset_per_class)
            out = Path(args.keep_runs) if args.keep_runs else Path(tmp) / "runs"
            epochs = _epoch_runs(recipes, args, data_dir, out)
        results["ours_epoch"] = {
            "fp32": {"epoch_s": summary(epochs["epoch_s"]["fp32"])},
            "efficient": {"epoch_s": summary(epochs["epoch_s"]["efficient"])},
            "speedup": ratio_summary(epochs["epoch_s"]["fp32"], epochs["epoch_s"]["efficient"]),
            "run_dirs": epochs["run_dirs"] if args.keep_runs else None,
            "data_dir": str(args.data_dir or "CIFAR-10 archive"),
        }
    kept = {}
    if "raw" in results:
        raw = results["raw"]["speedup"]["median"]
        for label in ("ours_step", "ours_epoch"):
            if label in results:
                kept[label] = results[label]["speedup"]["median"] / raw
    payload = {
        "what": "fp32 time / efficient time (mixed precision + channels-last [+ compile]) on the same model and data",
        "config": {"recipe": args.recipe, "overrides": args.overrides, "batch": args.batch,
                   "input_size": args.input_size, "efficient_dtype": str(eff_dtype).replace("torch.", ""),
                   "compile": compile_model, "subset_per_class": args.subset_per_class, "epochs": args.epochs,
                   "repeats": args.repeats, "workers": args.workers, "rounds": args.rounds, "steps": args.steps,
                   "arm_tricks": {arm: sorted(r.tricks) for arm, r in recipes.items()}},
        "step_source": step_source(),
        "reference": {"paper_table3": "about 3x per epoch (ResNet-50, 8 V100, fp16 + batch 1024 vs fp32 + 256)",
                      "raw_timm_resnet50d_128px_2core_cpu": 2.1},
        **results,
        "kept_fraction_of_raw_speedup": kept,
    }
    write_result(NAME, payload, args.out, device=dev, started=started)
    for label in ("raw", "ours_step", "ours_epoch"):
        if label in results:
            s = results[label]["speedup"]
            print(f"{label:>10}: fp32/efficient {s['median']:.2f}x (min {s['min']:.2f}, max {s['max']:.2f})")
    for label, value in kept.items():
        print(f"{label} keeps {100 * value:.0f}% of the raw speed-up")
    return payload


if __name__ == "__main__":
    run()
