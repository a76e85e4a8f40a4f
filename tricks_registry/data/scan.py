"""The bad-image scan, once per data set: every file decoded at most once across all processes, and the result
kept (in the run folder for ``--resume``, in the user's cache for the next run on the same files).

Before the first step a run checks that every image file of a folder source decodes (:mod:`.folders`), because a
bad JPEG found on day 3 of an ImageNet run costs the run. On ImageNet that is 1.28 M decodes (about 38
CPU-minutes at 1.7 ms each), so:

- **Shared over processes.** Each of the ``world_size`` processes stats and decodes every ``world_size``-th file
  of the (identically ordered) file list; the results are gathered, so every rank ends with the same bad-image
  list, in the file list's order. The main process alone decides which files need decoding, so a cache that only
  it can see still gives every rank the same answer.
- **Kept.** What is known about a file is keyed by what the file is: its path relative to the data folder, its
  size and its modification time (the quick check of make and rsync). :class:`ScanTable` holds those keys and the
  reason of every bad file; it is written atomically into the run folder (``scan.npz``, read first by
  ``--resume``) and into ``<cache>/scans/<hash of the data folder>.npz`` (read by a new run on the same folder).
  A changed, added or removed file is decoded; the rest is not. ``rescan`` ignores both; no scan at all is the
  caller's choice (``--no-scan``).

The table stores the paths as one NUL-separated UTF-8 string and the sizes and times as int64 arrays
(``numpy.savez``): about 60 MB for ImageNet, read in a second.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch.distributed as dist
from tqdm import tqdm

from ..cache import cache_dir
from ..distributed import DistInfo, gather
from ..fsutil import atomic_write_bytes

__all__ = ["ScanTable", "ScanPolicy", "ScanResult", "scan_files", "scan_cache_file", "file_stats", "SCAN_TABLE_VERSION"]

SCAN_TABLE_VERSION = 1
#: files handed to the decoding threads at a time (``ThreadPoolExecutor.map`` makes a future per file at once: for
#: ImageNet's 1.28 M files, over a GB)
SCAN_BLOCK = 4096


@dataclass
class ScanTable:
    """What is known about the files of one data folder: ``paths`` (relative to it, in the file list's order),
    their ``sizes`` and ``mtimes`` (``st_mtime_ns``) when they were decoded, and ``bad``: row -> why it does not
    decode (every other row decoded)."""

    paths: list[str]
    sizes: np.ndarray
    mtimes: np.ndarray
    bad: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        rows = np.fromiter(self.bad, dtype=np.int64, count=len(self.bad))
        reasons = "\0".join(self.bad[int(r)] for r in rows)
        np.savez(buffer, version=np.int64(SCAN_TABLE_VERSION),
                 paths=np.frombuffer("\0".join(self.paths).encode("utf-8"), dtype=np.uint8),
                 sizes=np.asarray(self.sizes, dtype=np.int64), mtimes=np.asarray(self.mtimes, dtype=np.int64),
                 bad_rows=rows, bad_reasons=np.frombuffer(reasons.encode("utf-8"), dtype=np.uint8))
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        """Write the table to ``path`` atomically."""
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScanTable | None":
        """The table at ``path``; None when it is missing, unreadable or of another version (it is then as if
        nothing were known: the files are decoded again)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != SCAN_TABLE_VERSION:
                    return None
                blob = data["paths"].tobytes().decode("utf-8")
                paths = blob.split("\0") if blob else []
                sizes, mtimes = data["sizes"].astype(np.int64), data["mtimes"].astype(np.int64)
                rows = data["bad_rows"].astype(np.int64)
                reasons_blob = data["bad_reasons"].tobytes().decode("utf-8")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        reasons = reasons_blob.split("\0") if len(rows) else []
        if not (len(paths) == len(sizes) == len(mtimes)) or len(reasons) != len(rows):
            return None
        return cls(paths, sizes, mtimes, {int(r): why for r, why in zip(rows, reasons)})

    def merged_into(self, older: "ScanTable | None") -> "ScanTable":
        """This table plus the rows of ``older`` for files this one does not list (a run on a subset of the
        folder keeps what the cache knows of the rest)."""
        if older is None or not len(older):
            return self
        mine = set(self.paths)
        keep = [i for i, p in enumerate(older.paths) if p not in mine]
        if not keep:
            return self
        base = len(self.paths)
        bad = dict(self.bad)
        bad.update({base + j: older.bad[i] for j, i in enumerate(keep) if i in older.bad})
        index = np.asarray(keep, dtype=np.int64)
        return ScanTable(self.paths + [older.paths[i] for i in keep], np.concatenate([self.sizes, older.sizes[index]]),
                         np.concatenate([self.mtimes, older.mtimes[index]]), bad)


@dataclass(frozen=True)
class ScanPolicy:
    """How a run scans: ``enabled`` (``--no-scan`` turns it off), ``rescan`` (``--rescan``: decode every file
    whatever is known), ``run_record`` (a resumed run folder's ``scan.npz``, trusted first), ``use_cache`` (the
    user's cache folder) and ``env`` (the processes that share the work; None: this process alone)."""

    enabled: bool = True
    rescan: bool = False
    run_record: Path | None = None
    use_cache: bool = True
    env: DistInfo | None = None


@dataclass
class ScanResult:
    """What a scan found and did: ``bad`` as ``(absolute path, reason)`` in the file list's order (the same on
    every rank), the ``table`` of the files scanned (for the run folder), the number of ``files``, the files
    ``decoded`` by each rank, how many were ``reused`` from what was known and from where (``known_from``)."""

    bad: list[tuple[str, str]]
    table: ScanTable
    files: int
    decoded: list[int]
    reused: int
    known_from: str

    def describe(self) -> str:
        how = (f"{self.reused} known from {self.known_from}, " if self.reused else "")
        return (f"scan: {self.files} image file(s): {how}{sum(self.decoded)} decoded"
                + (f" ({' + '.join(map(str, self.decoded))} over {len(self.decoded)} processes)"
                   if len(self.decoded) > 1 else "") + f", {len(self.bad)} bad")

    def to_json(self) -> dict:
        return {"files": self.files, "decoded_per_rank": self.decoded, "reused": self.reused,
                "known_from": self.known_from, "bad": len(self.bad)}


def scan_cache_file(root: str | os.PathLike) -> Path:
    """``<cache>/scans/<16 hex digits of the data folder's absolute path>.npz``: the scan table of that folder."""
    key = hashlib.sha256(str(Path(root).resolve()).encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "scans" / f"{key}.npz"


def file_stats(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, ``st_mtime_ns``) of ``paths`` as int64 arrays; -1 for a file that cannot be stat'ed (it is then
    decoded, and the decode names the problem)."""
    sizes = np.full(len(paths), -1, dtype=np.int64)
    mtimes = np.full(len(paths), -1, dtype=np.int64)
    for i, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns
    return sizes, mtimes


def _unchanged(rel: list[str], sizes: np.ndarray, mtimes: np.ndarray, known: ScanTable | None) -> tuple[np.ndarray, dict[int, str]]:
    """(a boolean per file: known and unchanged, the known reasons of the unchanged bad files by row)."""
    ok = np.zeros(len(rel), dtype=bool)
    if known is None or not len(known):
        return ok, {}
    if known.paths == rel:  # the same files in the same order: compare the arrays
        rows = np.arange(len(rel))
    else:
        where = {p: i for i, p in enumerate(known.paths)}
        rows = np.fromiter((where.get(p, -1) for p in rel), dtype=np.int64, count=len(rel))
    found = rows >= 0
    safe = np.where(found, rows, 0)
    ok = found & (known.sizes[safe] == sizes) & (known.mtimes[safe] == mtimes) & (sizes >= 0)
    bad = {i: known.bad[int(rows[i])] for i in np.flatnonzero(ok) if int(rows[i]) in known.bad}
    return ok, bad


def scan_files(paths: Sequence[str], root: str | os.PathLike, check: Callable[[str], str | None], *,
               policy: ScanPolicy = ScanPolicy(), progress: bool = True) -> ScanResult:
    """Check every file of ``paths`` (absolute, under ``root``) with ``check`` (returns why a file is bad, or
    None), at most once across the processes of ``policy.env`` and not at all for a file that ``policy``'s run
    record or cache knows unchanged. Every rank must call it with the same ``paths``; every rank gets the same
    result. The main process writes the cache (atomically)."""
    env = policy.env
    world, rank = (env.world_size, env.rank) if env is not None and env.distributed else (1, 0)
    main = rank == 0
    root = Path(root)
    rel = [os.path.relpath(p, root) for p in paths]

    # ---- the files' keys: each rank stats its share, every rank gets all
    mine = np.arange(rank, len(paths), world)
    sizes_part, mtimes_part = file_stats([paths[i] for i in mine])
    sizes, mtimes = np.empty(len(paths), dtype=np.int64), np.empty(len(paths), dtype=np.int64)
    for r, (s, m) in enumerate(gather((sizes_part, mtimes_part), env) if world > 1 else [(sizes_part, mtimes_part)]):
        sizes[r::world], mtimes[r::world] = s, m

    # ---- what is known (the main process decides, and tells the others)
    todo: np.ndarray
    known_bad: dict[int, str] = {}
    known_from = "nothing"
    cache_file = scan_cache_file(root) if policy.use_cache else None
    cached: ScanTable | None = None
    if main:
        ok = np.zeros(len(paths), dtype=bool)
        if not policy.rescan:
            for name, source in (("the run folder", policy.run_record), ("the cache", cache_file)):
                if source is None or ok.all():
                    continue
                table = ScanTable.load(source)
                if source == cache_file:
                    cached = table
                more, bad = _unchanged(rel, sizes, mtimes, table)
                more &= ~ok
                if more.any():
                    known_from = name if known_from == "nothing" else f"{known_from} and {name}"
                known_bad.update({i: why for i, why in bad.items() if more[i]})
                ok |= more
        elif cache_file is not None:
            cached = ScanTable.load(cache_file)
        todo = np.flatnonzero(~ok)
        decision = [todo, known_bad, known_from]
    else:
        decision = [None, None, None]
    if world > 1:
        dist.broadcast_object_list(decision, src=0)
    todo, known_bad, known_from = decision

    # ---- decode this rank's share of what is not known
    share = todo[rank::world]
    workers = max(1, min(32, (os.cpu_count() or 1) * 2 // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))

    def one(i: int) -> tuple[int, str] | None:
        why = check(paths[i])
        return None if why is None else (int(i), why)

    found: list[tuple[int, str]] = []
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(share), desc="scanning images", leave=False,
                                                   disable=not (progress and main) or len(share) < 2000) as bar:
        for start in range(0, len(share), SCAN_BLOCK):  # a block at a time: a future per file costs memory
            block = share[start:start + SCAN_BLOCK]
            found += [r for r in pool.map(one, block) if r is not None]
            bar.update(len(block))
    per_rank = gather((found, len(share)), env) if world > 1 else [(found, len(share))]
    bad_rows = dict(known_bad)
    for rows, _ in per_rank:
        bad_rows.update(dict(rows))
    table = ScanTable(rel, sizes, mtimes, {i: bad_rows[i] for i in sorted(bad_rows)})
    if main and cache_file is not None and len(todo):
        try:
            table.merged_into(cached).save(cache_file)
        except OSError:  # a read-only or full cache costs the next run its scan, not this run
            pass
    return ScanResult(bad=[(paths[i], bad_rows[i]) for i in sorted(bad_rows)], table=table, files=len(paths),
                      decoded=[n for _, n in per_rank], reused=len(paths) - len(todo), known_from=known_from)
