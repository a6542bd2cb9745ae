"""The durable spool: ``log()`` events written to disk until the service acknowledges them.

Each session, in each process, owns one directory::

    <root>/<pid>-<random>/
        meta.json        {"host": ..., "pid": ..., "created_at_ms": ...}  (no secrets)
        lock             held (flock) for as long as the owning process lives
        b-000000001.jsonl  one batch: a header line {"experiment_id": ..., "format": 2}, then
        b-000000002.jsonl  one JSON array of events per line, appended while the batch fills
        c-000000003.json   a control record (a creation, status change or annotation waiting
                           with the events; numbered in the same sequence as the batches)
        children/<pid>-<random>/   the spools of sessions used in forked children
        damaged/           batches ``sync`` could not read whole, set aside with the reason

Every line starts with the CRC-32 of the rest of the line (8 hex digits and a space), so a
changed byte or a line cut short is found and reported, never sent or skipped silently
(:mod:`~syvain_metrics.pipeline.spool_files` writes and reads the lines).

A batch file is removed once the service acknowledged (or finally rejected) its events,
and an empty directory is removed when its session closes. A directory whose lock is free
belongs to a process that died: ``syvain-metrics sync`` replays it, with the same event ids,
so whatever the dead process had already delivered is not stored twice. Everything is
created readable by the user alone (directories 0700, files 0600); a directory the SDK did
not create (a shared spool root, say) is used as it is, never chmodded, and each session
spools in a directory of its own inside it. API keys and ingestion tokens are never written.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> spool = Spool.create(root / new_spool_name(), host="http://127.0.0.1:8765")
    >>> path = spool.append("exp-1", 1, [Chunk(1, b'[{"client_event_id":"a"}]')])
    >>> from syvain_metrics.pipeline.spool_files import read_batch
    >>> read_batch(path)
    ('exp-1', [Chunk(size=1, array=b'[{"client_event_id":"a"}]')])
    >>> spool.seal(path); path.unlink(); spool.close()
    >>> list(root.iterdir())
    []
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syvain_metrics.pipeline.batch import Chunk
from syvain_metrics.pipeline.spool_files import checked_line

_flock: Callable[[int, int], Any] | None
try:
    import fcntl

    _flock = fcntl.flock
    _LOCK_NOW = fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # pragma: no cover - no flock (Windows): spools never count as dead
    _flock = None
    _LOCK_NOW = 0

BATCH_GLOB = "b-*.jsonl"
CONTROL_GLOB = "c-*.json"
"""Control records (:mod:`~syvain_metrics.pipeline.control`): creations, status changes and
annotations waiting with the events."""
CHILDREN = "children"
DAMAGED = "damaged"
FORMAT = 2
"""The spool format written: 2 has a CRC-32 on every line (1 had none, and is still read)."""


def default_root() -> Path:
    """``$XDG_CACHE_HOME/syvain-metrics/spool``, by default ``~/.cache/syvain-metrics/spool``.

    Example:
        >>> default_root().name
        'spool'
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "syvain-metrics" / "spool"


def configured_root() -> Path:
    """``$SYVAIN_METRICS_SPOOL_DIR`` when set, else :func:`default_root`.

    Example:
        >>> isinstance(configured_root(), Path)
        True
    """
    configured = os.environ.get("SYVAIN_METRICS_SPOOL_DIR")
    return Path(configured) if configured else default_root()


def new_spool_name() -> str:
    """A directory name for one session in one process: ``<pid>-<random>``."""
    return f"{os.getpid()}-{os.urandom(4).hex()}"


def _my_uid() -> int | None:
    geteuid = getattr(os, "geteuid", None)
    return None if geteuid is None else int(geteuid())


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700. A directory that exists already
    is left exactly as it is: it may be shared (a 1777 directory, say), and its mode is its
    owner's business; what the SDK puts inside is private anyway."""
    missing = []
    here = path
    while not os.path.lexists(here):
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to change
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask


class UntrustedSpoolError(PermissionError):
    """A spool directory found in place already that is not a real directory of this user's
    (another user's, or a link): it is never written into, and trying again cannot help.

    Example:
        >>> isinstance(UntrustedSpoolError("/tmp/x is a link"), PermissionError)
        True
    """


def _own_private_dir(path: Path) -> None:
    """``path`` as a directory of this user's: created 0700, or found already as a real
    directory (not a link) owned by this user, which only the SDK makes (a child process
    may make its parent's spool directory first)."""
    _make_dirs(path)
    info = os.lstat(path)
    uid = _my_uid()
    if not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
        raise UntrustedSpoolError(
            f"{path} exists and is not a directory of this user's: not used as a spool"
        )


def _open_private(path: Path, flags: int) -> int:
    """Open (creating) a spool file readable by its owner only: 0600 whatever the umask,
    and a file found there already is made so too (events may carry what others must not
    read)."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    if hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, 0o600)
        except OSError:
            os.close(fd)
            raise
    return fd


def _try_lock(fd: int) -> bool:
    if _flock is None:  # pragma: no cover
        return False
    try:
        _flock(fd, _LOCK_NOW)
    except OSError:
        return False
    return True


class Spool:
    """One session's spool directory in one process (see the module docstring)."""

    def __init__(self, directory: Path, lock_fd: int) -> None:
        self.directory = directory
        self._lock_fd = lock_fd
        self._open: dict[Path, int] = {}
        self._sizes: dict[Path, int] = {}

    @classmethod
    def create(cls, directory: Path, *, host: str) -> Spool:
        """Make ``directory`` (it may exist already, holding children's spools) and lock it
        before anyone can see the lock: the lock file is taken under a private name, then
        renamed into place, so a scan never finds it free while this process lives.

        Raises :class:`UntrustedSpoolError` for a directory found there that is not this
        user's, and ``OSError`` when it cannot be made now (a full disk, say): then nothing
        is left behind but the directories, so trying again later is cheap."""
        _make_dirs(directory.parent)
        _own_private_dir(directory)
        building = directory / f"lock.{os.urandom(4).hex()}"
        meta_path = directory / "meta.json"
        lock_fd = _open_private(building, os.O_RDWR)
        try:
            _try_lock(lock_fd)
            meta = {"host": host, "pid": os.getpid(), "created_at_ms": int(time.time() * 1000)}
            meta_fd = _open_private(meta_path, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(meta_fd, "w") as handle:
                json.dump(meta, handle)
            os.rename(building, directory / "lock")
        except BaseException:
            os.close(lock_fd)
            for path in (building, meta_path):
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):
                _remove_if_empty(directory)
            raise
        return cls(directory, lock_fd)

    def append(self, experiment_id: str, number: int, chunks: list[Chunk]) -> Path:
        """Append chunks of events, one line each, to batch file ``number`` (created with its
        header on first use). A failed write (a full disk) leaves the file as it was: a new
        file is removed, a partial line is cut off again, and the error is raised."""
        path = self.directory / f"b-{number:09d}.jsonl"
        fd = self._open.get(path)
        lines = []
        new = fd is None
        if fd is None:
            fd = self._open[path] = _open_private(path, os.O_WRONLY | os.O_APPEND)
            header = json.dumps({"experiment_id": experiment_id, "format": FORMAT})
            lines.append(checked_line(header.encode()))
        lines.extend(checked_line(chunk.array) for chunk in chunks)
        # One write per pass: a kill leaves whole lines, or a torn last one that reading reports.
        whole = b"\n".join(lines) + b"\n"
        data = memoryview(whole)
        start = self._sizes.get(path, 0)
        try:
            while data:
                written = os.write(fd, data)  # short on a filling disk: write the rest, or raise
                data = data[written:]
        except OSError:
            if new:
                self.seal(path)
                with contextlib.suppress(OSError):
                    path.unlink()
            else:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            raise
        self._sizes[path] = start + len(whole)
        return path

    def seal(self, path: Path) -> None:
        """No more events go to ``path``: close its descriptor."""
        fd = self._open.pop(path, None)
        self._sizes.pop(path, None)
        if fd is not None:
            with contextlib.suppress(OSError):  # the data is written; a failing close is moot
                os.close(fd)

    def drop_inherited(self) -> None:
        """In a forked child: close this process's copies of the parent's descriptors without
        touching a file. The lock above all: a child that outlives its parent (a helper, a
        worker) must not keep the parent's spool locked, or ``sync`` would take it for a
        live process's and leave it alone for as long as the child lives."""
        fds = [*self._open.values(), self._lock_fd]
        self._open.clear()
        self._sizes.clear()
        self._lock_fd = -1
        for fd in fds:
            if fd >= 0:  # -1: closed already, and its number may be someone else's now
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close(self) -> None:
        """Close every descriptor; remove the directory if no batch is left in it."""
        for path in list(self._open):
            self.seal(path)
        with contextlib.suppress(OSError):
            _remove_if_empty(self.directory)
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)


def _remove_if_empty(directory: Path) -> None:
    """Remove a spool directory that holds no batch, no control record, no child spool, no
    damaged batch."""
    if any(directory.glob(BATCH_GLOB)) or any(directory.glob(CONTROL_GLOB)):
        return
    for kept in (directory / CHILDREN, directory / DAMAGED):
        if kept.is_dir() and any(kept.iterdir()):
            return
    for name in ("meta.json", "lock"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    for empty in (directory / CHILDREN, directory / DAMAGED, directory):
        with contextlib.suppress(OSError):
            empty.rmdir()


def set_aside(path: Path, reason: str) -> Path:
    """Move a batch file that cannot be sent whole into its spool's ``damaged/`` directory,
    with the reason beside it (``<name>.reason``); returns where it went.

    Example:
        >>> set_aside(Path("spool/123-ab/b-000000001.jsonl"), "line 2 is not JSON")  # doctest: +SKIP
        PosixPath('spool/123-ab/damaged/b-000000001.jsonl')
    """
    aside = path.parent / DAMAGED
    _own_private_dir(aside)
    target = aside / path.name
    while os.path.lexists(target):  # set aside before: keep both
        target = aside / f"{path.stem}.{os.urandom(2).hex()}{path.suffix}"
    fd = _open_private(target.with_name(target.name + ".reason"), os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as handle:
        handle.write(reason + "\n")
    os.replace(path, target)
    return target


def set_aside_noted(path: Path, reason: str, damaged: list[str]) -> None:
    """:func:`set_aside`, noting in ``damaged`` (a sync report's list) what became of the
    file: moved, or left in place when it could not be moved.

    Example:
        >>> notes: list[str] = []
        >>> set_aside_noted(Path("spool/1-ab/b-000000001.jsonl"), "torn", notes)  # doctest: +SKIP
        >>> notes  # doctest: +SKIP
        ['spool/1-ab/b-000000001.jsonl: torn; moved to spool/1-ab/damaged/b-000000001.jsonl']
    """
    try:
        where = set_aside(path, reason)
    except OSError as error:
        damaged.append(f"{path}: {reason}; left in place ({error.strerror or error})")
        return
    damaged.append(f"{path}: {reason}; moved to {where}")


@dataclass
class Leftover:
    """The spool of a process that died, claimed (locked) by whoever will replay it."""

    directory: Path
    host: str | None
    batch_files: list[Path]
    _lock_fd: int

    @property
    def set_aside(self) -> list[Path]:
        """Batch files set aside as damaged by an earlier ``sync``."""
        return sorted((self.directory / DAMAGED).glob(BATCH_GLOB))

    def drop_inherited(self) -> None:
        """In a forked child: close this process's copy of the claim's lock (the claim is
        the parent's), so the spool is free once the parent ends."""
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:  # -1: released already, and its number may be someone else's now
            with contextlib.suppress(OSError):
                os.close(fd)

    def release(self) -> None:
        """Drop the claim; remove the directory if it is empty now (and the directory of a
        parent session that never logged anything itself)."""
        _remove_if_empty(self.directory)
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)
        parent = self.directory.parent
        if parent.name == CHILDREN and not (parent.parent / "lock").exists():
            for empty in (parent, parent.parent):
                with contextlib.suppress(OSError):
                    empty.rmdir()


def drop_if_empty(path: Path) -> bool:
    """Remove a batch file of zero bytes (a process killed between creating it and its first
    write: it never held an event); whether it was one.

    Example:
        >>> drop_if_empty(Path("/nonexistent/b-000000001.jsonl"))
        False
    """
    try:
        if os.lstat(path).st_size != 0:
            return False
        path.unlink()
    except OSError:
        return False
    return True


Skipped = Callable[[Path, str], None]
"""Told of each spool directory passed over, with why."""


def _spool_dirs(root: Path, skipped: Skipped | None) -> Iterator[Path]:
    if not root.is_dir():
        return
    uid = _my_uid()
    for entry in sorted(root.iterdir()):
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or entry.name == DAMAGED:
            continue
        if uid is not None and info.st_uid != uid:
            # Another user's (a shared root): replaying it would send their events with
            # this user's key, and whatever it names to wherever its meta says.
            if skipped is not None:  # not looked into: it may not even be readable
                skipped(entry, f"belongs to another user (uid {info.st_uid})")
            continue
        yield from _spool_dirs(entry / CHILDREN, skipped)  # children first: they died first
        if (entry / "lock").exists():
            yield entry


def claim_leftovers(root: Path, *, skipped: Skipped | None = None) -> Iterator[Leftover]:
    """Every spool of this user's under ``root`` whose process is gone, each locked by the
    caller until released. A live process's spool (its lock held) is never returned, nor
    another user's (``skipped`` is told of those).

    Example:
        >>> list(claim_leftovers(Path("/nonexistent")))
        []
    """
    for directory in _spool_dirs(root, skipped):
        try:
            fd = os.open(directory / "lock", os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        if not _try_lock(fd):
            os.close(fd)
            continue
        host = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            host = str(json.loads((directory / "meta.json").read_text())["host"])
        yield Leftover(directory, host, sorted(directory.glob(BATCH_GLOB)), fd)


def count_leftovers(root: Path) -> tuple[int, int]:
    """``(spools, files)`` left by dead processes under ``root``, without claiming them: batch
    files and control records (a status or a creation still to apply).

    Example:
        >>> count_leftovers(Path("/nonexistent"))
        (0, 0)
    """
    spools = files = 0
    for leftover in claim_leftovers(root):
        waiting = len(leftover.batch_files) + sum(1 for _ in leftover.directory.glob(CONTROL_GLOB))
        if waiting:
            spools += 1
            files += waiting
        # Released without removal: an empty one is tidied by sync, not by a lookup.
        os.close(leftover._lock_fd)
    return spools, files
