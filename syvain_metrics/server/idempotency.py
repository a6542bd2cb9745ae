"""Idempotency-Key handling (contract section 8).

A request's identity is its method, raw path, raw query and the canonical JSON of
its body. Keys are scoped to the credential that sent them. Finished answers (2xx
and 4xx, except validation failures) are stored for 24 hours in the database;
requests still running are tracked in memory, so a second attempt can see that the
first has not finished yet, and, when several processes serve one database, also in a small
database of their own (:class:`RunningElsewhere`), so that a retry that reaches another
process sees it too.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> gate = IdempotencyGate(Store())
    >>> ticket = gate.begin("cred", "key-1", fingerprint("POST", "/api/v1/folders", "", "{}"))
    >>> isinstance(ticket, Ticket)
    True
    >>> gate.begin("cred", "key-1", ticket.fingerprint).status  # the first is still running
    409
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from dataclasses import dataclass

from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.store import Store, create_private


def fingerprint(method: str, raw_path: str, raw_query: str, body: str | None) -> str:
    """The identity of a request, from the :func:`~syvain_metrics.server.sql.canonical` text
    of its parsed body (``None``: no body), so bodies that are the same JSON value match.

    Example:
        >>> from syvain_metrics.server.sql import canonical
        >>> a = fingerprint("POST", "/x", "", canonical({"a": 1, "b": 2}))
        >>> a == fingerprint("POST", "/x", "", canonical({"b": 2, "a": 1}))
        True
    """
    identity = "\n".join((method, raw_path, raw_query, body or ""))
    return hashlib.sha256(identity.encode()).hexdigest()


@dataclass(frozen=True)
class Ticket:
    """Permission to run a request once; hand it back to :meth:`IdempotencyGate.finish`."""

    credential: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Replay:
    """A stored answer to send again."""

    status: int
    body: bytes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class RunningElsewhere:
    """Requests running in any of the processes that serve one database file: a row per
    (credential, key) with the request's identity and its process, in ``<path>-inflight``.

    A process that ended without removing its rows (killed) leaves them behind; a row whose
    process is gone counts as nothing running. Writes here never wait for the store's writes
    (another file, another lock), and the rows need no durability.

    Example:
        >>> import tempfile, os
        >>> running = RunningElsewhere(os.path.join(tempfile.mkdtemp(), "m.sqlite"))
        >>> running.claim("cred", "k", "id-1") is None  # nobody else runs it: ours now
        True
        >>> running.release("cred", "k")
        >>> running.close()
    """

    def __init__(self, path: str) -> None:
        self.path = f"{path}-inflight"
        create_private(self.path)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=60
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS running (credential TEXT NOT NULL, key TEXT NOT NULL, "
            "fingerprint TEXT NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (credential, key))"
        )
        self._lock = threading.Lock()

    def claim(self, credential: str, key: str, identity: str) -> str | None:
        """Mark the request as running in this process and return ``None``; or, when another
        live process runs a request with this key, that request's identity."""
        pid = os.getpid()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT fingerprint, pid FROM running WHERE credential = ? AND key = ?",
                    (credential, key),
                ).fetchone()
                if row is not None and row[1] != pid and _alive(row[1]):
                    return str(row[0])
                self._db.execute(
                    "INSERT OR REPLACE INTO running VALUES (?, ?, ?, ?)",
                    (credential, key, identity, pid),
                )
            finally:
                self._db.execute("COMMIT")
        return None

    def release(self, credential: str, key: str) -> None:
        """This process's request with this key is over."""
        with self._lock:
            self._db.execute(
                "DELETE FROM running WHERE credential = ? AND key = ? AND pid = ?",
                (credential, key, os.getpid()),
            )

    def clear(self) -> None:
        """Forget every row (a server starting: nothing of its can be running)."""
        with self._lock:
            self._db.execute("DELETE FROM running")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class IdempotencyGate:
    """Decides, per (credential, key), whether a request runs, replays, or is refused.

    ``elsewhere``: the requests other processes serving the same database run."""

    def __init__(self, store: Store, elsewhere: RunningElsewhere | None = None) -> None:
        self._store = store
        self._elsewhere = elsewhere
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        """Close the record of what other processes run (nothing to close in one process)."""
        if self._elsewhere is not None:
            self._elsewhere.close()

    def begin(self, credential: str, key: str, identity: str) -> Ticket | Replay | ApiError:
        """A :class:`Ticket` to run the request, a :class:`Replay`, or the error to answer."""
        with self._lock:
            running = self._running.get((credential, key))
            if running is None and self._elsewhere is not None:
                # Claimed before the stored answer is looked up: a request another process
                # finishes meanwhile has stored its answer before it lets go of its claim.
                running = self._elsewhere.claim(credential, key, identity)
            if running is None:
                stored = self._store.find_idempotency(credential, key)
                if stored is None:
                    self._running[(credential, key)] = identity
                    return Ticket(credential, key, identity)
                if self._elsewhere is not None:
                    self._elsewhere.release(credential, key)
                if stored[0] == identity:
                    return Replay(stored[1], stored[2])
                running = stored[0]
            if running != identity:
                return ApiError(
                    422,
                    "idempotency_key_reused",
                    "This idempotency key was used for a different request",
                )
            return ApiError(
                409,
                "idempotency_key_in_progress",
                "Request with this idempotency key is in progress",
            )

    def record(self, ticket: Ticket, status: int, body: bytes) -> None:
        """Store the answer of a finished request (the caller decides which answers count)."""
        self._store.save_idempotency(
            ticket.credential, ticket.key, ticket.fingerprint, status, body
        )

    def finish(self, ticket: Ticket) -> None:
        """The request is over: later attempts see the stored answer, or run again if none."""
        with self._lock:
            self._running.pop((ticket.credential, ticket.key), None)
            if self._elsewhere is not None:
                self._elsewhere.release(ticket.credential, ticket.key)

    def reset(self) -> None:
        """Forget requests in progress (the database records go with :meth:`Store.reset`)."""
        with self._lock:
            self._running.clear()
            if self._elsewhere is not None:
                self._elsewhere.clear()
