"""``with exp.run():``: a block run as an experiment, from ``running`` to the status it
earned, through outages, SIGTERM and Ctrl-C.

Example:
    >>> with exp.run(system_metrics=True):  # doctest: +SKIP
    ...     exp.log("loss", 0.5, step=0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from syvain_metrics.contract.limits import DEFAULT_ERROR_NAME, ERROR_DETAIL_MAX, ERROR_NAME_MAX
from syvain_metrics.errors import FlushError, MetricsValidationError
from syvain_metrics.resources.experiment.resuming import Resuming
from syvain_metrics.resources.experiment.system_metrics import SystemSampling
from syvain_metrics.resources.experiment.termination import SigtermGuard

logger = logging.getLogger("syvain_metrics")

_FLUSH_SLICE = 0.2
"""Seconds of one wait while a run ends, between two looks at whether SIGTERM came."""

_Run = TypeVar("_Run", bound="RunBlock")


def clean_exit(exc: BaseException) -> bool:
    """``sys.exit(0)`` / ``sys.exit()`` end a run as done; every other exception as error.

    Example:
        >>> clean_exit(SystemExit(0)), clean_exit(KeyboardInterrupt())
        (True, False)
    """
    return isinstance(exc, SystemExit) and exc.code in (0, None)


def error_payload(error: BaseException | str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``error`` object of a status change, from an exception, a message or a mapping.

    Example:
        >>> error_payload(ValueError("loss is NaN"))
        {'name': 'ValueError', 'detail': 'loss is NaN'}
    """
    if error is None:
        return None
    if isinstance(error, BaseException):
        # Derived from an exception: cut to the limits rather than fail the status update.
        return {
            "name": type(error).__name__[:ERROR_NAME_MAX] or DEFAULT_ERROR_NAME,
            "detail": str(error)[:ERROR_DETAIL_MAX],
        }
    if isinstance(error, str):
        return {"name": DEFAULT_ERROR_NAME, "detail": error}
    if isinstance(error, Mapping):
        return dict(error)
    raise MetricsValidationError({"error": ["Must be an exception, a string or {name, detail}."]})


class RunBlock(SystemSampling, Resuming):
    """``run()`` of an experiment: its status from entry to the end of the block."""

    def run(
        self: _Run,
        *,
        flush_timeout: float | None = None,
        resume_from: int | None = None,
        system_metrics: bool | float = False,
    ) -> AbstractContextManager[_Run]:
        """Run a block as this experiment: ``running`` on entry; on leaving, wait for the
        block's ``log()`` events (up to ``flush_timeout``, by default the session's), then mark
        the run ``done`` after a clean exit (``sys.exit(0)`` included) or ``error`` with the
        exception otherwise, and re-raise it. ``resume_from`` (a job restarted from the
        checkpoint of that step) enters through :meth:`resume`, which records it on the run.

        On the main thread, SIGTERM (how schedulers stop jobs) ends the block like an
        exception: events are flushed (at most 10 s), the run is marked ``error`` ("terminated
        by SIGTERM") and the program exits with status 143. A SIGTERM handler of your own is
        called instead (and restored afterwards): if the block then ends by an exception, the
        run is marked terminated; if it ends cleanly, as usual, with the wait cut to 10 s. A
        SIGTERM while the run is ending cuts the wait to 10 s, and is passed on once the
        status the block earned is recorded.

        ``system_metrics=True`` samples CPU, memory and GPUs every 10 s while the block runs
        (a number: every that many seconds; see :meth:`start_system_metrics`).
        The status changes never fail the job for the service's sake: when the service
        cannot take them now (or the run is not created yet), they wait in the spool with
        the time they happened, applied by the session's sender or by ``syvain-metrics
        sync``. When the wait ends with events safe in the spool but not acknowledged yet (a
        slow or absent service), the run is not marked ``error`` and nothing is raised:
        ``done`` follows the events, never overtaking them (an ``error`` is recorded at once
        when the service takes it). When events were
        rejected, or are held in memory only (no spool), the run is marked ``error`` and
        :class:`~syvain_metrics.FlushError` is raised on a clean exit.

        Ctrl-C (``KeyboardInterrupt``) ends like SIGTERM: the wait for events, and the
        interpreter's exit after it, take at most 10 s in all; the ``error`` status
        ("KeyboardInterrupt") waits in the spool when it cannot be applied by then.

        A run that has finished (``done`` or ``error``, as this object knows it: from the
        service, or because this process ended it) is refused without ``resume_from``:
        :class:`~syvain_metrics.RunFinishedError` is raised before anything is written (a
        notebook cell run again would store every value twice). Its message names the
        choices: a new slug, ``resume_from=<step>`` to continue the run, or
        ``resume_from=0`` to log it again and read with ``last_per_step=True``.

        Example:
            >>> with exp.run():                        # doctest: +SKIP
            ...     exp.log("loss", 0.5, step=0)
            >>> with exp.run(resume_from=500):         # doctest: +SKIP
            ...     exp.log("loss", 0.4, step=500)
        """
        if resume_from is None:
            self._refuse_finished()
        return self._lifecycle(flush_timeout, resume_from, system_metrics)

    @contextmanager
    def _lifecycle(
        self: _Run,
        flush_timeout: float | None,
        resume_from: int | None,
        system_metrics: bool | float,
    ) -> Iterator[_Run]:
        """What :meth:`run` does, a finished run included: a new lifecycle on it (the
        framework integrations' own choice, e.g. Lightning's ``test()`` after ``fit()``)."""
        wait = self._bind().flush_timeout if flush_timeout is None else flush_timeout
        sampler = self._system_sampler(system_metrics)  # refused before the run starts
        if resume_from is None:
            self._record_status("running", None, after_events=False, strict=True)
            self._arrived_finished = False  # entered by this process: it may log
        else:
            self.resume(resume_from)
        guard = SigtermGuard.install()
        if sampler is not None:
            sampler.start()
        error: BaseException | None = None
        try:
            try:
                yield self
            except BaseException as exc:
                error = exc
            guard.defer()
            if sampler is not None:
                sampler.stop()  # its last sample is flushed with the block's events
            self._end_run(error, guard, wait)
        finally:
            guard.restore()  # raises Terminated for a SIGTERM deferred while ending
        if error is not None:
            raise error

    def _end_run(self, error: BaseException | None, guard: SigtermGuard, wait: float) -> None:
        clean = error is None or clean_exit(error)
        if isinstance(error, KeyboardInterrupt):
            wait = self._interrupted_wait(wait)
        flush_error: Exception | None = None
        try:
            self._flush_ending(wait, guard)
        except Exception as exc:  # FlushError, or a session closed under the block
            flush_error = exc
        except KeyboardInterrupt as again:  # Ctrl-C while waiting: stop waiting at once
            self._bind().logs.exit_deadline = time.monotonic()
            self._record_status("error", error_payload(again), after_events=True, strict=False)
            raise
        if guard.signalled_at is not None:
            # Whatever is left is spooled: closing and exiting need not wait any longer.
            self._bind().logs.exit_deadline = guard.cut(float("inf"))
        if guard.signalled_in_block and not clean:
            self._record_failure(
                {"name": "Terminated", "detail": "terminated by SIGTERM"}, flush_error
            )
        elif not clean:
            self._record_failure(error, flush_error)
        elif isinstance(flush_error, FlushError) and flush_error.spooled_safely:
            # Safe on disk, only not acknowledged yet: the job succeeded; "done" follows them.
            logger.warning(
                "syvain_metrics: %d log() events of %s are not acknowledged yet; they wait in "
                "the spool %s and the status 'done' follows them (sent by this process while "
                "it runs, or by `syvain-metrics sync`)",
                flush_error.pending,
                self.slug,
                flush_error.spool_dir,
            )
            self._record_status("done", None, after_events=True, strict=False)
        elif flush_error is not None:
            # Not done while metrics are missing: mark the run failed; they stay spooled.
            self._record_failure(flush_error, None)
            raise flush_error
        else:
            self._record_status("done", None, after_events=False, strict=False)

    def _flush_ending(self, wait: float, guard: SigtermGuard) -> None:
        """Flush within ``wait`` seconds, in short slices so that a SIGTERM arriving meanwhile
        can cut the wait to its own bound. A failure reports what all slices stored."""
        deadline = time.monotonic() + wait
        stored = 0
        while True:
            remaining = guard.cut(deadline) - time.monotonic()
            try:
                stored += self.flush(timeout=max(0.0, min(remaining, _FLUSH_SLICE)))
                return
            except FlushError as error:
                stored += error.stored
                if error.rejected or not error.timed_out or remaining <= _FLUSH_SLICE:
                    raise FlushError(
                        stored=stored,
                        pending=error.pending,
                        rejected=error.rejected,
                        timed_out=error.timed_out,
                        spool_dir=error.spool_dir,
                        unspooled=error.unspooled,
                        non_finite=error.non_finite,
                    ) from None

    def _record_failure(
        self, reason: BaseException | Mapping[str, Any] | None, flush_error: Exception | None
    ) -> None:
        if flush_error is not None:
            logger.warning("could not flush log() events of %s: %s", self.slug, flush_error)
        # Recorded at once when the service takes it (a failed job shows so without delay);
        # with events still on their way, one try only: when it cannot, it waits in the spool.
        struggling = isinstance(flush_error, FlushError) and flush_error.pending > 0
        self._record_status(
            "error",
            error_payload(reason),
            after_events=False,
            strict=False,
            attempts=1 if struggling else None,
        )
