"""A session's side of ``log()``: its sender, created on first use, and what closing,
forking and exiting mean for it.

It imports nothing of the session: the session hands it an
:class:`~syvain_metrics.pipeline.delivery.Uplink` (how a batch is sent) and what to run
when a multiprocessing child exits.

Example:
    >>> logs = SessionLogs(uplink, host=url, spool_root=None, interval=1.0,
    ...                    drain=session.drain_logs_at_exit)  # doctest: +SKIP
    >>> logs.sender.put(queued_event("exp-1", "id-1", "loss", 0.5, 0, None, None))  # doctest: +SKIP
    >>> logs.close(timeout=30)                                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from syvain_metrics.errors import FlushError
from syvain_metrics.pipeline.control import ControlRecord
from syvain_metrics.pipeline.delivery import Uplink
from syvain_metrics.pipeline.forks import (
    drop_inherited,
    forget_in_child,
    spool_before_sigterm,
    threads_leave_sigterm_to_main,
)
from syvain_metrics.pipeline.sender import Sender, Settled
from syvain_metrics.pipeline.skipped import SkippedValues
from syvain_metrics.pipeline.spool import CHILDREN, count_leftovers, new_spool_name

logger = logging.getLogger("syvain_metrics")

_CONTROL_POLL = 0.01
"""How often a read waiting for a run's control records looks again (seconds)."""

INTERRUPT_FLUSH_SECONDS = 9.0
"""The longest the end of a run, or the interpreter's exit, waits for pending events after
Ctrl-C: the exit that follows (stopping the sender's threads takes up to 1 s) stays within
the 10 s that SIGTERM gets (``TERMINATION_FLUSH_SECONDS``). What is left stays in the spool."""


class SessionLogs:
    """The ``log()`` machinery of one :class:`~syvain_metrics.Session` in one process.

    Args:
        uplink: how the sender sends a batch once, and the policy that paces its retries.
        host: the service the events go to (recorded in the spool).
        spool_root: where spools live, or ``None`` to keep pending events in memory only.
        interval: the longest an event waits before its batch is sent (seconds).
        drain: run when a multiprocessing child exits (it skips atexit): waits for the
            pending events.
        tags: metadata every event carries (the rank, when every rank of a job writes); an
            event's own key wins.
    """

    def __init__(
        self,
        uplink: Uplink,
        *,
        host: str,
        spool_root: Path | None,
        interval: float,
        drain: Callable[[], None],
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self._uplink = uplink
        self.tags = None if not tags else dict(tags)
        self._forked = False
        self._host = host
        self._drain = drain
        self.interval = interval
        self.spool_root = spool_root
        self.spool_dir = None if spool_root is None else spool_root / new_spool_name()
        self._sender: Sender | None = None
        self._lock = threading.RLock()
        self.exit_deadline: float | None = None
        self.skipped = SkippedValues()
        """The non-finite values ``log()`` counted instead of sending, per experiment."""

    @property
    def sender(self) -> Sender:
        """The sender, started on first use."""
        sender = self._sender
        if sender is not None:
            return sender
        with self._lock:
            if self._sender is None:
                with threads_leave_sigterm_to_main():
                    sender = Sender(
                        self._uplink,
                        host=self._host,
                        spool_dir=self.spool_dir,
                        interval=self.interval,
                    )
                sender.tags = self.tags  # before any event is queued: it is handed out below
                self._sender = sender
                _flush_when_multiprocessing_exits(self)
                if self._forked:
                    spool_before_sigterm(lambda: self._sender)
            return self._sender

    @property
    def started(self) -> bool:
        """Whether a sender runs in this process."""
        return self._sender is not None and not self._sender.stopped

    @property
    def parked(self) -> int:
        """Events left in the spool unsent on purpose (offline mode), in this process."""
        sender = self._sender
        return 0 if sender is None else sender.parked

    def put_control(self, record: ControlRecord) -> bool:
        """Queue a control record behind the events logged so far (starting the sender);
        False once it has stopped. Never raises."""
        try:
            return self.sender.put_control(record)
        except Exception:  # pragma: no cover - a sender that cannot start: said at close
            logger.exception("syvain_metrics: cannot queue the %s", record.describe())
            return False

    def controls_pending(self, experiment_id: str) -> int:
        """Control records of ``experiment_id`` not applied yet, in this process."""
        sender = self._sender
        return 0 if sender is None else sender.controls_pending(experiment_id)

    def resolved_id(self, experiment_id: str) -> str | None:
        """The real id the service gave a run created by a control record, once known."""
        sender = self._sender
        return None if sender is None else sender.resolved_id(experiment_id)

    def pending(self, experiment_id: str) -> int:
        """Events of ``experiment_id`` logged in this process and not answered yet."""
        sender = self._sender
        return 0 if sender is None else sender.pending(experiment_id)

    def wait(self, experiment_ids: Iterable[str] | None, timeout: float | None) -> Settled | None:
        """Wait for the events logged so far (see :meth:`Sender.wait`); ``None`` when nothing
        was ever logged in this process and no forked child left anything to take over."""
        if self._sender is None and self._children_waiting():
            self.sender  # noqa: B018 - started only to take over what children left
        sender = self._sender
        if sender is None:
            return None
        return sender.wait(experiment_ids, timeout)

    def settle(self, experiment_ids: Iterable[str], timeout: float) -> None:
        """Before a read: wait up to ``timeout`` for these experiments' pending events, then
        their control records (annotations, status changes), so a read sees what was logged
        before it. Never raises; a wait that runs out is logged."""
        sender = self._sender
        if sender is None:
            return
        targets = sender.with_placeholders(list(experiment_ids))
        deadline = time.monotonic() + timeout
        if not sender.idle():
            settled = sender.wait(targets, timeout, take_rejections=False, adopt=False)
            if settled.timed_out:
                logger.warning(
                    "syvain_metrics: reading while %d log() events are still on their way "
                    "(waited %.1f s); the answer may miss them",
                    settled.pending,
                    timeout,
                )
                return
        # Then the run's annotations and status changes queued behind those events.
        waiting = sum(sender.controls_pending(target) for target in targets)
        while waiting and time.monotonic() < deadline and not sender.stopped:
            time.sleep(_CONTROL_POLL)
            waiting = sum(sender.controls_pending(target) for target in targets)
        if waiting:
            logger.warning(
                "syvain_metrics: reading while %d annotation(s) or status change(s) of the "
                "run are still on their way; the answer may miss them",
                waiting,
            )

    def spool_now(self, timeout: float) -> bool:
        """Wait until the events logged so far are in the spool on disk (see
        :meth:`~syvain_metrics.pipeline.spooler.Spooler.spool_now`); ``False`` when there is
        no spool or the wait ran out.

        Example:
            >>> session.logs.spool_now(timeout=5.0)  # doctest: +SKIP
            True
        """
        sender = self._sender
        return False if sender is None else sender.spool_now(timeout)

    def settle_controls(self, timeout: float) -> None:
        """Before a listing of runs: wait up to ``timeout`` for the status changes and
        annotations this process still holds for any run (behind their events), so the list
        shows the status ``run()`` or an integration recorded just before. Never raises."""
        sender = self._sender
        if sender is None:
            return
        deadline = time.monotonic() + timeout
        while sender.controls_pending() and not sender.stopped:
            if time.monotonic() >= deadline:
                logger.info(
                    "syvain_metrics: listing runs while status changes are still on their way"
                )
                return
            time.sleep(_CONTROL_POLL)

    def incomplete(
        self, settled: Settled | None, experiment_ids: Iterable[str] | None = None
    ) -> FlushError | None:
        """The error that says what ``settled`` could not confirm, if anything, with the
        non-finite values skipped for ``experiment_ids`` (``None``: every experiment).

        When the spool could not be created or written since the last call (a full disk),
        or is refused, a ``UserWarning`` says so first: events held in memory only are lost
        if the process is killed, and the user, not only the log, should know it. When
        nothing else is wrong, non-finite values skipped since the last such report are
        told by one ``UserWarning`` ("1 non-finite value of loss was not sent (run
        'run-1')"); a ``FlushError`` carries them in ``non_finite`` instead."""
        sender = self._sender
        notice = None if sender is None else sender.take_spool_notice()
        if notice is not None:
            warnings.warn(f"syvain_metrics: {notice}", UserWarning, stacklevel=3)
        if settled is None or (not settled.pending and not settled.rejected):
            summary = self.skipped.take_summary(experiment_ids)
            if summary is not None:
                warnings.warn(f"syvain_metrics: {summary}", UserWarning, stacklevel=3)
            return None
        spool = None if sender is None or sender.spool is None else sender.spool.directory
        return FlushError(
            stored=settled.stored,
            pending=settled.pending,
            rejected=settled.rejected,
            timed_out=settled.timed_out,
            spool_dir=None if spool is None else str(spool),
            unspooled=0 if sender is None else min(sender.unspooled(), settled.pending),
            non_finite=self.skipped.totals(experiment_ids),
        )

    def exit_wait(self, timeout: float) -> float:
        """How long interpreter exit may still wait: ``timeout``, or less once a SIGTERM set
        a deadline (what is left stays in the spool).

        Example:
            >>> logs.exit_wait(30.0)  # doctest: +SKIP
            30.0
        """
        if self.exit_deadline is None:
            return timeout
        return max(0.0, min(timeout, self.exit_deadline - time.monotonic()))

    def bound_exit(self, seconds: float) -> float:
        """From now on, closing and the interpreter's exit wait at most ``seconds`` more (a
        run interrupted by Ctrl-C); returns ``seconds``.

        Example:
            >>> logs.bound_exit(9.0)  # doctest: +SKIP
            9.0
        """
        deadline = time.monotonic() + seconds
        if self.exit_deadline is None or deadline < self.exit_deadline:
            self.exit_deadline = deadline
        return seconds

    def close(self, timeout: float | None) -> FlushError | None:
        """Wait up to ``timeout`` for every pending event, stop the sender and close the
        spool. Returns the error describing what was not confirmed (``None``: all stored)."""
        if self._sender is None and self._children_waiting():
            self.sender  # noqa: B018 - started only to take over what children left
        sender = self._sender
        if sender is None:
            return self.incomplete(None)  # nothing sent: only skipped values to tell
        settled = sender.close(timeout)
        return self.incomplete(settled)

    def _children_waiting(self) -> bool:
        children = None if self.spool_dir is None else self.spool_dir / CHILDREN
        return children is not None and children.is_dir() and any(children.iterdir())

    def after_fork(self) -> None:
        """In a forked child: forget the parent's sender (its threads did not survive the
        fork, and its pending events are the parent's to send); spool under the parent's
        spool so that the parent, or ``syvain-metrics sync``, recovers what this child
        leaves behind."""
        inherited = self._sender
        if inherited is not None:
            drop_inherited(inherited)
        forget_in_child()
        self._sender = None
        self._forked = True
        self._lock = threading.RLock()
        self.exit_deadline = None
        self.skipped = SkippedValues()  # the parent's counts are the parent's to report
        if self.spool_dir is not None:
            self.spool_dir = self.spool_dir / CHILDREN / new_spool_name()

    def offer_leftovers(self) -> None:
        """Log that dead processes left events behind in this session's spool root."""
        if self.spool_root is None:
            return
        try:
            spools, files = count_leftovers(self.spool_root)
        except OSError:
            return
        if files:
            logger.warning(
                "syvain_metrics: %d file(s) of log() events and run records (creations, "
                "statuses, annotations) left by %d ended process(es) wait in %s; run "
                "`syvain-metrics sync` to upload them",
                files,
                spools,
                self.spool_root,
            )


def _flush_when_multiprocessing_exits(logs: SessionLogs) -> None:
    """A multiprocessing child started by fork ends with ``os._exit``, which skips atexit;
    multiprocessing's own exit finalizers still run, so the sender is drained from there."""
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None or multiprocessing.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(logs, logs._drain, exitpriority=10)
