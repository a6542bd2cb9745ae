"""Ids, secret hashes and private files: what every part of the store makes the same way.

Example:
    >>> len(new_id()), token_hash("ak_local_demo")[:16]
    (36, '8c70c4fafd39bd38')
"""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import suppress


def new_id() -> str:
    """A random UUID4 string, the form of every id the server makes."""
    return str(uuid.uuid4())


def token_hash(token: str) -> str:
    """The stored identity of a secret: API keys and ingestion tokens are kept only as their
    SHA-256 hashes. A fast hash is enough for the keys and tokens the server makes (128 bits
    or more from ``secrets``: nothing to guess); a key you choose yourself is only as hard
    to guess as you make it.

    Example:
        >>> token_hash("ak_local_demo")[:16]
        '8c70c4fafd39bd38'
    """
    return hashlib.sha256(token.encode()).hexdigest()


def create_private(path: str) -> None:
    """Create a file of the server's (a database, its lock file) readable and writable by
    its owner only (0600) unless it exists; SQLite gives a database's ``-wal`` and ``-shm``
    files the same mode. ``":memory:"`` and URIs are left alone.

    Example:
        >>> import os, stat, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "metrics.sqlite")
        >>> create_private(path)
        >>> oct(stat.S_IMODE(os.stat(path).st_mode))
        '0o600'
    """
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
