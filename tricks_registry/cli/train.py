"""``tricks train`` / ``tricks-train``: train a recipe (classification, or a detection / segmentation recipe of
the paper's section 6), with the Hub options ``--push-to-hub``, ``--private``, ``--revision``, ``--trust-pickle``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from tqdm import tqdm

from ..cache import cache_dir
from ..errors import CheckpointError, HubError, TimmTricksError
from ..export.hub import LOGIN_HINT, export_run, pinned_teacher, push_folder, resolve_recipe_arg
from ..recipe import Recipe, resolve
from ..run_folder import RunFolder, is_run_folder
from ..train import train

__all__ = ["DEFAULT_OUTPUT", "add_commands", "add_train_args", "cmd_train", "check_push_args", "push_after_train"]

DEFAULT_OUTPUT = "runs"


def add_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="train a recipe (the same as tricks-train)")
    add_train_args(p)
    p.set_defaults(func=cmd_train)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="a recipe name (resnet50d_all, resnet50d_all@1) or a YAML path "
                                    "(not needed with --resume: the run folder holds its recipe)")
    p.add_argument("--data-dir", help="ImageFolder tree with train/<class>/ and val/<class>/ (not needed with --demo)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="where run folders go (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=2 --set tricks.mixup.alpha=0.4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--demo", action="store_true",
                   help="train on the embedded MNIST digits (needs the 'demo' extra), scaled down to run on a CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--recovery-interval", type=int, default=0, metavar="STEPS",
                   help="also save a resumable checkpoint every STEPS optimizer steps (default: at the end of each "
                        "epoch only; SIGTERM/SIGINT always save one first)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable images found by the scan (listed in the run folder's bad_images.txt) "
                        "instead of stopping before training")
    p.add_argument("--no-scan", action="store_true",
                   help="do not decode every image before training (a bad image then stops the run when it is read)")
    # the Hub
    p.add_argument("--push-to-hub", metavar="ORG/NAME",
                   help="when training ends, export the run (to RUN_DIR/hub) and push it to this Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--revision", metavar="REV",
                   help="branch, tag or commit of an hf-hub: recipe (--recipe hf-hub:ORG/NAME) and of an hf-hub: "
                        "teacher that names none")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also load a teacher's pickle weights (.pth/.bin/.pt); unpickling can run code: only for "
                        "files you trust (default: safetensors only)")


def cmd_train(args: argparse.Namespace) -> int:
    if not args.resume and not args.recipe:
        raise TimmTricksError("--recipe is required (a name such as resnet50d_all, or a YAML file), or --resume RUN_DIR")
    if args.resume:
        if args.recipe or args.overrides:
            raise TimmTricksError("--resume continues a run with the recipe saved in its folder; drop --recipe and --set")
        if not is_run_folder(args.resume):
            raise CheckpointError(f"--resume {args.resume}: no recipe.yaml there (is it a tricks-train run folder?)")
        recipe = RunFolder(args.resume).recipe()  # its hash checked
        demo = bool(recipe.data.get("demo_run"))
    else:
        recipe = resolve_recipe_arg(args.recipe, args.overrides, demo=args.demo, revision=args.revision)
        demo = args.demo
    if recipe.data.get("task", "classification") != "classification":  # detection / segmentation (section 6)
        if demo or args.push_to_hub:
            raise TimmTricksError(f"--demo / --push-to-hub: not for {recipe.data['task']} recipes (no demo data; export "
                                  "with tricks export-transfer RUN_DIR OUT_DIR)")
    check_push_args(args)
    teacher = pinned_teacher(recipe, args.revision)
    if demo and "distillation" in recipe.data["tricks"]:
        teacher = str(_demo_teacher(recipe, args))
    run_dir = train(recipe, data_dir=args.data_dir, output=args.output, device=args.device, resume=args.resume,
                    demo=demo, teacher=teacher, progress=not args.no_progress, recovery_interval=args.recovery_interval,
                    scan_data=not args.no_scan, skip_bad_images=args.skip_bad_images,
                    trust_pickle=args.trust_pickle)
    push_after_train(args, run_dir)
    return 0


def _demo_teacher(recipe: Recipe, args: argparse.Namespace) -> Path:
    """A small teacher for --demo: ResNet-18-D trained on the demo digits, reused once trained."""
    teacher_recipe = resolve(
        recipe.source if recipe.source.endswith((".yaml", ".yml")) else recipe.name,
        ["model.name=resnet18_v1d", "tricks.distillation=null", "tricks.mixup=null", "train.epochs=3"],
        demo=True)
    folder = cache_dir() / "demo-teachers" / teacher_recipe.sha256[:16]
    done = sorted(p for p in folder.glob("*") if RunFolder(p).finished)
    if done:
        tqdm.write(f"demo: reusing the small teacher trained before in {done[-1]}")
        return done[-1]
    tqdm.write(f"demo: no pretrained teacher offline, so training a small one first (ResNet-18-D, "
               f"{teacher_recipe.data['train']['epochs']} epochs on the demo digits) into {folder}")
    return train(teacher_recipe, data_dir=None, output=folder, device=args.device, demo=True,
                 progress=not args.no_progress)


def check_push_args(args: argparse.Namespace) -> None:
    """Before training: a well-formed ``--push-to-hub`` repo id and a token, so that hours of training do not
    end in an upload that cannot happen."""
    if not getattr(args, "push_to_hub", None):
        return
    try:
        validate_repo_id(args.push_to_hub)
    except HFValidationError as err:
        raise HubError(f"--push-to-hub {args.push_to_hub}: {err}") from None
    if huggingface_hub.get_token() is None:
        raise HubError(f"--push-to-hub: no Hugging Face token; {LOGIN_HINT}")


def push_after_train(args: argparse.Namespace, run_dir: str | os.PathLike) -> None:
    """``--push-to-hub``: export ``run_dir`` to ``run_dir/hub`` and push it (by the main process only)."""
    if not getattr(args, "push_to_hub", None) or int(os.environ.get("RANK", "0")) != 0:
        return
    folder = export_run(run_dir, Path(run_dir) / "hub", repo_id=args.push_to_hub, overwrite=True)
    info = push_folder(folder, args.push_to_hub, private=args.private)
    print(f"pushed {folder} to {args.push_to_hub}: {getattr(info, 'commit_url', info)}")
