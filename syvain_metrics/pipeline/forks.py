"""What a forked child does with the ``log()`` machinery it inherited, and how it keeps its
own events when it is terminated.

A child made by ``fork`` (a ``multiprocessing.Pool`` worker, a data-loader worker, a
helper) inherits the parent's spool descriptors, the spool's lock among them: a child
that outlives its parent would keep the parent's spool locked, and ``syvain-metrics sync``
would take it for a live process's. :func:`drop_inherited` closes the child's copies.

``Pool.__exit__`` (and ``Pool.terminate()``) ends its workers with SIGTERM, often while
their sender still holds the last events they logged: a default SIGTERM kills the worker
at once, and a handler inherited from the parent (``run()``'s, say) interrupts its exit
flush. :func:`spool_before_sigterm` puts a handler in front, in forked children only: it
waits (at most :data:`SIGTERM_SPOOL_SECONDS`) until everything queued is written to the
child's spool, then lets the signal do what it did before. The parent's next ``flush()``,
``close()`` or the end of its ``run()`` takes over what the child left (or ``sync`` does).

Example:
    >>> spool_before_sigterm(lambda: session.logs.sender)  # doctest: +SKIP
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syvain_metrics.pipeline.sender import Sender

logger = logging.getLogger("syvain_metrics")

SIGTERM_SPOOL_SECONDS = 2.0
"""The longest a terminated child waits for its queued events to reach its spool (a pass
of the spooler takes milliseconds; the bound is for a disk that hangs)."""


@contextlib.contextmanager
def threads_leave_sigterm_to_main() -> Iterator[None]:
    """Threads started inside the block never take SIGTERM: the kernel gives a signal sent
    to the process to any thread that does not block it, and Python runs handlers on the
    main thread only, so a SIGTERM taken by a background thread leaves a main thread blocked
    in a lock (a ``Pool`` worker waiting for a task) unaware of it forever.

    Example:
        >>> with threads_leave_sigterm_to_main():
        ...     pass
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # pragma: no cover - Windows: no such signal delivery
        yield
        return
    before = mask(signal.SIG_BLOCK, {signal.SIGTERM})  # new threads inherit the mask
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, before)


def drop_inherited(sender: Sender) -> None:
    """In a forked child: close the copies of the parent's spool descriptors (its lock, its
    open batch files, the claims on children's spools it took over); nothing on disk changes.

    Example:
        >>> drop_inherited(session.logs.sender)  # doctest: +SKIP
    """
    spool = sender.spool
    if spool is not None:
        spool.drop_inherited()
    for claim in sender._adopted:
        claim.drop_inherited()


def spool_queued(sender: Sender, timeout: float) -> bool:
    """Wait until every event queued before the call is written to the spool (not sent):
    whether that happened within ``timeout`` seconds.

    Example:
        >>> spool_queued(session.logs.sender, 2.0)  # doctest: +SKIP
        True
    """
    if sender.stopped:
        # Closing: the spooler's last pass takes what is queued; let it finish.
        sender._spooler.join(timeout)
        return not sender._spooler.is_alive()
    # A wait for no experiment is reached as soon as the spooler has written what came before.
    settled = sender.wait((), timeout, take_rejections=False, adopt=False)
    return not settled.timed_out


def spool_before_sigterm(current: Callable[[], Sender | None]) -> None:
    """In a forked child, on the main thread: on SIGTERM, first write the queued events of
    the sender ``current()`` returns to the spool, then act as before (die by the signal, or call the handler that
    was there). Nothing is changed when SIGTERM is ignored or cannot be handled here.

    The handler itself never waits: the signal may have interrupted this thread while it
    holds a lock the spooler needs (the sender's wake-up event, say). It starts a thread that
    waits for the spooler, and that thread sends SIGTERM to the main thread again once the
    events are on disk (or after :data:`SIGTERM_SPOOL_SECONDS`); the handler then passes it on.

    Example:
        >>> spool_before_sigterm(lambda: session.logs.sender)  # doctest: +SKIP
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):  # pragma: no cover - no SIGTERM on this platform
        return
    if previous is signal.SIG_IGN or previous is None:  # None: set outside Python
        return
    main = threading.get_ident()
    state = {"spooling": False, "spooled": False}

    def spool_then_signal_again() -> None:
        sender = current()
        try:
            if sender is not None and not spool_queued(sender, SIGTERM_SPOOL_SECONDS):
                logger.warning(
                    "syvain_metrics: terminated before the last log() events were spooled"
                )
        except Exception as error:  # the signal must still end the process
            logger.warning("syvain_metrics: spooling at SIGTERM failed: %s", error)
        finally:
            state["spooled"] = True
            # To the main thread itself: a blocking call there is interrupted, the handler runs.
            signal.pthread_kill(main, signal.SIGTERM)

    def spool_then_terminate(signum: int, frame: FrameType | None) -> None:
        if state["spooled"] or current() is None:
            _pass_on(previous, signum, frame)
        elif not state["spooling"]:
            state["spooling"] = True
            # A bare thread: threading.Thread.start() takes locks this thread may hold.
            with threads_leave_sigterm_to_main():
                _thread.start_new_thread(spool_then_signal_again, ())

    try:
        signal.signal(signal.SIGTERM, spool_then_terminate)
    except (ValueError, OSError):  # pragma: no cover - not the main thread after all
        return


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    """Act on SIGTERM as the process did before the handler was put in front."""
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # dies by the signal, as it would have
