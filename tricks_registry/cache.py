"""Where timm-tricks keeps what it can make again: recipes pulled from the Hub, the small ``--demo`` teachers, and
the model names timm knew (so that checking a distillation teacher's name does not import timm every time).

``$TIMM_TRICKS_CACHE``, else ``$XDG_CACHE_HOME/timm-tricks``, else ``~/.cache/timm-tricks``.
"""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from .fsutil import atomic_write_text

__all__ = ["cache_dir", "known_timm_model"]


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    root = os.environ.get("TIMM_TRICKS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "timm-tricks")
    return Path(root)


def _timm_names_file() -> Path | None:
    try:
        timm_version, ours = metadata.version("timm"), metadata.version("timm-tricks")
    except metadata.PackageNotFoundError:
        return None
    return cache_dir() / "timm-models" / f"timm-{timm_version}_timm-tricks-{ours}.txt"


def known_timm_model(arch: str) -> bool:
    """Whether timm, with this package's ResNet-A/B/C/D variants registered, has the architecture ``arch``.

    Asking timm means importing it (and torch: seconds), so the names it knew are kept in the cache folder, one
    file per timm and timm-tricks version, and a name found there is answered without timm. Only a yes is taken
    from the file: any other name is asked of timm itself (which also knows the models of plugins imported in
    this process), and the file is written then if it was missing.
    """
    names_file = _timm_names_file()
    if names_file is not None:
        try:
            if arch in names_file.read_text().split():
                return True
        except OSError:
            pass
    import timm

    import model_tweaks  # noqa: F401  (registers the _v1a/_v1b/_v1c/_v1d names into timm)

    known = timm.is_model(arch)
    if names_file is not None and not names_file.is_file():
        try:
            atomic_write_text(names_file, "\n".join(timm.list_models()) + "\n")
        except OSError:  # a read-only cache only costs the next check its import of timm
            pass
    return known
