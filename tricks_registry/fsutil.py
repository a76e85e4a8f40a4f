"""Files on the ground floor, torch-free and used by every module that writes: atomic writes, hard links of
identical files, the exclusive lock a run folder (or a demo teacher's cache folder) is held by, and YAML read
with the line of every key.

- :func:`atomic_write_bytes` writes a temporary file in the target's folder, flushes it to disk and renames it
  over the target, so a crash or a kill leaves the old file or the new one, never half of one. The new file gets
  the mode a plain ``open()`` would give it under the process's umask (0644 under 022), not the 0600 that
  ``tempfile.mkstemp`` makes: a colleague can read a shared run, its export and its checkpoints.
- :func:`link_or_copy` makes ``dst`` another name of ``src`` (a hard link, put in place by rename), or a copy
  where the file system has no hard links: weight files that hold the same bytes are stored once.
- :class:`ExclusiveLock` is an ``fcntl`` lock on a file: it is released by the kernel when the holding process
  ends, however it ends (``kill -9`` included), so a lock left by a dead process never blocks the next one. The
  holder writes ``host pid`` into the file, so the one refused can say who holds it.
- :func:`load_yaml_with_lines` safe-loads YAML and maps every key path to its line, so that an error about a
  recipe (or a timm ``args.yaml``) names the line; PyYAML is imported when it is first called.
"""
from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["process_umask", "file_mode", "atomic_write_bytes", "atomic_write_text", "link_or_copy", "ExclusiveLock",
           "LockHeld", "lock_holder", "YamlProblem", "load_yaml_with_lines"]


def process_umask() -> int:
    """This process's umask, read without changing it (Linux ``/proc/self/status``), else by setting and
    restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a file that ``open(path, "w")`` creates now: ``0o666`` less the umask."""
    return 0o666 & ~process_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename), with the mode
    of :func:`file_mode`. The folder is created when missing; on any error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Make ``dst`` hold ``src``'s bytes: a hard link put in place by rename (no second copy on disk; True), or,
    where the file system has no hard links, an atomic copy (False). ``src`` and ``dst`` are in one folder tree
    whose files are only ever replaced by rename, never written in place, so a later write to one name never
    changes the other."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        return True
    tmp = dst.with_name(f".{dst.name}.link-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
        return True
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
    with open(src, "rb") as f:  # no hard links here (another file system, FAT, some network mounts)
        atomic_write_bytes(dst, f.read())
    return False


class LockHeld(OSError):
    """:class:`ExclusiveLock` found the lock taken; ``holder`` is what the holder wrote (``host pid``), or ''."""

    def __init__(self, path: Path, holder: str):
        self.path, self.holder = path, holder
        super().__init__(errno.EWOULDBLOCK, f"{path} is locked" + (f" by {holder}" if holder else ""))


def lock_holder(path: str | os.PathLike) -> str:
    """What the holder of the lock file ``path`` wrote into it (``host pid``), or '' when unknown."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


class ExclusiveLock:
    """An exclusive ``fcntl.flock`` on ``path`` (created with :func:`file_mode`) for the life of a ``with`` block or
    between :meth:`acquire` and :meth:`release`. ``wait=False`` raises :class:`LockHeld` at once when another
    process holds it; ``wait=True`` blocks, first calling ``on_wait(holder)``. The kernel releases the lock when
    the holding process ends, however it ends. Without ``fcntl`` (not POSIX) there is no lock.

    A ``flock`` belongs to the open file, and a forked child (a data-loader worker) inherits it: after a ``kill -9``
    of the holder its workers would keep the lock for the seconds they take to notice. So every forked child closes
    its copies of the held locks' descriptors at once (``os.register_at_fork``): the lock is the holder's alone."""

    def __init__(self, path: str | os.PathLike, *, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.path, self.wait, self.on_wait = Path(path), wait, on_wait
        self._fd: int | None = None

    def acquire(self) -> "ExclusiveLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = lock_holder(self.path)
                if not self.wait:
                    raise LockHeld(self.path, holder) from None
                if self.on_wait is not None:
                    self.on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD_LOCKS.add(self)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD_LOCKS.discard(self)
        try:
            import fcntl

            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _forget_in_child(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking (that would unlock the parent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "ExclusiveLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD_LOCKS: set[ExclusiveLock] = set()  # held until released (or the process ends), whoever still refers to them


def _close_held_locks_in_child() -> None:
    for lock in list(_HELD_LOCKS):
        lock._forget_in_child()
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_locks_in_child)


class YamlProblem(ValueError):
    """:func:`load_yaml_with_lines` could not read the text. ``line`` is the 1-based line (None when unknown);
    ``error`` is PyYAML's error (None for a key given twice, whose path is ``key``); ``tag`` is True when a YAML
    tag (``!!python/...``) was refused, which safe loading never constructs."""

    def __init__(self, message: str, *, line: int | None = None, key: str | None = None,
                 error: Exception | None = None, tag: bool = False) -> None:
        super().__init__(message)
        self.line, self.key, self.error, self.tag = line, key, error, tag


def load_yaml_with_lines(text: str, *, unique_keys: bool = True) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Safe-load ``text``: the data and the 1-based line of every key path (``("train", "epochs") -> 12``).

    With ``unique_keys`` a key given twice in one mapping is a :class:`YamlProblem` (YAML itself silently keeps
    the last one); without it the later key's line is kept, as its value is. Text that is not YAML, or holds a
    tag, is a :class:`YamlProblem` naming the line."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise YamlProblem(str(err), line=mark.line + 1 if mark else None, error=err,
                          tag=isinstance(err, yaml.constructor.ConstructorError)) from None
    lines: dict[tuple[str, ...], int] = {}

    def walk(n: Any, path: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                key = str(k.value)
                if unique_keys and key in seen:
                    raise YamlProblem("key given twice", line=k.start_mark.line + 1, key=".".join(path + (key,)))
                seen.add(key)
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))

    if node is not None:
        walk(node, ())
    return data, lines
