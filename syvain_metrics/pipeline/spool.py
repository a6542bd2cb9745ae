"""The durable spool: ``log()`` events written to disk until the service acknowledges them.

Each session, in each process, owns one directory::

    <root>/<pid>-<random>/
        meta.json        {"host": ..., "pid": ..., "created_at_ms": ...}  (no secrets)
        lock             held (flock) for as long as the owning process lives
        b-000000001.jsonl  one batch: a header line {"experiment_id": ...}, then one JSON
        b-000000002.jsonl  array of events per line, appended while the batch fills
        children/<pid>-<random>/   the spools of sessions used in forked children

A batch file is removed once the service acknowledged (or finally rejected) its events,
and an empty directory is removed when its session closes. A directory whose lock is free
belongs to a process that died: ``syvain-metrics sync`` replays it, with the same event ids,
so whatever the dead process had already delivered is not stored twice. Everything is
created readable by the user alone (directories 0700, files 0600). API keys and ingestion
tokens are never written.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> spool = Spool.create(root / new_spool_name(), host="http://127.0.0.1:8765")
    >>> path = spool.append("exp-1", 1, [Chunk(1, b'[{"client_event_id":"a"}]')])
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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syvain_metrics.pipeline.batch import Chunk

_flock: Callable[[int, int], Any] | None
try:
    import fcntl

    _flock = fcntl.flock
    _LOCK_NOW = fcntl.LOCK_EX | fcntl.LOCK_NB
except ImportError:  # pragma: no cover - no flock (Windows): spools never count as dead
    _flock = None
    _LOCK_NOW = 0

BATCH_GLOB = "b-*.jsonl"
CHILDREN = "children"


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


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


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

    @classmethod
    def create(cls, directory: Path, *, host: str) -> Spool:
        """Make ``directory`` (it may exist already, holding children's spools) and lock it
        before anyone can see the lock: the lock file is taken under a private name, then
        renamed into place, so a scan never finds it free while this process lives."""
        _private_dir(directory.parent)
        _private_dir(directory)
        building = directory / f"lock.{os.urandom(4).hex()}"
        lock_fd = _open_private(building, os.O_RDWR)
        _try_lock(lock_fd)
        meta = {"host": host, "pid": os.getpid(), "created_at_ms": int(time.time() * 1000)}
        meta_fd = _open_private(directory / "meta.json", os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(meta_fd, "w") as handle:
            json.dump(meta, handle)
        os.rename(building, directory / "lock")
        return cls(directory, lock_fd)

    def child_root(self) -> Path:
        """Where sessions used in a forked child keep their spools."""
        return self.directory / CHILDREN

    def append(self, experiment_id: str, number: int, chunks: list[Chunk]) -> Path:
        """Append chunks of events, one line each, to batch file ``number`` (created with its
        header on first use)."""
        path = self.directory / f"b-{number:09d}.jsonl"
        fd = self._open.get(path)
        lines = []
        if fd is None:
            fd = self._open[path] = _open_private(path, os.O_WRONLY | os.O_APPEND)
            lines.append(json.dumps({"experiment_id": experiment_id}).encode())
        lines.extend(chunk.array for chunk in chunks)
        # One write per pass: a kill leaves whole lines, or a torn last one that reading skips.
        data = memoryview(b"\n".join(lines) + b"\n")
        while data:
            written = os.write(fd, data)  # short on a filling disk: write the rest, or raise
            data = data[written:]
        return path

    def seal(self, path: Path) -> None:
        """No more events go to ``path``: close its descriptor."""
        fd = self._open.pop(path, None)
        if fd is not None:
            with contextlib.suppress(OSError):  # the data is written; a failing close is moot
                os.close(fd)

    def close(self) -> None:
        """Close every descriptor; remove the directory if no batch is left in it."""
        for path in list(self._open):
            self.seal(path)
        with contextlib.suppress(OSError):
            _remove_if_empty(self.directory)
        os.close(self._lock_fd)


def _remove_if_empty(directory: Path) -> None:
    """Remove a spool directory that holds no batch and no child spool."""
    children = directory / CHILDREN
    if any(directory.glob(BATCH_GLOB)) or (children.is_dir() and any(children.iterdir())):
        return
    for name in ("meta.json", "lock"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    for empty in (children, directory):
        with contextlib.suppress(OSError):
            empty.rmdir()


def read_batch(path: Path) -> tuple[str, list[Chunk]]:
    """The experiment id and event chunks of a batch file; a torn last line is skipped.

    Example:
        >>> read_batch(Path("missing.jsonl"))  # doctest: +SKIP
    """
    raw = path.read_bytes().split(b"\n")
    experiment_id = json.loads(raw[0])["experiment_id"]
    chunks = []
    for line in raw[1:]:
        if not line:
            continue
        try:
            events = json.loads(line)
        except ValueError:
            continue  # the process died mid-write
        if isinstance(events, list) and events:
            chunks.append(Chunk(len(events), line))
    return str(experiment_id), chunks


@dataclass
class Leftover:
    """The spool of a process that died, claimed (locked) by whoever will replay it."""

    directory: Path
    host: str | None
    batch_files: list[Path]
    _lock_fd: int

    def release(self) -> None:
        """Drop the claim; remove the directory if it is empty now (and the directory of a
        parent session that never logged anything itself)."""
        _remove_if_empty(self.directory)
        os.close(self._lock_fd)
        parent = self.directory.parent
        if parent.name == CHILDREN and not (parent.parent / "lock").exists():
            for empty in (parent, parent.parent):
                with contextlib.suppress(OSError):
                    empty.rmdir()


def _spool_dirs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            yield from _spool_dirs(entry / CHILDREN)  # children first: they died first
            if (entry / "lock").exists():
                yield entry


def claim_leftovers(root: Path) -> Iterator[Leftover]:
    """Every spool under ``root`` whose process is gone, each locked by the caller until
    released. A live process's spool (its lock held) is never returned.

    Example:
        >>> list(claim_leftovers(Path("/nonexistent")))
        []
    """
    for directory in _spool_dirs(root):
        try:
            fd = os.open(directory / "lock", os.O_RDWR)
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
    """``(spools, batch files)`` left by dead processes under ``root``, without claiming them.

    Example:
        >>> count_leftovers(Path("/nonexistent"))
        (0, 0)
    """
    spools = files = 0
    for leftover in claim_leftovers(root):
        if leftover.batch_files:
            spools += 1
            files += len(leftover.batch_files)
        # Released without removal: an empty one is tidied by sync, not by a lookup.
        os.close(leftover._lock_fd)
    return spools, files
