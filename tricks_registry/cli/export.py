"""``tricks export`` (a Hub-ready folder from a run), ``tricks push`` (upload it) and ``tricks export-transfer``
(a detection / segmentation run as a folder that rebuilds the model)."""
from __future__ import annotations

import argparse
import json
from typing import Any

# The exporters (torch, timm, the Hub client) are imported inside the commands: building the parser imports none.

#: ``--weights`` choices, as :data:`tricks_registry.export.hub.WEIGHT_CHOICES` names them (a test compares)
WEIGHTS = ("best", "last", "ema_best", "ema_last")

__all__ = ["add_commands", "cmd_export", "cmd_push", "cmd_export_transfer"]


def add_commands(sub: Any) -> None:
    p = sub.add_parser("export", help="a Hub-ready folder from a run: weights, timm config, model card, recipe")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (new, or empty)")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="the repo it will go to (for the card's usage lines)")
    p.add_argument("--license", default="apache-2.0", help="license of the weights (default: %(default)s)")
    p.add_argument("--dataset", metavar="HUB_ID",
                   help="Hub dataset id for the card (default: imagenet-1k for 1000 classes, mnist for --demo runs, "
                        "else imagefolder)")
    p.add_argument("--dataset-name", help="the data set's name in the card's model-index")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--weights", choices=WEIGHTS, help="which weights (default: the better-scoring of "
                   "raw best and EMA best by top-1 when the run kept EMA weights, else best, else last)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("push", help="upload an exported folder to the Hugging Face Hub")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if new)")
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("export-transfer", help="a detection/segmentation run as a folder that rebuilds the model "
                                               "(weights, config, card)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.set_defaults(func=cmd_export_transfer)


def cmd_export(args: argparse.Namespace) -> int:
    from ..export.hub import export_run

    out = export_run(args.run_dir, args.out, repo_id=args.repo_id, license=args.license, dataset=args.dataset,
                     dataset_name=args.dataset_name, overwrite=args.overwrite, weights=args.weights)
    results = json.loads((out / "results.json").read_text())
    plugin = f"; loading needs `import {results['needs_plugin']}`" if results["needs_plugin"] else ""
    w = results["weights"]
    top1 = "not recorded" if results["top1"] is None else f"{results['top1']:.2f}"
    print(f"exported {args.run_dir} to {out}: timm {results['architecture']}, {w['checkpoint']} weights of epoch "
          f"{w['epoch']}, top-1 {top1}{plugin}" + (f" ({w['chosen']})" if w.get("chosen") else ""))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ..export.hub import push_folder

    info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"pushed {args.folder} to {args.repo_id}" + (f"@{args.revision}" if args.revision else "")
          + f": {getattr(info, 'commit_url', info)}")
    return 0


def cmd_export_transfer(args: argparse.Namespace) -> int:
    from ..export.transfer import export_transfer

    out = export_transfer(args.run_dir, args.out_dir)
    print(f"wrote {out} (model.safetensors, config.json, README.md)")
    return 0
