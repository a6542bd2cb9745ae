"""Ctrl-C and SIGTERM for a command that starts a server: a clean stop at any moment.

``syvain-metrics serve`` installs a :class:`SignalGuard` as its first instruction. From
then on, SIGINT (Ctrl-C) and SIGTERM raise :class:`Stopped` (a ``KeyboardInterrupt``, so
waitress ends its loop as after Ctrl-C) in the main thread, wherever it is, and the command
cleans up what it made and exits 0 (SIGINT) or 143 (SIGTERM, 128 + 15), without a traceback.
Steps that must not be cut in two (printing a login link, stopping everything) run under
:func:`held`: a signal that arrives there is acted on when the step is done. With
``--processes N`` gunicorn's arbiter takes the signals over once it runs
(:meth:`SignalGuard.hand_over`): it records the first one here (:meth:`SignalGuard.note`) and
acts on it itself. Only the first signal counts; a second one while
the command is stopping changes nothing (stopping is bounded by its own time limits).

For tests, ``SYVAIN_METRICS_SERVE_PAUSE_AT=<stage>`` (one of :data:`STAGES`) makes the
process write ``syvain-metrics serve: paused at <stage>`` on stderr when it reaches that
stage and wait there for a signal, so a test can signal it at each stage of start-up and
shut-down without sleeping. Unset, :func:`stage` returns at once.

Example:
    >>> guard = SignalGuard()  # not installed: nothing changes until install()
    >>> guard.received is None, guard.exit_status
    (True, 0)
    >>> with held():  # without an installed guard, held() is a plain block
    ...     print("one whole line")
    one whole line
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

PAUSE_ENV = "SYVAIN_METRICS_SERVE_PAUSE_AT"
"""The environment variable naming the stage at which a process pauses (tests only)."""

STAGES = (
    "started",  # the guard is installed; nothing is open yet
    "store-open",  # the database is open and the API keys are accepted
    "worker-started",  # --processes: gunicorn forked a worker process, not yet ready
    "worker-begin",  # in a worker: just forked, its guard installed, nothing open yet
    "worker-ready",  # in a worker: its database and application are made, not yet serving
    "listening",  # the server is bound (and its workers are ready); nothing printed
    "printing",  # in the middle of the printed lines (signals held): the address is out
    "serving",  # everything is printed; the server is about to serve
    "stopping",  # a signal was acted on; cleaning up (signals held)
)
"""Where a ``serve`` process (or one of its worker processes) can be paused, in order."""

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
"""The exit status after SIGTERM, as a shell reports a process ended by that signal."""

_current: SignalGuard | None = None


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by the signal a :class:`SignalGuard` handles.

    Example:
        >>> Stopped(signal.SIGTERM).signum == signal.SIGTERM
        True
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
    """Turns SIGINT and SIGTERM into :class:`Stopped` from :meth:`install` on, except inside
    :func:`held`, where the signal waits for the block's end.

    Example:
        >>> guard = SignalGuard()
        >>> guard.received = signal.SIGTERM  # what the handler records
        >>> guard.exit_status
        143
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.pause_at: str | None = None
        self._holding = 0
        self._raised = False
        self._handed_over = False
        self._previous: dict[int, Any] = {}

    @property
    def exit_status(self) -> int:
        """143 after SIGTERM, else 0 (Ctrl-C, or no signal).

        Example:
            >>> SignalGuard().exit_status
            0
        """
        return SIGTERM_EXIT_STATUS if self.received == signal.SIGTERM else 0

    def install(self) -> SignalGuard:
        """Handle SIGINT and SIGTERM in this process (the main thread only: elsewhere, and
        for a second guard, nothing changes). Raises ``ValueError`` if :data:`PAUSE_ENV`
        names no stage.

        Example:
            >>> guard = SignalGuard().install()
            >>> signal.getsignal(signal.SIGTERM) == guard._handle
            True
            >>> guard.restore()
        """
        global _current
        pause_at = os.environ.get(PAUSE_ENV) or None
        if pause_at is not None and pause_at not in STAGES:
            raise ValueError(f"{PAUSE_ENV} names no stage; one of: {', '.join(STAGES)}")
        if threading.current_thread() is not threading.main_thread() or _current is not None:
            return self
        self.pause_at = pause_at
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        _current = self
        return self

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced.

        Example:
            >>> before = signal.getsignal(signal.SIGINT)
            >>> SignalGuard().install().restore()
            >>> signal.getsignal(signal.SIGINT) is before
            True
        """
        global _current
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if _current is self:
            _current = None

    def hand_over(self) -> None:
        """Another handler acts on the signals from now on (gunicorn's arbiter): they are
        only recorded here, through :meth:`note`, and :func:`held` raises nothing."""
        self._handed_over = True
        self._raised = True

    def note(self, signum: int) -> bool:
        """Record a signal acted on elsewhere; ``True`` for the first (later ones change
        nothing).

        Example:
            >>> guard = SignalGuard()
            >>> guard.note(signal.SIGINT), guard.note(signal.SIGTERM), guard.exit_status
            (True, False, 0)
        """
        if self.received is not None:
            return False
        self.received = signum
        return True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.note(signum):
            return  # already stopping
        if self._holding == 0 and not self._handed_over:
            self._raised = True
            raise Stopped(signum)

    @contextmanager
    def _held(self) -> Iterator[None]:
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        # Reached only when the block ended normally: an error of its own goes on as it is.
        if self._holding == 0 and self.received is not None and not self._raised:
            self._raised = True
            raise Stopped(self.received)

    def _pause(self, name: str) -> None:
        # Any Python-level handler writes the signal's number to the wake-up pipe even if it
        # arrives before the wait begins, so the wait cannot miss it; this guard's handler
        # raises (or, inside held(), records) as soon as the main thread runs again, and
        # gunicorn's (in its arbiter and workers) record it to be acted on after the pause.
        # Other signals (a worker ending: SIGCHLD) do not end the pause.
        reading, writing = os.pipe()
        os.set_blocking(writing, False)
        previous = signal.set_wakeup_fd(writing)
        try:
            print(f"syvain-metrics serve: paused at {name}", file=sys.stderr, flush=True)
            while not {signal.SIGINT, signal.SIGTERM} & set(os.read(reading, 64)):
                pass
        finally:
            signal.set_wakeup_fd(previous)
            os.close(reading)
            os.close(writing)


@contextmanager
def held() -> Iterator[None]:
    """A block that a guarded signal does not cut in two: the signal is acted on (raised
    as :class:`Stopped`) when the block ends. Without an installed guard, a plain block.

    Example:
        >>> with held():
        ...     pass
    """
    if _current is None:
        yield
        return
    with _current._held():
        yield


def forget_after_fork() -> None:
    """In a process just forked from a guarded one: the parent's guard is not this
    process's (its handlers are replaced by the child's own)."""
    global _current
    _current = None


def stage(name: str) -> None:
    """Mark a stage of start-up or shut-down (one of :data:`STAGES`); pauses there until a
    signal arrives when :data:`PAUSE_ENV` names it, else returns at once.

    Example:
        >>> stage("started")  # no guard installed, no pause asked for: nothing happens
    """
    guard = _current
    if guard is None or guard.pause_at != name:
        return
    guard._pause(name)
