"""The session: settings, lifecycle (close, fork, exit), one requestor and one sender.

Resources never touch HTTP; they ask the session for one logical call of a route
(:mod:`syvain_metrics.contract.operations`) and get the validated ``data`` payload back::

    session.call(operations.CREATE_FOLDER, body={"name": "runs", "parent_id": None})

The call itself is the requestor's (:mod:`~syvain_metrics.client.requestor`); ``log()``
events go through the sender (:mod:`~syvain_metrics.pipeline`), which the session builds
from a function that sends one batch and the retry policy. The default session lives in
:mod:`~syvain_metrics.client.registry`.

Example:
    >>> import syvain_metrics as sm
    >>> with sm.Session("ak_org_123", host="http://127.0.0.1:8765") as session:
    ...     session  # the key never shows
    <Session http://127.0.0.1:8765 auth=api_key>
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, overload

from marshmallow import Schema

from syvain_metrics.client.auth import Credentials, hide_key, resolve_credentials
from syvain_metrics.client.control import apply_control
from syvain_metrics.client.ranks import RankInfo, detect, rank_mode
from syvain_metrics.client.requestor import Query, Requestor
from syvain_metrics.client.retry import RetryPolicy
from syvain_metrics.client.secret import Secret
from syvain_metrics.client.settings import (
    USER_CACHE,
    SpoolDir,
    check_settings,
    offline_mode,
    spool_root,
)
from syvain_metrics.client.tokens import IngestionTokenCache
from syvain_metrics.client.transport import DEFAULT_MAX_RESPONSE_BYTES
from syvain_metrics.contract import operations
from syvain_metrics.contract.limits import DEFAULT_PAGE_SIZE
from syvain_metrics.contract.operations import Operation
from syvain_metrics.contract.schemas.ingest import IngestReply
from syvain_metrics.contract.schemas.options import check_page_size
from syvain_metrics.errors import (
    ExperimentNotCreatedError,
    FlushError,
    MetricsApiError,
    MetricsValidationError,
    OfflineError,
)
from syvain_metrics.pipeline.batch import Batch
from syvain_metrics.pipeline.control import ControlRecord, is_pending_id
from syvain_metrics.pipeline.delivery import Uplink
from syvain_metrics.pipeline.logs import INTERRUPT_FLUSH_SECONDS, SessionLogs

logger = logging.getLogger("syvain_metrics")

_INGEST_REPLY = IngestReply()
_T = TypeVar("_T")


class _OnRequestor(Generic[_T]):
    """A setting the requestor reads at each call, shown (and settable) on the session."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, session: None, owner: type[Session]) -> _OnRequestor[_T]: ...
    @overload
    def __get__(self, session: Session, owner: type[Session] | None = None) -> _T: ...
    def __get__(
        self, session: Session | None, owner: type[Session] | None = None
    ) -> _T | _OnRequestor[_T]:
        if session is None:  # on the class: help() and the docs see the descriptor
            return self
        value: _T = getattr(session._requestor, self.name)
        return value

    def __set__(self, session: Session, value: _T) -> None:
        setattr(session._requestor, self.name, value)


class Session:
    """A connection to the Syvain Metrics API (or a local server), shared by every resource.

    Args:
        api_key: an API key, ``"local"`` / ``"local-dev"`` (the CLI's login file), or ``None``
            to read ``SYVAIN_METRICS_API_KEY`` and ``SYVAIN_METRICS_HOST``, then ``"local"``.
        host: the service origin, e.g. ``"https://metrics.syvain.com"``.
        timeout: seconds for each exchange of an ordinary call (annotations included):
            connecting, sending and the whole answer, body included, within this time.
        ingest_timeout: the same for metric ingestion, which may wait for ``sync=True``.
        retry: a :class:`RetryPolicy` (3 attempts, 0.25 s then 0.5 s).
        clock: seconds since the epoch; drives ingestion-token expiry (tests inject one).
        pool_size: connections kept alive per host.
        page_size: rows per request when a read pages through a large result (50,000; at
            most 100,000, the contract's largest; a service that answers fewer per request is
            read correctly all the same, only with more requests).
        spool_dir: where ``log()`` events wait on disk until the service acknowledges them:
            by default ``$SYVAIN_METRICS_SPOOL_DIR``, else the user's cache directory
            (``~/.cache/syvain-metrics/spool``); ``None`` keeps them in memory only. A spool
            that cannot be created or written yet (a full disk) is tried again, up to every
            15 s; one refused (not a directory of this user's) is not, and either way
            ``flush()`` and ``close()`` warn that events are held in memory only.
        flush_interval: the longest a ``log()`` event waits before it is sent (seconds).
        flush_timeout: how long ``close()``, the end of ``run()`` and interpreter exit wait
            for pending ``log()`` events (seconds); what is left stays in the spool.
        max_response_bytes: the largest answer read, after decompression (256 MiB); a larger
            one is a :class:`~syvain_metrics.MetricsApiResponseError`.
        offline: never touch the network (not even for a token): creations, ``log()``
            events, status changes and annotations all wait in the spool for
            ``syvain-metrics sync``, and reads raise :class:`~syvain_metrics.OfflineError`.
            ``None`` (the default) reads ``$SYVAIN_METRICS_OFFLINE`` (``1`` means offline).
            Needs a spool.
        ranks: in a job of several processes (torchrun, SLURM, MPI; see :attr:`rank`), which
            ranks write: ``"zero"`` (by default, or ``$SYVAIN_METRICS_RANKS``) makes
            ``Experiment.create()`` on other ranks return a stand-in that sends nothing;
            ``"all"`` writes every rank's events into one experiment, each with ``rank`` in
            its metadata, and lets only rank 0 change the run's status. In a job of one
            process both mean the same.

    Example:
        >>> import syvain_metrics as sm
        >>> session = sm.Session("ak_org_123", host="http://127.0.0.1:8765", timeout=5)
        >>> session.timeout, session.ingest_timeout
        (5.0, 60.0)
        >>> session.close()
    """

    def __init__(
        self,
        api_key: str | Secret | None = None,
        *,
        host: str | None = None,
        timeout: float = 10.0,
        ingest_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        pool_size: int = 10,
        page_size: int = DEFAULT_PAGE_SIZE,
        spool_dir: SpoolDir = USER_CACHE,
        flush_interval: float = 1.0,
        flush_timeout: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        offline: bool | None = None,
        ranks: str | None = None,
    ) -> None:
        # First of all: a reporter recording this frame's locals (a bad timeout below, say)
        # must find no key in it.
        credential = hide_key(api_key)
        del api_key
        check_settings(
            timeout=timeout,
            ingest_timeout=ingest_timeout,
            flush_interval=flush_interval,
            flush_timeout=flush_timeout,
            max_response_bytes=max_response_bytes,
            retry=retry,
            pool_size=pool_size,
            clock=clock,
        )
        self.page_size: int = check_page_size(page_size) or DEFAULT_PAGE_SIZE
        self.ranks: str = rank_mode(ranks)
        self.rank: RankInfo = detect()
        self.offline: bool = offline_mode(offline)
        if self.offline and spool_root(spool_dir) is None:
            raise MetricsValidationError(
                {"spool_dir": ["Offline mode keeps everything in the spool: it needs one."]}
            )
        self._credentials: Credentials = resolve_credentials(credential, host=host)
        self.host: str = self._credentials.host
        self.flush_timeout = float(flush_timeout)
        self._requestor = Requestor(
            self._credentials,
            timeout=float(timeout),
            ingest_timeout=float(ingest_timeout),
            retry=retry or RetryPolicy(),
            clock=clock,
            pool_size=pool_size,
            max_response_bytes=max_response_bytes,
        )
        self._closing = False
        self._closed = False
        # Reentrant: a signal handler may call close() while this thread is inside it.
        self._close_lock = threading.RLock()
        # The sender knows nothing of the session: it gets a function that sends one batch
        # once, and the requestor as the policy that paces the retries.
        self.uplink = Uplink(
            send=self._send_batch,
            policy=self._requestor,
            control=self._apply_control,
            offline=self.offline,
        )
        self.logs = SessionLogs(
            self.uplink,
            host=self.host,
            spool_root=spool_root(spool_dir),
            interval=float(flush_interval),
            drain=self.drain_logs_at_exit,
            tags=self._event_tags(),
        )
        _sessions.add(self)
        self.logs.offer_leftovers()

    timeout: _OnRequestor[float] = _OnRequestor("timeout")
    ingest_timeout: _OnRequestor[float] = _OnRequestor("ingest_timeout")
    retry: _OnRequestor[RetryPolicy] = _OnRequestor("retry")
    clock: _OnRequestor[Callable[[], float]] = _OnRequestor("clock")
    max_response_bytes: _OnRequestor[int] = _OnRequestor("max_response_bytes")

    def _event_tags(self) -> dict[str, int] | None:
        """Metadata added to every ``log()`` event of this session (a key of the event's own
        wins): the rank, when every rank of a job of several writes."""
        if self.ranks == "all" and self.rank.distributed:
            return {"rank": self.rank.rank}
        return None

    @property
    def is_main_process(self) -> bool:
        """Whether this process changes runs' status and, with ``ranks="zero"``, writes at
        all: rank 0 of a job of several, or a process started without a launcher.

        Example:
            >>> session.is_main_process  # doctest: +SKIP
            True
        """
        return self.rank.is_zero

    @property
    def writes(self) -> bool:
        """Whether ``Experiment.create()`` gives a real run here: ``False`` only on ranks
        other than 0 with ``ranks="zero"`` (they get a stand-in that sends nothing).

        Example:
            >>> session.writes  # doctest: +SKIP
            True
        """
        return self.ranks == "all" or self.rank.is_zero

    @property
    def tokens(self) -> IngestionTokenCache:
        """The ingestion tokens minted so far, one per experiment written to."""
        return self._requestor.tokens

    def _after_fork_in_child(self) -> None:
        # The parent's connections, sender threads, pending events and locks belong to the
        # parent: drop them without closing anything (closing could disturb the parent's
        # sockets) and start afresh, lazily (a child that never calls does no set-up at all).
        self._requestor.after_fork_in_child()
        self._close_lock = threading.RLock()
        self.logs.after_fork()

    # -- context management -------------------------------------------------------

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an exception is already leaving the block: it wins, the rest is logged
            self.close()
        except FlushError as error:
            logger.warning("syvain_metrics: closing the session: %s", error)

    def close(self) -> None:
        """Wait up to ``flush_timeout`` for every pending ``log()`` event (then for the status
        changes and annotations recorded behind them), then release the connections.

        Events still pending but safe in the spool are not an error: one warning says how
        many wait there for ``syvain-metrics sync`` (the statuses behind them follow them).
        Raises :class:`~syvain_metrics.FlushError` (after closing) when events were rejected,
        or are held in memory only (no spool, or a spool that cannot be written): those are
        lost.

        Example:
            >>> session.close()  # doctest: +SKIP
        """
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
        incomplete: FlushError | None = None
        try:
            # Still open: it sends requests. After a SIGTERM, no longer than run() allowed.
            incomplete = self.logs.close(self.logs.exit_wait(self.flush_timeout))
        finally:
            self._closed = True
            self._requestor.close()
        if incomplete is not None and not incomplete.spooled_safely:
            raise incomplete
        self._tell_waiting(incomplete)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every ``log()`` event of this session, all experiments, is stored;
        returns how many were waited for. Raises :class:`~syvain_metrics.FlushError` on
        timeout or rejected events (see ``Experiment.flush``).

        Example:
            >>> session.flush(timeout=60)  # doctest: +SKIP
            3000
        """
        settled = self.logs.wait(None, timeout)
        error = self.logs.incomplete(settled)
        if error is not None:
            raise error
        return 0 if settled is None else settled.stored

    def drain_logs_at_exit(self) -> None:
        """At interpreter (or multiprocessing child) exit: wait up to ``flush_timeout`` for
        pending ``log()`` events and stop the sender; warn about what is left."""
        if self._closing or not self.logs.started:
            return
        error = self.logs.close(self.logs.exit_wait(self.flush_timeout))
        if error is not None and not error.spooled_safely:
            logger.warning("syvain_metrics: at exit, %s", error)
        else:
            self._tell_waiting(error)

    def _tell_waiting(self, incomplete: FlushError | None) -> None:
        """Once closed: one warning when events (and the records behind them) wait safely in
        the spool, since nothing is lost and nothing is raised."""
        if incomplete is not None:
            logger.warning(
                "syvain_metrics: %d log() events wait in the spool %s; they, and the status "
                "changes and annotations recorded after them, are sent by "
                "`syvain-metrics sync` once this process ended",
                incomplete.pending,
                incomplete.spool_dir,
            )
        elif self.offline and self.logs.parked:
            logger.warning(
                "syvain_metrics: offline: %d log() events, with the runs' creations, status "
                "changes and annotations, wait in the spool %s for `syvain-metrics sync`",
                self.logs.parked,
                self.logs.spool_dir,
            )

    @property
    def spool_dir(self) -> str | None:
        """The directory of this session's ``log()`` spool in this process, or ``None``."""
        directory = self.logs.spool_dir
        return None if directory is None else str(directory)

    def __repr__(self) -> str:
        # Also for a session whose constructor failed: reporters that record local variables
        # call this on the half-built ``self`` of __init__'s frame.
        credentials = getattr(self, "_credentials", None)
        if credentials is None:
            return "<Session (not connected)>"
        return f"<Session {credentials.host} auth={credentials.source}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (a closed session sends nothing more)."""
        return self._closed or self._closing

    @property
    def auth_source(self) -> str:
        """Where the API key came from: ``"api_key"``, ``"local"`` or ``"local-dev"``."""
        return self._credentials.source

    @property
    def org_id(self) -> str | None:
        """The organization id recorded by the CLI login, if known."""
        return self._credentials.org_id

    # -- the one entry point resources use -----------------------------------------

    def call(
        self,
        route: Operation,
        *segments: str,
        reply: Schema | None = None,
        query: Query | None = None,
        body: Mapping[str, Any] | None = None,
        encoded_body: bytes | None = None,
        idempotency_key: str | None = None,
        attempts: int | None = None,
        on_body: Callable[[bytes], object] | None = None,
    ) -> dict[str, Any]:
        """Send one logical call of ``route`` and return its validated ``data``, loaded with
        the operation's reply schema (or ``reply``, a schema of the same answer that checks
        more, such as the rows of a read).

        ``segments`` fill the route's path (ids, metric names). POST and PATCH carry an
        ``Idempotency-Key`` reused on every retry (unless the route says otherwise).
        Routes written with an ingestion token use the token of the experiment named by
        the first segment, renewing it once on 401/403.

        The log() sender, which retries on its own schedule, passes a body it encoded once
        (``encoded_body``), the key it keeps across its retries (``idempotency_key``), and
        ``attempts=1``. A paged read passes ``on_body``, which sees a 2xx answer's raw bytes
        before they are decoded (to send the next request early); what it raises is ignored.

        Example:
            >>> session.call(operations.GET_EXPERIMENT, "0f8e2c1a")  # doctest: +SKIP
            {'experiment': {...}}
        """
        if self._closed:
            raise MetricsApiError("This session is closed; open a new one with sm.connect().")
        if self.offline:
            raise OfflineError(
                f"This session is offline: {route.operation} needs the service. Offline, runs, "
                "log() events, statuses and annotations wait in the spool; run "
                "`syvain-metrics sync` where the service can be reached, then read."
            )
        if segments and is_pending_id(segments[0]):
            # A placeholder never reaches the wire: the run's creation still waits.
            raise ExperimentNotCreatedError(
                f"{route.operation} needs the experiment, which is not created yet: its creation "
                "waits in the spool until the service answers (the sender creates it, or "
                "`syvain-metrics sync` does once the process ended)."
            )
        return self._requestor.call(
            route,
            *segments,
            reply=reply,
            query=query,
            body=body,
            encoded_body=encoded_body,
            idempotency_key=idempotency_key,
            attempts=attempts,
            on_body=on_body,
        )

    def forget_ingestion_credential(self, experiment_id: str) -> None:
        """Drop the cached ingestion token of one experiment.

        Example:
            >>> session.forget_ingestion_credential("0f8e2c1a-...")  # doctest: +SKIP
        """
        self._requestor.forget_ingestion_credential(experiment_id)

    # -- the log() pipeline's send functions ---------------------------------------------

    def _apply_control(self, record: ControlRecord, target: str | None) -> dict[str, Any]:
        """Apply one control record once (a creation, status change or annotation that
        waited in the spool); the sender retries on its own schedule."""
        return apply_control(self, record, target)

    def _send_batch(self, batch: Batch) -> object:
        """Send one batch of ``log()`` events once: the sender retries on its own schedule,
        with the batch's body encoded once and its key kept across its retries."""
        return self.call(
            operations.INGEST_METRICS,
            batch.experiment_id,
            reply=_INGEST_REPLY,
            encoded_body=batch.body(),
            idempotency_key=batch.key,
            attempts=1,
        )


# Every session of this process, so that a fork and the interpreter's exit reach them all.
_sessions: weakref.WeakSet[Session] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for session in list(_sessions):
        session._after_fork_in_child()


def _drain_at_exit() -> None:
    # A program ended by Ctrl-C: its user wants out; what is left stays in the spool.
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    for session in list(_sessions):
        if interrupted:
            session.logs.bound_exit(INTERRUPT_FLUSH_SECONDS)
        try:
            session.drain_logs_at_exit()
        except Exception as error:  # an exit hook must let the others run
            logger.warning("syvain_metrics: draining log() events at exit failed: %s", error)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_drain_at_exit)
