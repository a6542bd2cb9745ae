"""Whether the sender's spool can be written, and what to tell the user when it cannot.

The spooler creates the spool on its first pass, so ``log()`` never touches the disk.
When the spool cannot be created or written (a full disk, a file where its directory
should be), logging carries on in memory and the spooler tries again after
:data:`SPOOL_RETRY_FIRST` seconds, then twice as long each time up to
:data:`SPOOL_RETRY_CAP` (one attempt each time). Until it succeeds, ``flush()``, the end
of ``run()`` and ``close()`` say how many events a kill would lose
(:meth:`SpoolHealth.take_notice`). A spool directory found in place already that is not
this user's (another user's, a link) is never used nor tried again: the session keeps its
events in memory only, and says so once, with the reason.

Example:
    >>> health = SpoolHealth(None, host="http://127.0.0.1:8765")
    >>> health.create(), health.spool, health.take_notice(lambda: 0)
    (None, None, None)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from syvain_metrics.pipeline.spool import Spool, UntrustedSpoolError

logger = logging.getLogger("syvain_metrics")

SPOOL_RETRY_FIRST = 1.0
"""Seconds after a failed spool write or creation (a full disk) before the spooler tries
again."""

SPOOL_RETRY_CAP = 15.0
"""The longest pause between two tries of a spool that failed (doubling up to it)."""

Verb = Literal["created", "written"]
"""What a spool failure failed to do."""


class SpoolHealth:
    """The spool of one sender (created lazily, on the spooler thread) and its troubles.

    Args:
        spool_dir: where the spool goes (``None``: memory only; nothing is ever tried).
        host: the service the events are for, recorded in the spool.
    """

    def __init__(self, spool_dir: Path | None, *, host: str) -> None:
        self.spool_dir = spool_dir
        self.host = host
        self.spool: Spool | None = None
        self.writing = False  # whether new events go to the disk now
        self.retry_at = 0.0
        self._backoff = SPOOL_RETRY_FIRST
        self.failure: str | None = None  # the error of the current trouble
        self._error = ""  # the last error, for the notice after it is over
        self._verb: Verb = "written"  # what failed
        self.refused: str | None = None  # why spool_dir is never used, if it is not
        self._failed_since: float | None = None  # wall clock, for people
        self._notice_due = False
        self._lock = threading.Lock()  # take_notice() runs on the user's thread

    def create(self) -> None:
        """One attempt at creating the spool, when it is due: at the first pass, then at
        the pace of :meth:`failed`; never again once the directory is refused."""
        if self.spool_dir is None or self.refused is not None or time.monotonic() < self.retry_at:
            return
        try:
            spool = Spool.create(self.spool_dir, host=self.host)
        except UntrustedSpoolError as error:
            self.refuse(error)
        except OSError as error:
            self.failed(error, "created")
        else:
            self.spool = spool
            self.writing = True  # recovery is declared once events are written

    def failed(self, error: OSError, verb: Verb = "written") -> None:
        """Spooling stops until the next try, at most :data:`SPOOL_RETRY_CAP` seconds away."""
        if self.failure is None:
            logger.warning(
                "syvain_metrics: the log() spool in %s cannot be %s (%s); pending events are "
                "kept in memory only until it can be",
                self.spool_dir,
                verb,
                error,
            )
            self._failed_since = time.time()
            with self._lock:
                self._notice_due = True  # once per episode; FlushError tells the rest
        self._verb = verb
        self.failure = self._error = error.strerror or str(error)
        self.writing = False
        self.retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, SPOOL_RETRY_CAP)

    def written(self) -> None:
        """A spool write succeeded: a trouble, if there was one, is over."""
        if self.failure is None:
            return
        logger.warning("syvain_metrics: the log() spool is written again")
        self.failure = None
        self._backoff = SPOOL_RETRY_FIRST

    def refuse(self, error: UntrustedSpoolError) -> None:
        """``spool_dir`` is not this user's: events stay in memory only for good. Retrying
        would meet the same directory, so the user is told once instead, with the reason."""
        self.refused = str(error)
        logger.warning(
            "syvain_metrics: the log() spool is refused (%s); pending events are kept in "
            "memory only",
            error,
        )
        with self._lock:
            self._notice_due = True

    def take_notice(self, unspooled: Callable[[], int]) -> str | None:
        """What to tell the user about the spool since the last notice: that it could not
        be created or written, or is refused, and how many events (``unspooled()``) a kill
        would lose now (``None``: nothing to tell)."""
        with self._lock:
            due, self._notice_due = self._notice_due, False
        if not due or self.spool_dir is None:
            return None
        where = f"the log() spool in {self.spool_dir}"
        if self.refused is not None:
            return (
                f"{where} is refused ({self.refused}); log() events are held in memory "
                f"only until they are sent, and the {unspooled()} pending now would be "
                "lost if this process were killed"
            )
        since = time.strftime("%H:%M:%S", time.localtime(self._failed_since or 0))
        verb = self._verb
        if self.failure is None:
            return (
                f"{where} could not be {verb} from {since} for a while ({self._error}); "
                "it is written again, and no pending event is held in memory only"
            )
        return (
            f"{where} cannot be {verb} since {since} ({self._error}); "
            f"{unspooled()} pending events are held in memory only and would be lost if "
            f"this process were killed (the spool is tried again every {SPOOL_RETRY_CAP:g} s "
            "at most)"
        )
