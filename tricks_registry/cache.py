"""Where timm-tricks keeps what it can make again: recipes pulled from the Hub, the small ``--demo`` teachers.

``$TIMM_TRICKS_CACHE``, else ``$XDG_CACHE_HOME/timm-tricks``, else ``~/.cache/timm-tricks``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    root = os.environ.get("TIMM_TRICKS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "timm-tricks")
    return Path(root)
