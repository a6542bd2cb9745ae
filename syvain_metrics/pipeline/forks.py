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
import socket
import threading
import time
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
    _ours[:] = [spool_then_terminate, previous]
    if previous is signal.SIG_DFL:
        _end_if_the_handler_never_runs(current)


def forget_in_child() -> None:
    """In a child forked from a process where :func:`spool_before_sigterm` acted: put back
    what SIGTERM did before (the handler and the backup belong to the parent's sender and
    threads, which the child does not have).

    Example:
        >>> forget_in_child()
    """
    if not _ours:
        return
    handler, previous = _ours
    _ours.clear()
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)
        if _sockets:
            found = signal.set_wakeup_fd(-1)
            if found not in (-1, _sockets[-1][1].fileno()):  # someone else's since: kept
                signal.set_wakeup_fd(found)
    for reader, writer in _sockets:
        reader.close()
        writer.close()
    _sockets.clear()


def _end_if_the_handler_never_runs(current: Callable[[], Sender | None]) -> None:
    """A backup for a SIGTERM whose Python handler never runs (seen, rarely, in a ``Pool``
    worker blocked on the pool's lock: the signal is taken and the worker waits forever,
    and so does ``Pool.__exit__``). The signal's number reaches a wake-up socket all the
    same; a thread reading it spools what is queued and, if the process is still alive a
    moment later, ends it with the status SIGTERM would have given. Nothing is done when
    the process has a wake-up descriptor of its own (asyncio's)."""
    try:
        reader, writer = socket.socketpair()
    except OSError:  # pragma: no cover - out of descriptors: the handler alone
        return
    try:
        writer.setblocking(False)
        before = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        reader.close()
        writer.close()
        return
    if before != -1:  # someone else's: give it back, and rely on the handler
        signal.set_wakeup_fd(before)
        reader.close()
        writer.close()
        return

    def watch() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:  # pragma: no cover - closed
                return
            if not data:
                return
            if signal.SIGTERM in data:
                break
        sender = current()
        if sender is not None:
            with contextlib.suppress(Exception):
                spool_queued(sender, SIGTERM_SPOOL_SECONDS)
        time.sleep(_HANDLER_GRACE)  # the handler's own way out comes first when it runs
        os._exit(128 + signal.SIGTERM)

    _sockets.append((reader, writer))  # kept open for as long as the process lives
    with threads_leave_sigterm_to_main():
        _thread.start_new_thread(watch, ())


_HANDLER_GRACE = 1.0
"""Seconds the backup leaves the SIGTERM handler to end the process itself."""
_sockets: list[tuple[socket.socket, socket.socket]] = []
_ours: list[Any] = []  # [the handler put in front, what was there before]


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    """Act on SIGTERM as the process did before the handler was put in front."""
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)  # dies by the signal, as it would have
