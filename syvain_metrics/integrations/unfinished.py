"""Runs a framework never ended: the fit raised (Keras, transformers, LightGBM and XGBoost
call no hook of a callback on an exception) or the program stopped before the last hook.

Each started :class:`~syvain_metrics.integrations.framework_run.FrameworkRun` is noted here
until it ends. An uncaught exception is seen through a chained ``sys.excepthook``; at
interpreter exit, before the session drains its events, every run still open is ended:
``error`` with that exception, or ``error`` "the process exited before the framework ended
the run" when there was none (the framework's end hook never came, so the run cannot be
called done).

Example:
    >>> UNFINISHED_DETAIL.startswith("the process exited")
    True
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from types import TracebackType
from typing import Protocol


class Endable(Protocol):
    """What this module ends: a run with ``end(error)`` (a ``FrameworkRun``)."""

    def end(self, error: BaseException | None = None) -> None: ...


UNFINISHED_DETAIL = "the process exited before the framework ended the run"

# Held strongly: a run nobody references any more is still open, and is ended here (with
# its own exception or UnfinishedRunError), not by the garbage collector closing its block.
_open: set[Endable] = set()
_lock = threading.Lock()
_installed = False
_uncaught: BaseException | None = None


class UnfinishedRunError(RuntimeError):
    """The reason recorded for a run that stopped before the framework's end with no
    exception to blame (one raised and caught before the integration could see it), at exit
    or when the integration trains again.

    Example:
        >>> str(UnfinishedRunError())
        'the process exited before the framework ended the run'
        >>> str(UnfinishedRunError("training stopped after iteration 4 of 10"))
        'training stopped after iteration 4 of 10'
    """

    def __init__(self, detail: str = UNFINISHED_DETAIL) -> None:
        super().__init__(detail)


def opened(run: Endable) -> None:
    """Note a run that has started (installs the hooks on first use)."""
    global _installed
    with _lock:
        _open.add(run)
        if _installed:
            return
        _installed = True
    previous = sys.excepthook

    def excepthook(
        kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        global _uncaught
        _uncaught = error
        previous(kind, error, trace)

    sys.excepthook = excepthook
    # Registered after the session module's own exit hook, so it runs before the drain.
    atexit.register(end_open_runs)


def closed(run: Endable) -> None:
    """Forget a run that has ended."""
    with _lock:
        _open.discard(run)


def _forget_in_child() -> None:
    """A forked child (a ``Pool`` worker, a ``DataLoader`` worker) did not start its parent's
    runs: its exit must not end them."""
    global _uncaught
    _open.clear()
    _uncaught = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def end_open_runs() -> None:
    """End every run still open: ``error`` with the uncaught exception, or
    :class:`UnfinishedRunError`.

    Example:
        >>> end_open_runs()
    """
    with _lock:
        runs = list(_open)
        _open.clear()
    passed_on: BaseException | None = None
    for run in runs:
        try:
            run.end(_uncaught if _uncaught is not None else UnfinishedRunError())
        except BaseException as signal_passed_on:  # a SIGTERM noted while ending: the others first
            passed_on = passed_on or signal_passed_on
    if passed_on is not None:
        raise passed_on
