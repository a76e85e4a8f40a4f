"""Decoded and augmented images/s from a JPEG ImageFolder: our training data pipeline against timm's
``create_loader`` with the same settings.

Arms, each a fresh ``DataLoader`` iterator per round taking ``--batches`` batches (worker start-up included,
the same for all), in alternating order:

* ``ours``: what ``train.py`` builds: the ImageFolder data set (not scanned: the scan is a one-off before
  training), ``build_train_transform`` of the recipe's augmentation tricks (the paper's: inception crop, flip,
  colour jitter 0.4, PCA lighting 0.1), per-sample seeding (``SeededDataset`` + ``ResumableSampler``) and
  ``torch.utils.data.DataLoader``;
* ``ours_no_pca``: the same without ``pca_lighting``, which timm cannot express: the like-for-like arm;
* ``timm``: ``timm.data.create_loader`` with the ``create_transform`` arguments our tricks produce (crop
  scale and ratio, flip, jitter), the recipe's interpolation, mean and std, timm's prefetcher as timm's
  ``train.py`` uses it by default (normalisation in the main process; ``--timm-prefetcher off`` to drop it).

There are no model FLOPs here, so no GFLOP/s.

    python -m benchmarks.loader --data-dir /path/to/cifar10                    # 32 px, 2 workers
    python -m benchmarks.loader --data-dir /path/to/cifar10 --input-size 224   # ImageNet-sized output
"""
from __future__ import annotations

import time
from typing import Any

import torch

from .common import base_parser, cifar_dir, interleaved, ratio_summary, setup, throughput, write_result

NAME = "loader"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="ImageFolder root or the CIFAR-10 archive (default: ../shared/data's archive)")
    p.add_argument("--recipe", default="resnet50d_efficient", help="whose augmentation (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--input-size", type=int, default=32, help="default: %(default)s px")
    p.add_argument("--batch", type=int, default=128, help="default: %(default)s")
    p.add_argument("--workers", type=int, default=2, help="default: %(default)s")
    p.add_argument("--batches", type=int, default=20, help="batches per arm per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="default: %(default)s")
    p.add_argument("--timm-prefetcher", choices=["on", "off"], default="on")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    started = time.perf_counter()
    dev = setup(args)

    from timm.data import ImageDataset, create_loader
    from torch.utils.data import DataLoader

    from tricks_registry.data import ResumableSampler, SeededDataset, find_split, image_folder_datasets
    from tricks_registry.parts import compose, parts_from_config
    from tricks_registry.recipe import resolve
    from tricks_registry.tricks.augmentations import build_train_transform, merge_timm_kwargs as _merge_timm_kwargs

    root = cifar_dir(args.data_dir)
    recipe = resolve(args.recipe, [*args.overrides, f"data.input_size={args.input_size}"])
    d = recipe.data
    pipeline = compose(parts_from_config(recipe.tricks))

    def our_loader(sample_transforms: Any) -> DataLoader:
        """train.py's training loader (data set, transform, per-sample seeding, sampler, DataLoader)."""
        train_set, _val, _bad = image_folder_datasets(root, d.train_split, d.val_split, d.subset_per_class,
                                                      scan=False, progress=False)
        train_set.transform = build_train_transform(sample_transforms, input_size=d.input_size, mean=d.mean,
                                                    std=d.std, interpolation=d.interpolation)
        sampler = ResumableSampler(train_set, num_replicas=1, rank=0, seed=args.seed)
        return DataLoader(SeededDataset(train_set), batch_size=args.batch, sampler=sampler, drop_last=True,
                          generator=torch.Generator().manual_seed(args.seed), num_workers=args.workers,
                          pin_memory=dev.type == "cuda", persistent_workers=False)

    no_pca = [s for s in pipeline.sample_transforms if s.trick != "pca_lighting"]
    timm_kwargs = _merge_timm_kwargs(no_pca)
    timm_set = ImageDataset(str(find_split(root, d.train_split)))
    timm_loader = create_loader(
        timm_set, input_size=(3, d.input_size, d.input_size), batch_size=args.batch, is_training=True,
        interpolation=d.interpolation, mean=tuple(d.mean), std=tuple(d.std), num_workers=args.workers,
        device=dev, use_prefetcher=args.timm_prefetcher == "on", pin_memory=dev.type == "cuda",
        persistent_workers=False, **timm_kwargs)
    loaders = {"ours": our_loader(pipeline.sample_transforms), "ours_no_pca": our_loader(no_pca),
               "timm": timm_loader}

    def arm(loader: Any):
        def go() -> float:
            start = time.perf_counter()
            it = iter(loader)
            for _ in range(args.batches):
                images, _labels = next(it)
            if images.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            del it  # shut the workers down before the next arm runs
            return elapsed
        return go

    seconds = interleaved({k: arm(v) for k, v in loaders.items()}, args.rounds, progress=not args.no_progress,
                          desc="loader rounds")
    n = args.batch * args.batches
    payload = {
        "what": "decoded + augmented training images per second from a JPEG ImageFolder",
        "config": {"data_dir": str(args.data_dir or "CIFAR-10 archive"), "recipe": f"{recipe.name}@{recipe.version}",
                   "input_size": args.input_size, "batch": args.batch, "workers": args.workers,
                   "batches_per_round": args.batches, "rounds": args.rounds,
                   "timm_prefetcher": args.timm_prefetcher, "timm_create_loader_kwargs": timm_kwargs},
        "transforms": {"ours": repr(loaders["ours"].dataset.dataset.transform),
                       "ours_no_pca": repr(loaders["ours_no_pca"].dataset.dataset.transform),
                       "timm": repr(timm_set.transform)},
        **{k: throughput([n / s for s in v], None) for k, v in seconds.items()},
        "seconds_per_round": seconds,
        "throughput_ratio_ours_no_pca_over_timm": ratio_summary(seconds["timm"], seconds["ours_no_pca"]),
        "throughput_ratio_ours_over_timm": ratio_summary(seconds["timm"], seconds["ours"]),
        "gflops": "not applicable: data loading runs no model",
    }
    write_result(NAME, payload, args.out, device=dev, started=started)
    for k in ("ours", "ours_no_pca"):
        r = payload[f"throughput_ratio_{k}_over_timm"]
        print(f"{k}/timm images/s: median {r['median']:.3f} (min {r['min']:.3f}, max {r['max']:.3f})")
    return payload


if __name__ == "__main__":
    run()
