"""What the recipe's ``data.dataset`` names (timm ``train.py``'s ``--dataset``) and where a source's splits are:
the data-set kinds, :class:`DataSpec`, split names with their usual synonyms (val: validation, valid, test).
Imports neither torch nor timm."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import DataError

__all__ = ["DATASET_KINDS", "DataSpec", "parse_dataset_spec", "find_split", "find_split_source", "pick_split",
           "first_line"]

_SPLIT_SYNONYMS = {"train": ("train", "training"), "val": ("val", "validation", "valid", "test")}

#: the prefixes of ``data.dataset`` (timm's ``--dataset``); empty or ``folder`` is the ImageFolder / tar default
from ..kinds import DATASET_KINDS  # noqa: E402  (the data-set kinds, listed once)


def find_split(root: Path, split: str) -> Path:
    """``root/<split>``, or a usual synonym of it (val, validation, test)."""
    candidates = tuple(dict.fromkeys((split,) + _SPLIT_SYNONYMS.get(split, ())))  # each name once, in order
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"data: no '{split}' folder in {root} (looked for {', '.join(candidates)}); "
                     f"the data dir must hold ImageFolder splits such as train/<class>/*.jpg and val/<class>/*.jpg")


def find_split_source(root: Path, split: str) -> Path:
    """A split of the default source: the folder ``root/<split>`` (or a synonym, as :func:`find_split`), else the
    tar file ``root/<split>.tar`` (or a synonym's; ``split`` may also name the file, as timm's ``--train-split
    train.tar`` does)."""
    names = tuple(dict.fromkeys((split,) + _SPLIT_SYNONYMS.get(split, ())))
    for name in names:
        if (root / name).is_dir():
            return root / name
    tars = tuple(dict.fromkeys(n if n.endswith(".tar") else f"{n}.tar" for n in names))
    for name in tars:
        if (root / name).is_file():
            return root / name
    raise DataError(f"data: no '{split}' split in {root} (looked for the folders {', '.join(names)} and the files "
                     f"{', '.join(tars)}); the data dir must hold ImageFolder splits such as train/<class>/*.jpg and "
                     "val/<class>/*.jpg, or train.tar and val.tar of <class>/<image> members; name others with "
                     "--train-split / --val-split")


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``data.dataset``: ``kind`` is one of :data:`DATASET_KINDS`, ``name`` what follows the prefix
    (a torchvision data set, a Hub id or local folder, a webdataset name), ``spec`` the value as given."""

    kind: str
    name: str
    spec: str

    @property
    def iterable(self) -> bool:
        """Whether timm reads it as a stream (``wds/``, ``hfids/``) rather than by index."""
        return self.kind in ("wds", "hfids")

    def __str__(self) -> str:
        return self.spec or "folder"


def parse_dataset_spec(spec: str | None) -> DataSpec:
    """``''``/``folder`` (ImageFolder or ``.tar`` splits), ``torch/NAME``, ``hfds/NAME``, ``hfids/NAME`` or
    ``wds/NAME``, as timm's ``create_dataset`` names them (the prefix in any case)."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "folder"):
        return DataSpec("folder", "", spec)
    prefix, sep, name = spec.partition("/")
    kind = prefix.lower()
    if not sep or kind not in DATASET_KINDS[1:] or not name:
        raise DataError(f"data: --dataset {spec!r}: expected folder (or nothing: ImageFolder or .tar splits under "
                        "--data-dir), torch/NAME (torchvision, e.g. torch/cifar10), hfds/NAME (Hugging Face datasets), "
                        "hfids/NAME (the same, streamed) or wds/NAME (webdataset shards)")
    return DataSpec(kind, name, spec)


def first_line(err: BaseException) -> str:
    """An exception as one line for a :class:`DataError` message: its type and the first line of its text."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def pick_split(split: str, available: Sequence[str], where: str) -> str:
    """``split`` if ``available`` has it, else its first usual synonym there (val: validation, valid, test);
    a ``[slice]`` suffix (Hugging Face's ``train[:10%]``) is kept. A missing split is a :class:`DataError`."""
    base, bracket, rest = split.partition("[")
    for name in dict.fromkeys((base,) + _SPLIT_SYNONYMS.get(base, ())):
        if name in available:
            return name + bracket + rest
    raise DataError(f"data: {where} has no '{base}' split (it has {', '.join(map(str, available)) or 'none'}); "
                    "name one with --train-split / --val-split")
