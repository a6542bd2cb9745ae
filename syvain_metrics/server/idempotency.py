"""Idempotency-Key handling (contract section 8).

A request's identity is its method, raw path, raw query and the canonical JSON of
its body. Keys are scoped to the credential that sent them. Finished answers (2xx
and 4xx, except validation failures) are stored for 24 hours in the database;
requests still running are tracked in memory, so a second attempt can see that the
first has not finished yet.

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
import threading
from dataclasses import dataclass

from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.store import Store


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


class IdempotencyGate:
    """Decides, per (credential, key), whether a request runs, replays, or is refused."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], str] = {}

    def begin(self, credential: str, key: str, identity: str) -> Ticket | Replay | ApiError:
        """A :class:`Ticket` to run the request, a :class:`Replay`, or the error to answer."""
        with self._lock:
            running = self._running.get((credential, key))
            if running is None:
                stored = self._store.find_idempotency(credential, key)
                if stored is None:
                    self._running[(credential, key)] = identity
                    return Ticket(credential, key, identity)
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

    def reset(self) -> None:
        """Forget requests in progress (the database records go with :meth:`Store.reset`)."""
        with self._lock:
            self._running.clear()
