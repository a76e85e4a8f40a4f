"""``tricks train`` / ``tricks-train``: train a recipe (classification, or a detection / segmentation recipe of
the paper's section 6), with the Hub options ``--push-to-hub``, ``--private``, ``--revision``, ``--trust-pickle``."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, HubError, TimmTricksError

# The library (torch, timm, the Hub client) is imported inside the commands: building the parser imports none of it.

__all__ = ["DEFAULT_OUTPUT", "add_commands", "add_train_args", "add_scan_args", "cmd_train", "check_push_args", "push_after_train"]

DEFAULT_OUTPUT = "runs"


def add_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="train a recipe (the same as tricks-train)")
    add_train_args(p)
    p.set_defaults(func=cmd_train)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="a recipe name (resnet50d_all, resnet50d_all@1) or a YAML path "
                                    "(not needed with --resume: the run folder holds its recipe)")
    p.add_argument("--data-dir", help="ImageFolder tree with train/<class>/ and val/<class>/ (not needed with --demo)")
    p.add_argument("--dataset", metavar="SPEC",
                   help="the data source (the recipe's data.dataset; timm train.py's --dataset): folder (default: "
                        "--data-dir holds train/ and val/ class folders, or train.tar and val.tar), torch/NAME "
                        "(torchvision, e.g. torch/cifar10), hfds/NAME (Hugging Face datasets: a Hub id or a local "
                        "folder; --data-dir is its cache), hfids/NAME (the same, streamed) or wds/NAME (webdataset "
                        "shards and their _info.json in --data-dir)")
    p.add_argument("--train-split", metavar="NAME", help="the training split (the recipe's data.train_split)")
    p.add_argument("--val-split", metavar="NAME", help="the validation split (the recipe's data.val_split; val also "
                                                      "finds validation, valid or test)")
    p.add_argument("--dataset-download", action="store_true",
                   help="download a torch/ or Hugging Face data set into --data-dir first (one process: not "
                        "under torchrun); nothing is downloaded without it")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="where run folders go (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=2 --set tricks.mixup.alpha=0.4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--experiment", metavar="NAME",
                   help="the run folder's name under --output (timm's --experiment; default: recipe, version, time)")
    p.add_argument("--resume-if-exists", action="store_true",
                   help="for jobs that are preempted and requeued with the same command: continue --output/NAME "
                        "(--experiment NAME; under SLURM default <recipe>-v<version>-job<SLURM_JOB_ID>) when it holds "
                        "a checkpoint of this recipe, do nothing when it is finished, start it otherwise")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--demo", action="store_true",
                   help="train on the embedded MNIST digits (needs the 'demo' extra), scaled down to run on a CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="leave out the last lines that say what to do with the run "
                                                        "(validate, export, load it in plain timm)")
    p.add_argument("--recovery-interval", type=int, default=0, metavar="STEPS",
                   help="also save a resumable checkpoint every STEPS optimizer steps (default: at the end of each "
                        "epoch only; SIGTERM/SIGINT always save one first)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable images found by the scan (listed in the run folder's bad_images.txt) "
                        "instead of stopping before training")
    add_scan_args(p)
    from .launch import add_launcher_args  # --launcher local|slurm and the job's resources

    add_launcher_args(p)
    # the Hub
    p.add_argument("--push-to-hub", metavar="ORG/NAME",
                   help="when training ends, export the run (to RUN_DIR/hub) and push it to this Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--revision", metavar="REV",
                   help="branch, tag or commit of an hf-hub: recipe (--recipe hf-hub:ORG/NAME) and of an hf-hub: "
                        "teacher that names none")
    p.add_argument("--pretrained", metavar="SPEC",
                   help="fine-tune from these weights (the recipe's model.pretrained): a timm tag "
                        "(resnet50_v1d.gluon_in1k), hf-hub:ORG/NAME[@REV], local-dir:DIR, a run folder or "
                        "ARCH@FILE.safetensors; another class count re-initialises the classifier")
    p.add_argument("--log", action="append", default=[], metavar="TOOL",
                   help="also log the run to tensorboard, mlflow or wandb (repeatable; pip install "
                        "'timm-tricks[tensorboard]' and so on); the run folder stays the record")
    p.add_argument("--log-wandb", action="append_const", dest="log", const="wandb",
                   help="timm's train.py flag: the same as --log wandb")
    p.add_argument("--device-batch", type=int, metavar="N",
                   help="images per forward pass on each process; the rest of the recipe's global batch is "
                        "accumulated (global = processes x N x accumulation steps; the LR and schedule do not "
                        "change; BatchNorm sees N images). Default: the whole per-process share")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also load a teacher's pickle weights (.pth/.bin/.pt); unpickling can run code: only for "
                        "files you trust (default: safetensors only)")


def add_scan_args(p: argparse.ArgumentParser) -> None:
    """``--no-scan`` and ``--rescan``: the bad-image scan of every command that scans a folder source."""
    p.add_argument("--no-scan", action="store_true",
                   help="do not decode every image before training (a bad image then stops the run when it is read)")
    p.add_argument("--rescan", action="store_true",
                   help="decode every image again, whatever the run folder or the cache (~/.cache/timm-tricks/scans) "
                        "knows of the unchanged files")


def cmd_train(args: argparse.Namespace) -> int:
    from ..export.hub import pinned_teacher, resolve_recipe_arg
    from ..run_folder import RunFolder, is_run_folder
    from ..train import train
    from .next_steps import print_next_steps

    if not args.resume and not args.recipe:
        raise TimmTricksError("--recipe is required (a name such as resnet50d_all, or a YAML file), or --resume RUN_DIR")
    data_overrides = [f"data.{key}={json.dumps(value)}" for key, value in (
        ("dataset", args.dataset), ("train_split", args.train_split), ("val_split", args.val_split)) if value is not None]
    if args.resume and (args.resume_if_exists or args.experiment):
        raise TimmTricksError("--resume RUN_DIR names the run to continue; drop --resume-if-exists / --experiment "
                              "(or keep those and drop --resume)")
    if args.resume:
        if args.recipe or args.overrides or args.pretrained or data_overrides:
            raise TimmTricksError("--resume continues a run with the recipe saved in its folder; drop --recipe and --set"
                                  + (" (and --dataset / --train-split / --val-split)" if data_overrides else ""))
        if not is_run_folder(args.resume):
            raise CheckpointError(f"--resume {args.resume}: no recipe.yaml there (is it a tricks-train run folder?)")
        recipe = RunFolder(args.resume).recipe()  # its hash checked
        demo = recipe.demo_run
    else:
        overrides = data_overrides + list(args.overrides) + (
            [f"model.pretrained={json.dumps(args.pretrained)}"] if args.pretrained else [])
        recipe = resolve_recipe_arg(args.recipe, overrides, demo=args.demo, revision=args.revision)
        demo = args.demo
    if recipe.task != "classification":  # detection / segmentation (section 6)
        if demo or args.push_to_hub:
            raise TimmTricksError(f"--demo / --push-to-hub: not for {recipe.task} recipes (no demo data; export "
                                  "with tricks export-transfer RUN_DIR OUT_DIR)")
    check_push_args(args)
    check_run_options(recipe, args)  # before a --demo teacher trains for minutes
    if args.launcher != "inprocess":  # the same command as a submitit job (DeiT's run_with_submitit.py)
        from .launch import launch_from_args

        return launch_from_args(args, recipe)
    teacher = pinned_teacher(recipe, args.revision)
    if demo and "distillation" in recipe.tricks:
        teacher = str(_demo_teacher(recipe, args))
    if args.dataset_download:
        _download(recipe, args)
    run_dir = train(recipe, data_dir=args.data_dir, output=args.output, device=args.device, resume=args.resume,
                    demo=demo, teacher=teacher, progress=not args.no_progress, recovery_interval=args.recovery_interval,
                    scan_data=not args.no_scan, rescan=args.rescan, skip_bad_images=args.skip_bad_images,
                    trust_pickle=args.trust_pickle, device_batch=args.device_batch,
                    log=args.log, experiment=args.experiment, resume_if_exists=args.resume_if_exists)
    push_after_train(args, run_dir)
    print_next_steps(args, recipe, run_dir)  # the run's folder in the validate, export and plain-timm commands
    return 0


def _download(recipe: Any, args: argparse.Namespace) -> None:
    """``--dataset-download``: the recipe's source downloaded into ``--data-dir`` before training, by one process."""
    from ..distributed import launch_info

    if launch_info()[2] > 1:
        raise TimmTricksError("--dataset-download runs in one process, not under torchrun: download first (python -c "
                              "\"from tricks_registry.data import download_dataset; download_dataset('SPEC', 'DIR', "
                              "['train', 'val'])\"), then start torchrun without it")
    from ..data import download_dataset

    data = recipe.data
    download_dataset(data.dataset, args.data_dir, [data.train_split, data.val_split])


def _demo_teacher(recipe: Any, args: argparse.Namespace) -> Path:
    """The ``--demo`` distillation run's teacher: :func:`tricks_registry.demo_teacher.demo_teacher`."""
    from ..demo_teacher import demo_teacher

    return demo_teacher(recipe, device=args.device, progress=not args.no_progress)


def check_run_options(recipe: Any, args: argparse.Namespace) -> None:
    """The run options that fail fast: the loggers named by ``--log`` and ``--device-batch`` against the recipe's
    global batch on this launch's processes (``train()`` checks them again; this is before any teacher trains)."""
    from ..distributed import launch_info
    from ..loggers import check_loggers
    from ..recipe import batch_plan

    check_loggers(args.log)
    if not args.resume:  # a resumed run keeps its own split
        batch_plan(recipe, launch_info()[2], args.device_batch)


def check_push_args(args: argparse.Namespace) -> None:
    """Before training: a well-formed ``--push-to-hub`` repo id and a token, so that hours of training do not
    end in an upload that cannot happen."""
    if not getattr(args, "push_to_hub", None):
        return
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from ..export.hub import LOGIN_HINT

    try:
        validate_repo_id(args.push_to_hub)
    except HFValidationError as err:
        raise HubError(f"--push-to-hub {args.push_to_hub}: {err}") from None
    if huggingface_hub.get_token() is None:
        raise HubError(f"--push-to-hub: no Hugging Face token; {LOGIN_HINT}")


def push_after_train(args: argparse.Namespace, run_dir: str | os.PathLike) -> None:
    """``--push-to-hub``: export ``run_dir`` to ``run_dir/hub`` and push it (by the main process only)."""
    if not getattr(args, "push_to_hub", None):
        return
    from ..distributed import launch_info

    if launch_info()[1] != 0:
        return
    from ..export.hub import export_run, push_folder

    folder = export_run(run_dir, Path(run_dir) / "hub", repo_id=args.push_to_hub, overwrite=True)
    info = push_folder(folder, args.push_to_hub, private=args.private)
    print(f"pushed {folder} to {args.push_to_hub}: {getattr(info, 'commit_url', info)}")
