"""``tricks validate`` (score a model on a labelled ImageFolder) and ``tricks predict`` (classify images); with
``--demo``, a ``tricks-train --demo`` run on the validation digits it was scored on.

The logic is :mod:`tricks_registry.inference`; it (with torch and timm) is imported inside the commands so that
``tricks --help`` stays quick.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_commands", "cmd_validate", "cmd_predict", "DEMO_COUNT"]

#: ``tricks predict RUN --demo``: how many digits without ``--count``
DEMO_COUNT = 10

MODEL_HELP = ("any weights spec: a run folder, ARCH@FILE.safetensors, hf-hub:org/name[@rev], local-dir:DIR (an "
              "export) or a timm tag (resnet50_v1d.gluon_in1k)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--img-size", type=int, metavar="N", help="input side in pixels (default: the model's config "
                   "or, for a run folder, its recipe)")
    p.add_argument("--crop-pct", type=float, metavar="P", help="centre-crop fraction (default: as --img-size)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="default: %(default)s")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), metavar="W",
                   help="data-loading processes (default: %(default)s)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also read pickle weights (.pth/.bin); unpickling can run code: only files you trust")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("validate", help="top-1, top-5, loss, per-class accuracy and a confusion matrix of a model "
                                        "on a labelled ImageFolder, preprocessed as timm's validate.py does")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data-dir", metavar="DIR", help="an ImageFolder tree (DIR/<split>/<class>/*.jpg)")
    data.add_argument("--demo", action="store_true", help="a tricks-train --demo run folder: score it on the demo's "
                                                          "validation digits it was scored on (no data needed)")
    p.add_argument("--split", default="val", help="the split folder (default: %(default)s; also validation, test)")
    p.add_argument("--dataset", metavar="SPEC", help="a source read by index, as tricks-train --dataset: the split's "
                                                     "folder or .tar (default), torch/NAME, hfds/NAME")
    p.add_argument("--use-ema", action="store_true", help="a run folder's EMA weights (checkpoints/best_ema)")
    p.add_argument("--output", metavar="DIR", help="write metrics.json, per_class.csv, confusion_matrix.csv and "
                                                   "confusion_matrix.png into DIR")
    _common(p)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("predict", help="the top-k classes of images (files or folders), as timm's inference.py")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    inputs = p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders (none with "
                                                                              "--demo)")
    inputs.required = False  # for --demo; nargs="+" (not "*") still lets options come between MODEL and the files
    p.add_argument("--demo", action="store_true", help="a tricks-train --demo run folder: label the first --count "
                                                       "of the validation digits it was scored on (no files needed)")
    p.add_argument("--count", type=int, metavar="N", help=f"with --demo: how many digits (default: {DEMO_COUNT})")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default: %(default)s)")
    p.add_argument("--output", metavar="FILE", help="write the predictions to FILE.csv or FILE.json")
    _common(p)
    p.set_defaults(func=cmd_predict)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..errors import TimmTricksError
    from ..inference import validate, write_validation

    if args.demo and (args.dataset or args.split != "val"):
        raise TimmTricksError("--demo scores a run on the demo's validation digits; drop --dataset / --split")
    result = validate(args.model, args.data_dir, split=args.split, dataset=args.dataset, demo=args.demo,
                      use_ema=args.use_ema, crop_pct=args.crop_pct,
                      img_size=args.img_size, batch_size=args.batch_size, workers=args.workers, device=args.device,
                      trust_pickle=args.trust_pickle, progress=not args.json and sys.stderr.isatty())
    written = write_validation(result, args.output) if args.output else []
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    cfg = result.data_config
    print(f"{result.spec}: {result.weights}")
    print(f"data: {result.data}, {result.num_images} images, {len(result.classes)} classes; "
          f"{cfg['input_size'][1]} px, crop_pct {cfg['crop_pct']}, {cfg['interpolation']}")
    print(f"top-1 {result.top1:.2f}  top-{result.topk} {result.top5:.2f}  loss {result.loss:.4f}")
    width = max(len(c["class"]) for c in result.per_class)
    for c in result.per_class:
        acc = "-" if c["accuracy"] is None else f"{c['accuracy']:6.2f}"
        print(f"  {c['class']:<{width}}  {acc}  ({c['correct']}/{c['images']})")
    if written:
        print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..errors import TimmTricksError
    from ..inference import predict, predict_demo, write_predictions

    if args.demo:
        if args.inputs:
            raise TimmTricksError(f"--demo labels the demo's validation digits; drop the image arguments "
                                  f"({' '.join(args.inputs)}) or --demo")
        result = predict_demo(args.model, count=DEMO_COUNT if args.count is None else args.count, topk=args.topk,
                              batch_size=args.batch_size, workers=args.workers, device=args.device,
                              img_size=args.img_size, crop_pct=args.crop_pct)
    else:
        if args.count is not None:
            raise TimmTricksError("--count is for --demo (how many of the demo's validation digits)")
        if not args.inputs:
            raise TimmTricksError("no images: give image files or folders, or --demo for a tricks-train --demo run")
        result = predict(args.model, args.inputs, topk=args.topk, batch_size=args.batch_size, workers=args.workers,
                         device=args.device, img_size=args.img_size, crop_pct=args.crop_pct,
                         trust_pickle=args.trust_pickle, progress=None if sys.stderr.isatty() else False)
    if args.output:
        write_predictions(result, args.output)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.data is not None:  # the demo digits: no files, so index, true label and the top-k
        print(f"{result.spec}: {result.weights}")
        print(f"data: {result.data}")
        width = max(len("index"), len(str(len(result.predictions) - 1)))
        print(f"{'index':>{width}}  true  top-{result.topk}")
        for i, p in enumerate(result.predictions):
            print(f"{i:>{width}}  {p.target:>4}  " + ", ".join(f"{label} ({prob:.3f})"
                                                             for label, prob in zip(p.label, p.prob)))
        right = sum(p.label[0] == p.target for p in result.predictions)
        print(f"top-1 right on {right} of {len(result.predictions)}")
        if args.output:
            print(f"wrote {args.output}")
    else:
        for p in result.predictions:
            print(p.filename + ": " + ", ".join(f"{label} ({prob:.3f})" for label, prob in zip(p.label, p.prob)))
        if args.output:
            print(f"wrote {args.output}")
    if result.unreadable:
        print(f"{len(result.unreadable)} unreadable file(s):", file=sys.stderr)
        for f, why in result.unreadable:
            print(f"  {f}: {why}", file=sys.stderr)
    return 0
