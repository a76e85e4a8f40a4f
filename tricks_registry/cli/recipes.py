"""``tricks list``, ``tricks show`` (the trick catalogue), ``tricks recipe list|show|diff|export|import`` and
``tricks lr-find``."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ..errors import DataError, TimmTricksError
from ..recipe import find_recipe_file, list_recipes, resolve
from ..registry import get_trick, list_tricks
from .train import add_scan_args

# ``lr-find`` imports what it runs (torch, timm) inside its command; ``recipe export`` and ``recipe import`` need
# neither (tests/test_startup.py checks it).

__all__ = ["add_commands", "cmd_list", "cmd_show", "cmd_recipe", "cmd_lr_find", "recipe_diff", "plain_text"]


def add_commands(sub: Any) -> None:
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
    p.add_argument("--dataset", metavar="SPEC", help="the training data's source, as tricks-train --dataset (read by "
                                                     "index: folder or .tar splits, torch/NAME, hfds/NAME)")
    p.add_argument("--output", default="lr-find", help="folder for lr_find.csv and lr_find.png")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--start-lr", type=float, default=1e-5)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--mode", choices=["linear", "exp"], default="exp",
                   help="how the LR grows from --start-lr to --end-lr: linear (Smith 2017, section 3.3) or exp")
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    add_scan_args(p)
    p.set_defaults(func=cmd_lr_find)
    p = sub.add_parser("recipe", help="list, show, diff, export and import recipes")
    rsub = p.add_subparsers(dest="recipe_cmd", required=True)
    rsub.add_parser("list", help="every published recipe version with its hash")
    q = rsub.add_parser("show", help="a recipe as written, or --resolved")
    q.add_argument("name")
    q.add_argument("--resolved", action="store_true")
    q.add_argument("--json", action="store_true")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q = rsub.add_parser("diff", help="what differs between two resolved recipes (names or recipe files)")
    q.add_argument("a")
    q.add_argument("b")
    q.add_argument("--values", action="store_true",
                   help="leave out the bookkeeping keys (name, version, description, reference, lineage)")
    q = rsub.add_parser("export", help="a config file for another trainer")
    q.add_argument("name")
    q.add_argument("--format", choices=["timm-args"], default="timm-args")
    q.add_argument("--nproc", type=int, default=1,
                   help="processes timm's train.py will run on: its batch_size is per process (default 1)")
    q.add_argument("--device-batch", type=int, metavar="N",
                   help="images per forward pass on each process; the rest of the global batch becomes timm's "
                        "grad_accum_steps (as tricks-train --device-batch)")
    q.add_argument("--out", help="write here instead of stdout")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    q = rsub.add_parser("import", help="a recipe from a timm train.py run's args.yaml (or a timm-args export)")
    q.add_argument("args_yaml", metavar="ARGS.yaml")
    q.add_argument("--name", required=True, help="the new recipe's name (version 1)")
    q.add_argument("--nproc", type=int, default=None,
                   help="processes the run had (args.yaml does not record it): global batch = batch_size x N x "
                        "grad_accum_steps (default: the export's, else 1)")
    q.add_argument("--out", help="the recipe file to write (default: NAME.yaml here)")
    q.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_recipe)


# ---------------------------------------------------------------------------------------------------------
# list / show
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`(~?)([^`]+?)`")


def plain_text(doc: str) -> str:
    """A docstring for the terminal: RST literals (````x````) and roles (``:func:`a.f` ``, ``:func:`~a.f` `` as
    ``f``) as plain text."""
    def role(m: re.Match) -> str:
        return m[2].rsplit(".", 1)[-1] if m[1] else m[2]

    return _RST_ROLE.sub(role, _RST_LITERAL.sub(r"\1", doc))


def cmd_list(args: argparse.Namespace) -> int:
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
        print(f"  {s.name:<{width}}  {plain_text(s.summary)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
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
    print(plain_text(spec.doc))
    return 0


# ---------------------------------------------------------------------------------------------------------
# lr-find
def cmd_lr_find(args: argparse.Namespace) -> int:
    from ..data import StreamingSource, demo_datasets, open_datasets
    from ..lr_find import describe, lr_range_test, write_outputs
    from ..data.scan import ScanPolicy

    overrides = ([f"data.dataset={json.dumps(args.dataset)}"] if args.dataset else []) + list(args.overrides)
    recipe = resolve(args.recipe, overrides, demo=args.demo)
    if args.demo:
        train_set, _ = demo_datasets(seed=recipe.train.seed)
    elif args.data_dir:
        d = recipe.data
        train_set, _, _ = open_datasets(d.dataset or None, args.data_dir, d.train_split, d.val_split,
                                        d.subset_per_class, progress=not args.no_progress,
                                        scan=ScanPolicy(enabled=not args.no_scan, rescan=args.rescan))
        if isinstance(train_set, StreamingSource):
            raise DataError(f"lr-find: {d.dataset} is a stream; the range test reads sources by index (folder, "
                            "tar, torch/, hfds/)")
    else:
        raise DataError("--data-dir is required (or --demo)")
    result = lr_range_test(recipe, train_set, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr,
                           device=args.device or "cpu", progress=not args.no_progress, mode=args.mode)
    csv_path, png_path = write_outputs(result, Path(args.output), f"LR range test: {recipe.name}@{recipe.version}")
    print(describe(result, recipe.lr))
    print(f"wrote {csv_path} and {png_path}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# recipe
def cmd_recipe(args: argparse.Namespace) -> int:
    if args.recipe_cmd == "list":
        rows = []
        for name, version, path in list_recipes():
            r = resolve(path)
            rows.append((f"{name}@{version}", r.sha256[:12], r.reference or _first_sentence(r.description)))
        width = max(len(ident) for ident, _, _ in rows)
        print(f"{'recipe':<{width}}  {'sha256':<12}  reference (else description)")
        for ident, sha, text in rows:
            print(f"{ident:<{width}}  {sha}  {text}")
        return 0
    if args.recipe_cmd == "show":
        r = resolve(args.name, args.overrides)
        if args.json:
            print(json.dumps({"sha256": r.sha256, "recipe": r.mapping}, indent=2))
        elif args.resolved:
            print(r.to_yaml(), end="")
        else:
            print(f"# {find_recipe_file(args.name)}  (resolved sha256={r.sha256})")
            print(Path(find_recipe_file(args.name)).read_text(), end="")
        return 0
    if args.recipe_cmd == "diff":
        a, b = resolve(args.a), resolve(args.b)
        if args.values:
            from ..export.timm_args import BOOKKEEPING_KEYS

            lines = recipe_diff(*({k: v for k, v in r.mapping.items() if k not in BOOKKEEPING_KEYS} for r in (a, b)))
        else:
            lines = recipe_diff(a.mapping, b.mapping)
        for line in lines:
            print(line)
        if not lines:
            print(f"{args.a} and {args.b} resolve to the same recipe (sha256 {a.sha256[:12]})")
        return 0
    if args.recipe_cmd == "export":
        from ..export.timm_args import export_timm_args, write_text_atomic

        text = export_timm_args(resolve(args.name, args.overrides), world_size=args.nproc,
                                device_batch=args.device_batch)
        if args.out:
            write_text_atomic(args.out, text)
            print(f"wrote {args.out}")
        else:
            print(text, end="")
        return 0
    if args.recipe_cmd == "import":
        return _recipe_import(args)
    raise TimmTricksError("tricks recipe: choose list, show, diff, export or import")


def _recipe_import(args: argparse.Namespace) -> int:
    """``tricks recipe import ARGS.yaml --name NAME``: write the recipe, print what was mapped, dropped, noted."""
    from ..export.timm_import import import_timm_args, write_imported_recipe

    out = Path(args.out or f"{args.name}.yaml")
    if out.exists() and not args.force:
        raise TimmTricksError(f"{out}: exists already; pass --force to overwrite it (or --out PATH)")
    result = import_timm_args(args.args_yaml, name=args.name, nproc=args.nproc)
    write_imported_recipe(result, out, force=args.force)
    for line in result.summary_lines():
        print(line)
    other = result.carried.split(" ")[0] if result.carried else "resnet50d_all"
    print(f"wrote {out}: recipe {args.name}@1 (sha256 {result.recipe.sha256[:12]}); compare it with a published "
          f"recipe: tricks recipe diff {out} {other} --values")
    return 0


def _first_sentence(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    cut = text.split(". ", 1)[0].rstrip(".")
    return cut if len(cut) <= limit else cut[:limit - 3].rstrip() + "..."


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
