"""Where the embedded local server keeps its data: the per-user data file, and the file that
keeps the API key opening it.

:func:`~syvain_metrics.start_local_server` stores in one SQLite file per user, so a notebook
finds its runs again in the next kernel (and two kernels can use it at once):

- ``$SYVAIN_METRICS_HOME/local.sqlite`` when ``SYVAIN_METRICS_HOME`` is set;
- else ``$XDG_DATA_HOME/syvain-metrics/local.sqlite``;
- else ``~/.local/share/syvain-metrics/local.sqlite`` (Windows:
  ``%LOCALAPPDATA%\\syvain-metrics\\local.sqlite``).

The database keeps its API keys only as hashes, so the key itself is kept beside it, in
``<database>.key``, readable by its owner only: every kernel on that file uses the same key.

Example:
    >>> default_database().name
    'local.sqlite'
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

HOME_VARIABLE = "SYVAIN_METRICS_HOME"
DATA_FILE = "local.sqlite"
KEY_SUFFIX = ".key"


def data_home() -> Path:
    """The directory of the per-user data file (not created here).

    Example:
        >>> isinstance(data_home(), Path)
        True
    """
    chosen = os.environ.get(HOME_VARIABLE)
    if chosen:
        return Path(chosen).expanduser()
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "syvain-metrics"


def default_database() -> Path:
    """The per-user data file, ``local.sqlite`` in :func:`data_home`.

    Example:
        >>> default_database().name
        'local.sqlite'
    """
    return data_home() / DATA_FILE


def prepare_directory(database: Path) -> None:
    """Create the database's directory when it is missing, readable by its owner only (0700);
    an existing directory keeps its mode.

    Example:
        >>> import tempfile
        >>> prepare_directory(Path(tempfile.mkdtemp()) / "new" / "local.sqlite")
    """
    folder = database.parent
    if not folder.is_dir():
        # Only the last directory gets 0700: the parents are the user's own (~/.local/share).
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def key_file(database: str) -> str:
    """The file that keeps the API key of ``database`` as text.

    Example:
        >>> key_file("/tmp/runs.sqlite")
        '/tmp/runs.sqlite.key'
    """
    return database + KEY_SUFFIX


def _read_key(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            key = file.read().strip()
    except FileNotFoundError:
        return None
    if not key:
        raise ValueError(f"{path} is empty: delete it, or pass the database's API key as api_key=")
    return key


def _publish_key(path: str, key: str) -> str:
    """Write ``key`` to ``path`` unless another process wrote one first; the key kept.

    The file appears whole (a link to a finished private file), so a reader never sees half
    a key, and exactly one process's key wins."""
    draft = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(key + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            kept = _read_key(path)
            if kept is None:  # pragma: no cover - deleted in between
                raise
            return kept
        return key
    finally:
        with suppress(FileNotFoundError):
            os.unlink(draft)


def kept_api_key(path: str, has_stored_keys: Callable[[], bool]) -> str:
    """The API key kept in ``path``; a new random one is kept there first when the file is
    missing and the database has no key yet (``has_stored_keys``).

    Raises:
        ValueError: the file is missing (or empty) while the database has keys: they are
            only hashes there, so the key must be given again.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "local.sqlite.key")
        >>> key = kept_api_key(path, lambda: False)
        >>> key.startswith("ak_local_"), kept_api_key(path, lambda: True) == key
        (True, True)
    """
    key = _read_key(path)
    if key is not None:
        return key
    # Another process keeps its key in the file before storing its hash: a database that
    # has keys and still no file was given its keys some other way.
    if has_stored_keys():
        key = _read_key(path)
        if key is None:
            raise ValueError(
                f"{path} is missing and the database keeps its API keys only as hashes: "
                "pass one of them as api_key="
            )
        return key
    return _publish_key(path, f"ak_local_{secrets.token_hex(16)}")
