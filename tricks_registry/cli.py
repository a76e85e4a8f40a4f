"""``tricks`` (subcommands) and ``tricks-train``.

Bad input (a recipe, a trick, an override, a missing folder) ends in one clear line on stderr and exit
code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import CheckpointError, DataError, TimmTricksError
from .hub import add_hub_commands, add_train_hub_args

__all__ = ["main", "train_main"]

DEFAULT_OUTPUT = "runs"


def _cache_dir() -> Path:
    root = os.environ.get("TIMM_TRICKS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "timm-tricks")
    return Path(root)


# ---------------------------------------------------------------------------------------------------------
# train
def _add_train_args(p: argparse.ArgumentParser) -> None:
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
    add_train_hub_args(p)  # --push-to-hub, --private, --revision, --trust-pickle


def cmd_train(args: argparse.Namespace) -> int:
    from .hub import check_push_args, pinned_teacher, push_after_train, resolve_recipe_arg
    from .train import train

    if not args.resume and not args.recipe:
        raise TimmTricksError("--recipe is required (a name such as resnet50d_all, or a YAML file), or --resume RUN_DIR")
    if args.resume:
        if args.recipe or args.overrides:
            raise TimmTricksError("--resume continues a run with the recipe saved in its folder; drop --recipe and --set")
        recipe_file = Path(args.resume) / "recipe.yaml"
        if not recipe_file.is_file():
            raise CheckpointError(f"--resume {args.resume}: no recipe.yaml there (is it a tricks-train run folder?)")
        recipe = _resolve_saved(recipe_file)
        demo = bool(recipe.data.get("demo_run"))
    else:
        recipe = resolve_recipe_arg(args.recipe, args.overrides, demo=args.demo, revision=args.revision)
        demo = args.demo
    if recipe.data.get("task", "classification") != "classification":  # detection / segmentation (section 6)
        from .transfer.train import train as train_transfer
        if demo or args.push_to_hub:
            raise TimmTricksError(f"--demo / --push-to-hub: not for {recipe.data['task']} recipes (no demo data; export "
                             "with python -m tricks_registry.transfer.export RUN_DIR OUT_DIR)")
        train_transfer(recipe, data_dir=args.data_dir, output=args.output, device=args.device, resume=args.resume,
                       progress=not args.no_progress)
        return 0
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


def _resolve_saved(path: Path):
    """A run folder's resolved recipe, read back as it was (its hash must still match)."""
    import yaml

    from .recipe import Recipe, RecipeError, recipe_hash

    data = yaml.safe_load(path.read_text())
    sha = recipe_hash(data)
    saved = (path.parent / "recipe.sha256").read_text().strip() if (path.parent / "recipe.sha256").is_file() else sha
    if sha != saved:
        raise RecipeError(f"the resolved recipe no longer matches its hash {saved[:16]}; it was edited", file=str(path))
    return Recipe(data=data, sha256=sha, source=str(path), lineage=tuple(data.get("lineage", ())))


def _demo_teacher(recipe: Any, args: argparse.Namespace) -> Path:
    """A small teacher for --demo: ResNet-18-D trained on the demo digits, reused once trained."""
    from tqdm import tqdm

    from .recipe import resolve
    from .train import train

    teacher_recipe = resolve(
        recipe.source if recipe.source.endswith((".yaml", ".yml")) else recipe.name,
        ["model.name=resnet18_v1d", "tricks.distillation=null", "tricks.mixup=null", "train.epochs=3"],
        demo=True)
    folder = _cache_dir() / "demo-teachers" / teacher_recipe.sha256[:16]
    done = sorted(folder.glob("*/summary.json"))
    if done:
        tqdm.write(f"demo: reusing the small teacher trained before in {done[-1].parent}")
        return done[-1].parent
    tqdm.write(f"demo: no pretrained teacher offline, so training a small one first (ResNet-18-D, "
               f"{teacher_recipe.data['train']['epochs']} epochs on the demo digits) into {folder}")
    return train(teacher_recipe, data_dir=None, output=folder, device=args.device, demo=True,
                 progress=not args.no_progress)


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .data import demo_datasets, image_folder_datasets
    from .lr_find import lr_range_test, write_outputs
    from .recipe import resolve

    recipe = resolve(args.recipe, args.overrides, demo=args.demo)
    if args.demo:
        train_set, _ = demo_datasets(seed=recipe.data["train"]["seed"])
    elif args.data_dir:
        d = recipe.data["data"]
        train_set, _, _ = image_folder_datasets(args.data_dir, d["train_split"], d["val_split"],
                                                d["subset_per_class"], progress=not args.no_progress)
    else:
        raise DataError("--data-dir is required (or --demo)")
    result = lr_range_test(recipe, train_set, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr,
                           device=args.device or "cpu", progress=not args.no_progress)
    csv_path, png_path = write_outputs(result, Path(args.output), f"LR range test: {recipe.name}@{recipe.version}")
    print(f"suggested base LR: {result.suggested_lr:.3g} (steepest loss descent; lowest loss at "
          f"{result.min_loss_lr:.3g}, a tenth of it is {result.min_loss_lr / 10:.3g}); recipe's LR: {recipe.lr:g}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# list / show
def cmd_list(args: argparse.Namespace) -> int:
    from .registry import list_tricks

    specs = list_tricks(args.kind)
    if args.json:
        print(json.dumps([s.to_json() for s in specs], indent=2))
        return 0
    width = max(len(s.name) for s in specs)
    kind = None
    for s in specs:
        if s.kind != kind:
            kind = s.kind
            print(f"\n[{kind}]")
        print(f"  {s.name:<{width}}  {s.summary}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .registry import get_trick

    spec = get_trick(args.name)
    if args.json:
        print(json.dumps(spec.to_json() | {"doc": spec.doc}, indent=2))
        return 0
    print(f"{spec.name}  (kind: {spec.kind})")
    print(f"paper section: {spec.section}")
    print(f"implemented by: {spec.implemented_by}")
    print("parameters:" if spec.params else "parameters: none")
    for p in spec.params:
        print(f"  {p.name}: {p.type_name} = {p.default!r}")
    print()
    print(spec.doc)
    return 0


# ---------------------------------------------------------------------------------------------------------
# recipe
def cmd_recipe(args: argparse.Namespace) -> int:
    from .recipe import list_recipes, resolve

    if args.recipe_cmd == "list":
        for name, version, path in list_recipes():
            r = resolve(path)
            print(f"{name}@{version:<3} {r.sha256[:12]}  {r.data['reference'] or r.data['description'][:70]}")
        return 0
    if args.recipe_cmd == "show":
        r = resolve(args.name, args.overrides)
        if args.json:
            print(json.dumps({"sha256": r.sha256, "recipe": r.data}, indent=2))
        elif args.resolved:
            print(r.to_yaml(), end="")
        else:
            from .recipe import find_recipe_file
            print(f"# {find_recipe_file(args.name)}  (resolved sha256={r.sha256})")
            print(Path(find_recipe_file(args.name)).read_text(), end="")
        return 0
    if args.recipe_cmd == "diff":
        a, b = resolve(args.a), resolve(args.b)
        for line in recipe_diff(a.data, b.data):
            print(line)
        return 0
    if args.recipe_cmd == "export":
        from .export_timm import export_timm_args
        text = export_timm_args(resolve(args.name, args.overrides), world_size=args.nproc)
        if args.out:
            from .checkpoint import atomic_write_text
            atomic_write_text(args.out, text)
            print(f"wrote {args.out}")
        else:
            print(text, end="")
        return 0
    raise TimmTricksError("tricks recipe: choose list, show, diff or export")


def recipe_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Lines ``- key: old`` / ``+ key: new`` for every leaf that differs between two resolved recipes."""
    lines: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in b:
                lines.append(f"- {path}: {json.dumps(a[key])}")
            elif key not in a:
                lines.append(f"+ {path}: {json.dumps(b[key])}")
            else:
                lines.extend(recipe_diff(a[key], b[key], path))
    elif a != b:
        lines += [f"- {prefix}: {json.dumps(a)}", f"+ {prefix}: {json.dumps(b)}"]
    return lines


# ---------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tricks", description="Bag of Tricks (He et al. 2019) for timm: "
                                     "train recipes, list and show tricks, resolve and export recipes.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a recipe (the same as tricks-train)")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("list", help="list the registered tricks")
    p.add_argument("--kind", help="only this kind (schedule, warmup, optimizer, loss, ...)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="one trick: parameters, defaults, paper section, library underneath")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("lr-find", help="LR range test (Smith 2017) over a recipe's model and data")
    p.add_argument("--recipe", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--demo", action="store_true", help="use the embedded demo digits")
    p.add_argument("--output", default="lr-find", help="folder for lr_find.csv and lr_find.png")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--start-lr", type=float, default=1e-5)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_lr_find)
    p = sub.add_parser("recipe", help="list, show, diff and export recipes")
    rsub = p.add_subparsers(dest="recipe_cmd", required=True)
    rsub.add_parser("list", help="every published recipe version with its hash")
    q = rsub.add_parser("show", help="a recipe as written, or --resolved")
    q.add_argument("name")
    q.add_argument("--resolved", action="store_true")
    q.add_argument("--json", action="store_true")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q = rsub.add_parser("diff", help="what differs between two resolved recipes")
    q.add_argument("a")
    q.add_argument("b")
    q = rsub.add_parser("export", help="a config file for another trainer")
    q.add_argument("name")
    q.add_argument("--format", choices=["timm-args"], default="timm-args")
    q.add_argument("--nproc", type=int, default=1,
                   help="processes timm's train.py will run on: its batch_size is per process (default 1)")
    q.add_argument("--out", help="write here instead of stdout")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_recipe)
    add_hub_commands(sub)  # export, push
    from .ablate import add_parser as add_ablate_parser
    add_ablate_parser(sub)  # ablate: a ladder x seeds, table and chart beside the paper
    return parser


def _run(func: Any, args: argparse.Namespace) -> int:
    """Run a command; a :class:`TimmTricksError` becomes one line on stderr and exit code 2 (a run stopped by
    a signal after its checkpoint: the signal's 128 + N), never a traceback."""
    from .data import BadImageError
    from .errors import TimmTricksError, TrainingStopped

    try:
        return func(args)
    except BadImageError as err:  # read during training (--no-scan); from a worker it carries the worker's traceback
        where = str(err).strip().splitlines()[-1].split("BadImageError: ")[-1]
        print(f"error: data: {where}; remove or replace it, or run with --skip-bad-images", file=sys.stderr)
        return 2
    except TrainingStopped as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    except TimmTricksError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def train_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tricks-train", description="Train a timm-tricks recipe "
                                     "(single process, or torchrun --nproc_per_node N for DDP).")
    _add_train_args(parser)
    return _run(cmd_train, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
