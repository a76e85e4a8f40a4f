"""The sources behind the recipe's ``data.dataset`` (timm ``train.py``'s ``--dataset``; ``data.data_dir`` its
``--data-dir``), each opened through timm's ``create_dataset``: empty or ``folder`` (the default) reads
``<data-dir>/<split>/<class>/<image>`` folders or ``<data-dir>/<split>.tar`` files of ``<class>/<image>`` members
(:mod:`.folders`); ``torch/cifar10``-style names are torchvision's data sets (downloaded only when asked);
``hfds/NAME`` a Hugging Face data set (Hub id or local folder; ``--data-dir`` is its cache); ``hfids/NAME`` the
same, streamed; ``wds/NAME`` webdataset shards with timm's ``_info.json`` split file in ``--data-dir`` (each shard
checked). A missing split, a bad shard or an unreadable source is one :class:`~..errors.DataError` naming it.

:func:`open_datasets` (training: both splits, checked) and :func:`open_split` (``tricks validate``: one split read
by index, unchecked) open each kind the same way: the data folder it needs (:func:`_data_root`), the split's name
(:func:`_split_name`) and, for ``torch/`` and ``hfds/``, the split read by index (:func:`_open_indexed`); they
differ only in what they check (the folder source's class folders and scan) and in whether a stream is allowed."""
from __future__ import annotations

import functools
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from ..errors import DataError
from .folders import ImageFolderDataset, image_folder_datasets, tar_dataset
from .indexed import SourceDataset, class_to_idx_of
from .scan import ScanPolicy
from .spec import DataSpec, find_split_source, first_line, parse_dataset_spec, pick_split
from .streams import EvalStream, StreamingSource

__all__ = ["open_datasets", "open_split", "download_dataset", "check_wds_shards"]


def _hf_split(spec: DataSpec, root: str | None, split: str) -> str:
    """The split of a Hugging Face data set (``hfds/``, ``hfids/``) that ``split`` names, from its builder (a
    Hub id reads the local cache offline)."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(spec.name, cache_dir=root)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds (offline, not found, bad files)
        raise DataError(f"data: {spec}: cannot open {spec.name} ({first_line(err)}); give a Hub id (cached for "
                        "offline use) or a local folder of parquet / image files, e.g. hfds//data/my_set") from None
    available = list(builder.info.splits or {}) or list(getattr(builder.config, "data_files", None) or {})
    return pick_split(split, available, str(spec))


def _wds_info(root: str) -> tuple[Path | None, dict[str, Any]]:
    """timm's webdataset split file (``_info.json`` or ``info.json`` in ``root``) and its contents."""
    for name in ("_info.json", "info.json"):
        path = Path(root) / name
        if path.is_file():
            try:
                return path, json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise DataError(f"data: {path} is not readable JSON ({err}); rewrite the split file") from None
    return None, {}


def check_wds_shards(root: str | os.PathLike, split_info: dict[str, Any], where: str, *, count: bool = True) -> None:
    """Every shard the split file lists exists and (with ``count``) is a readable tar holding the number of
    samples it says (``shard_lengths``): a missing, truncated or corrupt shard is a :class:`DataError` naming it.
    Reads only the tar headers."""
    names = list(split_info.get("filenames") or ())
    lengths = list(split_info.get("shard_lengths") or ())
    if not names:
        raise DataError(f"data: {where}: the split file lists no shards (filenames)")
    for i, name in enumerate(names):
        path = Path(root) / name
        if not path.is_file():
            raise DataError(f"data: {where}: shard {path} is missing (listed in the split file); restore it or "
                            "remove it from the split file")
        if not count:
            continue
        try:
            with tarfile.open(path, mode="r:") as tar:  # the sample keys, as webdataset groups members
                keys = {m.group(1) for m in (_WDS_KEY.match(t.name) for t in tar if t.isfile()) if m}
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"data: {where}: shard {path} is not a readable tar ({err}); rewrite or re-download "
                            "it") from None
        if i < len(lengths) and len(keys) != lengths[i]:
            raise DataError(f"data: {where}: shard {path} holds {len(keys)} samples, the split file says "
                            f"{lengths[i]} (truncated or replaced); rewrite or re-download it")


_WDS_KEY = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # webdataset's base_plus_ext: key, extension


def _timm_create(spec: DataSpec, root: str | None, split: str, **kwargs: Any) -> Any:
    """timm's ``create_dataset``; its errors (asserts, RuntimeErrors, the datasets library's) as one-line
    :class:`DataError`."""
    from timm.data import create_dataset

    try:
        return create_dataset(spec.spec, root=root, split=split, **kwargs)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - torchvision, datasets and timm raise many kinds
        hint = {"torch": "give --data-dir where torchvision's files are, or pass --dataset-download",
                "hfids": "pass --dataset-download (prepares it locally) or read it by index with hfds/"}.get(
            spec.kind, "check --data-dir and the split names")
        raise DataError(f"data: {spec} split '{split}' in {root}: {first_line(err)}; {hint}") from None


def _stream_classes(spec: DataSpec, info: dict[str, Any], info_path: Path | None, reader: Any) -> list[str]:
    mapping = class_to_idx_of(reader) if reader is not None else {}
    if mapping:
        return sorted(mapping, key=mapping.get)
    if isinstance(info.get("classes"), list) and info["classes"]:
        return [str(c) for c in info["classes"]]
    if isinstance(info.get("num_classes"), int) and info["num_classes"] > 0:
        return [str(i) for i in range(info["num_classes"])]
    raise DataError(f"data: {spec}: the class names are unknown; add \"classes\": [names] or \"num_classes\": N to "
                    f"{info_path or 'the split file (_info.json)'}")


def _data_root(ds: DataSpec, data_dir: str | os.PathLike | None) -> str | None:
    """``data_dir`` as a string (None when not given); ``torch/`` and ``wds/`` need one (where their files are)."""
    root = str(data_dir) if data_dir else None
    if ds.kind in ("torch", "wds") and not root:
        raise DataError(f"data: --dataset {ds} needs --data-dir (where its files are)")
    return root


def _split_name(ds: DataSpec, root: str | None, split: str) -> str:
    """The name timm's ``create_dataset`` takes for ``split``: a Hugging Face data set's own (:func:`_hf_split`),
    else ``split`` as given."""
    return _hf_split(ds, root, split) if ds.kind in ("hfds", "hfids") else split


def _open_indexed(ds: DataSpec, root: str | None, name: str, *, download: bool = False, skip_bad: bool = False,
                  class_to_idx: dict[str, int] | None = None) -> SourceDataset:
    """Split ``name`` (:func:`_split_name`) of a ``torch/`` or ``hfds/`` source, read by index."""
    options = {"download": download} if ds.kind == "torch" else {}
    return SourceDataset(_timm_create(ds, root, name, **options), source=f"{ds}:{name}", skip_bad=skip_bad,
                         class_to_idx=class_to_idx)


def open_datasets(spec: str | None, data_dir: str | os.PathLike | None, train_split: str, val_split: str,
                  subset_per_class: int = 0, *, scan: bool | ScanPolicy = True, skip_bad: bool = False, progress: bool = True,
                  download: bool = False) -> tuple[Dataset, Dataset, list[tuple[str, str]]]:
    """The train and val splits of ``spec`` (the recipe's ``data.dataset``, timm's ``--dataset``) under
    ``data_dir``, through timm's ``create_dataset``. Returns (train, val, bad images left out).

    Map-style sources (folder and tar splits: :func:`.folders.image_folder_datasets`; ``torch/NAME``;
    ``hfds/NAME``) give :class:`~.indexed.SourceDataset` splits; iterable ones (``wds/NAME``, ``hfids/NAME``) a
    :class:`~.streams.StreamingSource` and an :class:`~.streams.EvalStream`. ``download`` lets torchvision (and
    ``hfids/``) download. A missing split, a bad shard or unreadable source is a :class:`DataError` naming it;
    ``subset_per_class`` is for map-style sources."""
    ds = parse_dataset_spec(spec)
    if ds.kind == "folder":
        if not data_dir:
            raise DataError("--data-dir is required (an ImageFolder tree with train/ and val/, or train.tar and "
                            "val.tar), or use --demo")
        return image_folder_datasets(str(data_dir), train_split, val_split, subset_per_class, scan=scan,
                                     skip_bad=skip_bad, progress=progress)
    root = _data_root(ds, data_dir)
    if ds.iterable:
        if subset_per_class:
            raise DataError(f"data: data.subset_per_class is for sources read by index (folder, tar, torch/, "
                            f"hfds/), not the stream {ds}; set it to 0")
        scan_on = scan.enabled if isinstance(scan, ScanPolicy) else bool(scan)
        return _open_stream(ds, root, train_split, val_split, scan=scan_on, skip_bad=skip_bad, download=download)
    names = [_split_name(ds, root, split) for split in (train_split, val_split)]
    train = _open_indexed(ds, root, names[0], download=download, skip_bad=skip_bad)
    val = _open_indexed(ds, root, names[1], download=download, skip_bad=skip_bad,
                        class_to_idx=train.class_to_idx if ds.kind == "torch" else None)
    if ds.kind == "hfds" and val.classes != train.classes:
        raise DataError(f"data: {ds}: the splits {names[0]} and {names[1]} have different classes")
    if subset_per_class > 0:
        for split_data in (train, val):
            split_data.keep_first_per_class(subset_per_class)
    return train, val, []


def _open_stream(ds: DataSpec, root: str | None, train_split: str, val_split: str, *, scan: bool, skip_bad: bool,
                 download: bool) -> tuple[StreamingSource, EvalStream, list]:
    """``wds/`` and ``hfids/``: the split file (wds: each shard checked) and the class names, then timm's
    iterable data sets."""
    info_path, info = (None, {})
    splits = []
    for split in (train_split, val_split):
        if ds.kind == "hfids":
            splits.append(_split_name(ds, root, split))
        elif "tar" in split or ".." in split:  # timm's shard pattern (dataset-train-{0000..0099}.tar|N): as given
            splits.append(split)
        else:
            if info_path is None:
                info_path, info = _wds_info(root)
                if info_path is None:
                    raise DataError(f"data: {ds}: no split file in {root} (timm reads _info.json or info.json: "
                                    "{\"splits\": {\"train\": {\"num_samples\", \"filenames\", \"shard_lengths\"}, "
                                    "...}}); write one, or give shard patterns as --train-split / --val-split")
            name = pick_split(split, list(info.get("splits") or {}), f"{ds} ({info_path})")
            check_wds_shards(root, info["splits"][name], f"{ds} split '{name}'", count=scan)
            splits.append(name)
    options = dict(download=download, input_img_mode="") if ds.kind == "hfids" else dict(input_img_mode="")
    probe = _timm_create(ds, root, splits[0], is_training=True, **options)
    if not len(probe):
        raise DataError(f"data: {ds} split '{splits[0]}' holds no samples")
    classes = _stream_classes(ds, info, info_path, probe.reader)
    make = functools.partial(_timm_create, ds, root, splits[0], is_training=True, **options)
    train = StreamingSource(make, source=f"{ds}:{splits[0]}", classes=classes,
                            num_samples=int(getattr(probe.reader, "num_samples", len(probe))), skip_bad=skip_bad)
    val = EvalStream(_timm_create(ds, root, splits[1], is_training=False, **options), source=f"{ds}:{splits[1]}")
    return train, val, []


def open_split(spec: str | None, data_dir: str | os.PathLike | None, split: str, *,
               download: bool = False) -> SourceDataset:
    """One split of a source read by index (``tricks validate``): the default source's folder or ``.tar`` split,
    ``torch/NAME`` or ``hfds/NAME``, as :func:`open_datasets` reads it, unchecked and unscanned. A stream
    (``wds/``, ``hfids/``) is a :class:`DataError`."""
    ds = parse_dataset_spec(spec)
    if ds.iterable:
        raise DataError(f"data: --dataset {ds} is a stream; scoring reads sources by index (folder, tar, torch/, "
                        "hfds/): write the split as a folder, a tar file or a Hugging Face data set")
    if ds.kind == "folder":
        root = str(data_dir) if data_dir else None
        if not root or not Path(root).is_dir():
            raise DataError(f"data: --data-dir {root} is not a folder")
        path = find_split_source(Path(root), split)
        return ImageFolderDataset(path) if path.is_dir() else tar_dataset(path, skip_bad=False)
    root = _data_root(ds, data_dir)
    return _open_indexed(ds, root, _split_name(ds, root, split), download=download)


def download_dataset(spec: str | None, data_dir: str | os.PathLike | None, splits: Sequence[str]) -> None:
    """Download a source's splits into ``data_dir`` where its library can (torchvision's ``torch/NAME``; Hugging
    Face's ``hfds/`` and ``hfids/`` into the cache ``data_dir``); folders and webdataset shards are the user's
    to bring, so nothing happens for them. Run it once, in one process, before training."""
    ds = parse_dataset_spec(spec)
    root = str(data_dir) if data_dir else None
    if ds.kind == "torch":
        if not root:
            raise DataError(f"data: --dataset-download {ds} needs --data-dir (where to put it)")
        for split in splits:
            _timm_create(ds, root, split, download=True)
    elif ds.kind in ("hfds", "hfids"):
        import datasets

        try:
            datasets.load_dataset_builder(ds.name, cache_dir=root).download_and_prepare()
        except Exception as err:  # noqa: BLE001
            raise DataError(f"data: --dataset-download {ds}: {first_line(err)}") from None
