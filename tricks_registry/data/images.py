"""Images decoded to 8-bit RGB, and an unreadable one named: :func:`to_rgb` (grayscale, palette, RGBA, CMYK and
16-bit images), :func:`decode_image` (a truncated or unreadable file is a :class:`BadImageError` with its name),
:func:`check_image` and :func:`scan_images` (every file decoded here and now, in threads)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DataError

__all__ = ["BadImageError", "DECODE_ERRORS", "to_rgb", "decode_image", "check_image", "scan_images"]


class BadImageError(DataError, OSError):
    """An image file (or a stream's sample) that cannot be read or decoded. ``path`` and ``reason`` say which and
    why, where known (:meth:`unreadable`); ``str()`` is the message, which names the file.

    A data-loader worker's error reaches the main process as its traceback text, the only argument torch's
    ``ExceptionWrapper`` gives the re-raised error: :attr:`summary` is the worker's own message then."""

    def __init__(self, message: str, *, path: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.message, self.path, self.reason = message, path, reason

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:  # pickles with its fields (a worker's error, a spawned process's)
        return _bad_image_error, (self.message, self.path, self.reason)

    @classmethod
    def unreadable(cls, path: str, reason: object) -> "BadImageError":
        """``path: unreadable image (reason)``, with ``path`` and ``reason`` as fields."""
        return cls(f"{path}: unreadable image ({reason})", path=path, reason=str(reason))

    @property
    def summary(self) -> str:
        """One line: the message, or, for a worker's error carried as its traceback, the worker's message."""
        lines = self.message.strip().splitlines()
        if len(lines) <= 1:
            return self.message.strip()
        return lines[-1].split(f"{type(self).__name__}: ", 1)[-1]


def _bad_image_error(message: str, path: str | None, reason: str | None) -> BadImageError:
    return BadImageError(message, path=path, reason=reason)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: grayscale, palette (with or without transparency), RGBA/LA (alpha
    dropped, as torchvision's and timm's loaders do), CMYK, and 16/32-bit grayscale (scaled to 8 bits)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


#: what PIL raises for a file that does not decode (truncated, not an image, a decompression bomb)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(source: str | os.PathLike | Any, name: str) -> Image.Image:
    """Open and fully decode an image (a path or a binary file object, which is closed) as RGB (:func:`to_rgb`);
    a truncated or unreadable one raises :class:`BadImageError` naming ``name``."""
    try:
        with Image.open(source) as img:
            img.load()  # decode now: a truncated file fails here, with its name
            return to_rgb(img)
    except DECODE_ERRORS as err:
        raise BadImageError.unreadable(name, err) from None
    finally:
        if hasattr(source, "close"):
            source.close()


def _open_rgb(path: str) -> Image.Image:
    return decode_image(path, path)


def check_image(path: str) -> str | None:
    """Why the image file at ``path`` does not decode (:func:`decode_image`), or None when it does."""
    try:
        _open_rgb(path)
    except BadImageError as err:
        return f"unreadable image ({err.reason})"
    return None


def scan_images(paths: Sequence[str], workers: int = 8, progress: bool = True) -> list[tuple[str, str]]:
    """Open and fully decode every image here and now (threads: PIL decodes without the GIL), nothing cached;
    returns ``(path, reason)`` for each bad one. Training scans through :func:`.scan.scan_files` instead: once
    per data set, shared over processes, kept."""
    bad: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(paths), desc="scanning images", leave=False,
                                                           disable=not progress or len(paths) < 2000) as bar:
        for start in range(0, len(paths), 4096):  # a block at a time: a future per file costs memory
            block = paths[start:start + 4096]
            bad += [(p, why) for p, why in zip(block, pool.map(check_image, block)) if why is not None]
            bar.update(len(block))
    return bad

