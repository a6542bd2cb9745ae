"""SIGTERM inside ``experiment.run()``: how SLURM, Kubernetes and most schedulers stop a job.

While a run is active on the main thread, SIGTERM becomes a clean shutdown instead of an
abrupt death: with no handler of the user's own, it raises :class:`Terminated` (a
``SystemExit`` with status 143, the shell's code for SIGTERM) where the program is, so
``finally`` blocks run and ``run()`` can flush and mark the run ``error`` ("terminated by
SIGTERM"). A handler the user installed before is called as well (chained), and put back
when the run ends. A SIGTERM that was being ignored stays ignored.

Example:
    >>> with sigterm_guard() as guard:
    ...     guard.signalled
    False
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

TERMINATION_FLUSH_SECONDS = 10.0
"""The longest ``run()`` waits for pending events after SIGTERM: well inside the 30 s grace
of Kubernetes and of SLURM's default ``KillWait``. What is left stays in the spool."""


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives during ``run()``; exits with 128 + 15.

    Example:
        >>> str(Terminated())
        'terminated by SIGTERM'
        >>> Terminated().code
        143
    """

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)

    def __str__(self) -> str:
        return "terminated by SIGTERM"


class _Guard:
    signalled = False


@contextmanager
def sigterm_guard() -> Iterator[_Guard]:
    """Turn SIGTERM into :class:`Terminated` for the duration of the block (main thread only;
    elsewhere the block runs as is). ``guard.signalled`` tells whether SIGTERM arrived."""
    guard = _Guard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous: Any = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield guard
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        guard.signalled = True
        if callable(previous):
            previous(signum, frame)  # the user's own handler decides how to stop
            return
        raise Terminated

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield guard
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
