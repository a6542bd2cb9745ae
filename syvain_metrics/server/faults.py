"""Fault switches: make the local server fail on purpose, from Python only.

Nothing here is reachable over HTTP. A test arms a fault on ``server.faults`` and the
next matching requests misbehave, which is how the SDK's retries are shown to lose
nothing and duplicate nothing.

A ``route`` selects requests in one of three ways:

- ``None``: every request;
- an operation name such as ``"create_experiment"`` or ``"ingest_metrics"`` (the names
  of the contract's wire examples), optionally after a method;
- ``"METHOD /path/glob"`` or ``"/path/glob"``: an ``fnmatch`` pattern on the raw
  request path, e.g. ``"POST /api/v1/experiments/*/ingest"`` (``*`` also matches ``/``).

Example:
    >>> faults = Faults()
    >>> faults.fail_next("POST /api/v1/experiments", times=2, status=503, retry_after=1)
    >>> faults.pending
    2
    >>> faults.take("fail", "POST", "/api/v1/experiments", "create_experiment").status
    503
    >>> faults.fired
    1
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

FaultKind = Literal[
    "fail",
    "drop_before_commit",
    "drop_after_commit",
    "delay",
    "refuse",
    "reject_metric",
    "crash_after_write",
    "crash_after_commit",
]

CRASH_EXIT_STATUS = 75
"""The exit status of a server process that :meth:`Faults.crash` ended (``exit_process=True``)."""


class SimulatedCrash(BaseException):
    """Raised where :meth:`Faults.crash` makes the server "die": nothing after it runs, an
    open transaction rolls back, and the client's connection breaks without an answer.

    A ``BaseException``, so no ``except Exception`` on the way turns it into an answer.
    """


@dataclass
class FaultRule:
    """One armed fault: what it does, which requests it matches, how many more times."""

    kind: FaultKind
    method: str | None
    target: str | None
    remaining: int
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    metric_name: str | None = None
    exit_process: bool = False

    def matches(self, method: str, path: str, operation: str | None) -> bool:
        """Whether a request (method, raw path, operation name) is selected by this rule."""
        if self.method is not None and self.method != method:
            return False
        if self.target is None:
            return True
        if self.target.startswith("/"):
            return fnmatchcase(path, self.target)
        return self.target == operation


@dataclass(frozen=True)
class FiredFault:
    """A fault that went off: its kind and the request it hit."""

    kind: FaultKind
    method: str
    path: str


def _parse_route(route: str | None) -> tuple[str | None, str | None]:
    if route is None:
        return None, None
    method, _, rest = route.strip().partition(" ")
    if rest:
        return method.upper(), rest.strip()
    return None, method


class Faults:
    """The fault switches of one server.

    Example:
        >>> server.faults.drop_connection("ingest_metrics", when="after_commit")  # doctest: +SKIP
        >>> server.faults.delay("POST /api/v1/experiments/*/ingest", seconds=0.3)  # doctest: +SKIP
        >>> server.faults.clear()  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rules: list[FaultRule] = []
        self._fired: list[FiredFault] = []
        # Set by clear() and at shutdown so a delayed answer stops waiting at once.
        self._wake = threading.Event()

    # -- arming ------------------------------------------------------------------------

    def _arm(self, rule: FaultRule) -> None:
        if rule.remaining < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._wake.clear()
            self._rules.append(rule)

    def fail_next(
        self,
        route: str | None = None,
        *,
        times: int = 1,
        status: int = 503,
        retry_after: float | str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (and ``Retry-After``),
        without applying them.

        Example:
            >>> Faults().fail_next("create_folder", status=429, retry_after=0.1)
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        method, target = _parse_route(route)
        # HTTP wants whole seconds; a float is passed on as written so tests can stay fast.
        after = (
            retry_after
            if retry_after is None or isinstance(retry_after, str)
            else f"{retry_after:g}"
        )
        self._arm(FaultRule("fail", method, target, times, status=status, retry_after=after))

    def drop_connection(
        self,
        route: str | None = None,
        *,
        when: Literal["before_commit", "after_commit"] = "after_commit",
        times: int = 1,
    ) -> None:
        """Break the connection of the next ``times`` matching requests mid-answer.

        ``before_commit``: the request is not applied. ``after_commit``: it is applied (and
        its idempotency record kept), so a retry with the same key must replay it.

        Example:
            >>> Faults().drop_connection("POST /api/v1/folders", when="before_commit")
        """
        if when not in ("before_commit", "after_commit"):
            raise ValueError("when must be 'before_commit' or 'after_commit'")
        method, target = _parse_route(route)
        kind: FaultKind = "drop_before_commit" if when == "before_commit" else "drop_after_commit"
        self._arm(FaultRule(kind, method, target, times))

    def crash(
        self,
        route: str | None = None,
        *,
        when: Literal["after_write", "after_commit"] = "after_write",
        exit_process: bool = False,
        times: int = 1,
    ) -> None:
        """Make the server "die" in the next ``times`` matching write requests, between the
        write and its answer.

        ``after_write``: the handler has written, inside the request's transaction, but its
        idempotency record is not written and nothing is committed; a crash there loses the
        whole transaction, and so does this. ``after_commit``: the write and its idempotency
        record are committed, and the answer is never sent. Either way the client's
        connection breaks, and a retry with the same ``Idempotency-Key`` finds exactly one
        write: run once (``after_write``) or replayed (``after_commit``).

        ``exit_process=True`` ends the whole process right there (``os._exit`` with
        :data:`CRASH_EXIT_STATUS`), for a server running in a child process that the test
        then starts again on the same database. Never in a server inside the test's process.

        Example:
            >>> Faults().crash("create_annotation", when="after_commit")
        """
        if when not in ("after_write", "after_commit"):
            raise ValueError("when must be 'after_write' or 'after_commit'")
        method, target = _parse_route(route)
        kind: FaultKind = "crash_after_write" if when == "after_write" else "crash_after_commit"
        self._arm(FaultRule(kind, method, target, times, exit_process=exit_process))

    def crash_point(
        self, kind: FaultKind, method: str, path: str, operation: str | None = None
    ) -> None:
        """Where the server may "die": raise :class:`SimulatedCrash` (or end the process)
        if an armed :meth:`crash` of ``kind`` matches this request."""
        rule = self.take(kind, method, path, operation)
        if rule is None:
            return
        if rule.exit_process:
            os._exit(CRASH_EXIT_STATUS)
        raise SimulatedCrash(kind)

    def delay(self, route: str | None = None, *, seconds: float, times: int = 1) -> None:
        """Hold the answer of the next ``times`` matching requests for ``seconds`` after the
        write is committed (the request counts as still running meanwhile).

        Example:
            >>> Faults().delay("ingest_metrics", seconds=0.2)
        """
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        method, target = _parse_route(route)
        self._arm(FaultRule("delay", method, target, times, seconds=seconds))

    def refuse_connections(self, times: int = 1) -> None:
        """Close the next ``times`` new connections as soon as they are accepted.

        Only servers started by :class:`~syvain_metrics.testing.LocalServer` or the CLI
        honour this (it acts on the listening socket, not on a request).

        Example:
            >>> Faults().refuse_connections()
        """
        self._arm(FaultRule("refuse", None, None, times))

    def reject_metric(self, name: str, *, times: int = 1_000_000) -> None:
        """Refuse, as invalid, every ingest batch holding a metric called ``name``: a 400
        ``validation_error`` naming the first such metric (``field=data[i].name``), nothing of
        the batch stored; as a service whose rules are stricter than the SDK's would. The rest
        of the batch is stored once it comes without that metric.

        Example:
            >>> Faults().reject_metric("poison")
        """
        self._arm(FaultRule("reject_metric", None, "ingest_metrics", times, metric_name=name))

    def rejected_metric(self, body: bytes) -> int | None:
        """The index of the first metric of an ingest ``body`` that an armed
        :meth:`reject_metric` refuses (consuming one use), else ``None``."""
        with self._lock:
            if not any(rule.kind == "reject_metric" for rule in self._rules):
                return None  # the common case: no second parse of the body
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        items = parsed.get("data") if isinstance(parsed, dict) else None
        if not isinstance(items, list):
            return None
        with self._lock:
            for rule in self._rules:
                if rule.kind != "reject_metric":
                    continue
                for index, item in enumerate(items):
                    if isinstance(item, dict) and item.get("name") == rule.metric_name:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._rules.remove(rule)
                        self._fired.append(FiredFault("reject_metric", "POST", "ingest"))
                        self._changed.notify_all()
                        return index
        return None

    def clear(self) -> None:
        """Disarm every fault, cut short any delay in progress, and forget what fired."""
        with self._lock:
            self._rules.clear()
            self._fired.clear()
            self._wake.set()

    # -- state -------------------------------------------------------------------------

    @property
    def fired(self) -> int:
        """How many faults went off since the last :meth:`clear`."""
        with self._lock:
            return len(self._fired)

    @property
    def history(self) -> list[FiredFault]:
        """The faults that went off, oldest first."""
        with self._lock:
            return list(self._fired)

    @property
    def pending(self) -> int:
        """How many more times armed faults will go off."""
        with self._lock:
            return sum(rule.remaining for rule in self._rules)

    # -- used by the server --------------------------------------------------------------

    def take(
        self, kind: FaultKind, method: str, path: str, operation: str | None = None
    ) -> FaultRule | None:
        """Consume one use of the first armed fault of ``kind`` matching this request."""
        with self._lock:
            for rule in self._rules:
                if rule.kind == kind and rule.matches(method, path, operation):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    self._fired.append(FiredFault(kind, method, path))
                    self._changed.notify_all()
                    return rule
        return None

    def wait_fired(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` faults went off (since the last :meth:`clear`);
        ``False`` on timeout. Lets a test act while a delayed request is still running.

        Example:
            >>> Faults().wait_fired(1, timeout=0.01)
            False
        """
        with self._changed:
            return self._changed.wait_for(lambda: len(self._fired) >= count, timeout)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if :meth:`clear` or :meth:`wake_all` is called."""
        self._wake.wait(seconds)

    def wake_all(self) -> None:
        """End every delay in progress (used when the server stops)."""
        self._wake.set()
