"""A split's samples held as numpy arrays, which data-loader workers share with the main process instead of
copying (a list of Python objects is copied into every worker page by page as it is read: PyTorch issue 13246):
:class:`PackedStrings`, and timm's folder and tar readers as arrays (:class:`FolderArrayReader`,
:class:`TarArrayReader`)."""
from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["PackedStrings", "ArrayReader", "FolderArrayReader", "TarArrayReader"]


class PackedStrings:
    """Many strings as one UTF-8 byte array and an int64 offset array: a data-loader worker reads them without
    touching a Python object's reference count, so the pages it reads stay shared with the main process after
    ``fork`` (a list of ``(path, target)`` tuples is copied into every worker page by page as it is read: PyTorch
    issue 13246; for ImageNet's 1.28 M paths, about 150 MB per worker)."""

    def __init__(self, strings: Sequence[str]):
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self.blob[self.offsets[index]:self.offsets[index + 1]].tobytes().decode("utf-8")


class ArrayReader:
    """What the two array readers share: ``targets`` (int64), the length, and timm's ``filenames``."""

    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        raise NotImplementedError

    def filenames(self, basename: bool = False, absolute: bool = False) -> list[str]:
        return [self.filename(i, basename, absolute) for i in range(len(self))]


class FolderArrayReader(ArrayReader):
    """timm's folder reader (``ReaderImageFolder``: the same files, order, targets and class indices) with its
    samples held as arrays (:class:`PackedStrings` of absolute paths, int64 targets) that workers share without
    copying. ``reader[i]`` is timm's: an open binary file and the target."""

    def __init__(self, root: str, paths: Sequence[str], targets: Sequence[int], class_to_idx: dict[str, int]):
        self.root = root
        self.paths = PackedStrings(paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.class_to_idx = dict(class_to_idx)

    @classmethod
    def from_timm(cls, reader: Any) -> "FolderArrayReader":
        samples = reader.samples
        return cls(str(reader.root), [p for p, _ in samples], [t for _, t in samples], reader.class_to_idx)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return open(self.paths[index], "rb"), int(self.targets[index])

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        path = self.paths[index]
        if basename:
            return os.path.basename(path)
        return path if absolute else os.path.relpath(path, self.root)


class TarArrayReader(ArrayReader):
    """timm's reader of one ``.tar`` split (``ReaderImageInTar``: the same members, order and targets) with each
    member's name, data offset and size held as arrays; ``reader[i]`` reads the member's bytes from the file at
    its offset (each call opens the file itself, so forked workers share no file offset)."""

    def __init__(self, root: str, names: Sequence[str], offsets: Sequence[int], sizes: Sequence[int],
                 targets: Sequence[int], class_to_idx: dict[str, int]):
        self.root = root
        self.names = PackedStrings(names)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.class_to_idx = dict(class_to_idx)

    @classmethod
    def from_timm(cls, reader: Any) -> "TarArrayReader | Any":
        """The array reader of a one-level tar reader; timm's own reader where members sit in nested tars or
        are sparse (read through ``tarfile`` as timm does)."""
        samples = getattr(reader, "samples", None)
        if not getattr(reader, "root_is_tar", False) or samples is None or any(
                child is not None or info.issparse() for info, _parent, child in samples):
            return reader
        return cls(str(reader.root), [info.name for info, _, _ in samples], [info.offset_data for info, _, _ in samples],
                   [info.size for info, _, _ in samples], list(reader.targets),
                   getattr(reader, "class_name_to_idx", None) or {})

    def __getitem__(self, index: int) -> tuple[Any, int]:
        with open(self.root, "rb") as f:
            f.seek(int(self.offsets[index]))
            data = f.read(int(self.sizes[index]))
        if len(data) != int(self.sizes[index]):
            raise OSError(f"{self.root}: member {self.names[index]} is cut short (truncated tar file)")
        return io.BytesIO(data), int(self.targets[index])

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        name = self.names[index]
        return os.path.basename(name) if basename else name
