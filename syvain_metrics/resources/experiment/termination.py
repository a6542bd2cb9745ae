"""SIGTERM inside ``experiment.run()``: how SLURM, Kubernetes and most schedulers stop a job.

While a run's block executes on the main thread, SIGTERM becomes a clean shutdown instead
of an abrupt death: with no handler of the user's own, it raises :class:`Terminated` (a
``SystemExit`` with status 143, the shell's code for SIGTERM) where the program is, so
``finally`` blocks run and ``run()`` can flush and mark the run ``error`` ("terminated by
SIGTERM"). A handler the user installed before is called instead (chained), and decides.

Once the block has ended, while ``run()`` flushes and records the status, a SIGTERM is only
noted (:meth:`SigtermGuard.defer`): the flush is cut to its bounded wait, the status the block
earned is recorded, and the signal is passed on when the previous handler is back in place
(:meth:`SigtermGuard.restore`). A SIGTERM that was being ignored stays ignored.

Example:
    >>> guard = SigtermGuard.install()
    >>> guard.signalled
    False
    >>> guard.restore()
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
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


class SigtermGuard:
    """SIGTERM handling around one ``run()`` (a no-op off the main thread or when ignored)."""

    def __init__(self, previous: Any, active: bool) -> None:
        self._previous = previous
        self._active = active
        self._deferred_at: float | None = None
        self._pass_on = False
        self.signalled_at: float | None = None  # time.monotonic() of the first SIGTERM
        self.signalled_in_block = False

    @property
    def signalled(self) -> bool:
        """Whether SIGTERM arrived while the guard was installed."""
        return self.signalled_at is not None

    @classmethod
    def install(cls) -> SigtermGuard:
        """Take over SIGTERM until :meth:`restore`."""
        if threading.current_thread() is not threading.main_thread():
            return cls(None, active=False)
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_IGN:
            return cls(previous, active=False)
        guard = cls(previous, active=True)
        signal.signal(signal.SIGTERM, guard._on_sigterm)
        _installed.append(guard)
        return guard

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if not self._active:
            # Retired, yet still installed: the run ended off the main thread (which cannot
            # put a handler back), or a framework restored ours over its own. SIGTERM does
            # what it did before the run.
            self._forward(signum, frame)
            return
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        if self._deferred_at is not None:
            self._pass_on = True  # after the status is recorded, in restore()
            return
        self.signalled_in_block = True
        if callable(self._previous):
            self._previous(signum, frame)  # the user's own handler decides how to stop
            return
        raise Terminated

    def defer(self) -> None:
        """From now on only note a SIGTERM: the run is ending and records its status first."""
        self._deferred_at = time.monotonic()

    def restore(self) -> None:
        """Put the previous handler back; pass on a SIGTERM that was deferred (to the user's
        handler, or as :class:`Terminated`)."""
        if not self._active:
            return
        self._active = False
        if self in _installed:
            _installed.remove(self)
        previous = self._previous if self._previous is not None else signal.SIG_DFL
        on_main = threading.current_thread() is threading.main_thread()
        if on_main and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, previous)
        # else a framework installed its own handler meanwhile (Lightning does, for a fit):
        # putting ours back would undo it, and its own teardown restores what came before.
        if self._pass_on:
            if callable(previous):
                previous(signal.SIGTERM, None)
            else:
                raise Terminated

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a handler runs on the main thread
            os.kill(os.getpid(), signal.SIGTERM)

    def cut(self, deadline: float) -> float:
        """``deadline`` (monotonic), brought forward after a SIGTERM to
        :data:`TERMINATION_FLUSH_SECONDS` after the later of the signal and the end of the
        block (a handler of the user's own may let the block run on for a while).

        Example:
            >>> SigtermGuard(None, active=False).cut(100.0)
            100.0
        """
        if self.signalled_at is None:
            return deadline
        start = max(self.signalled_at, self._deferred_at or 0.0)
        return min(deadline, start + TERMINATION_FLUSH_SECONDS)


_installed: list[SigtermGuard] = []
"""The guards of this process's ``run()`` blocks, outermost first."""
_mask_before_fork: list[Any] = []


def _before_fork() -> None:
    # SIGTERM waits (blocked) while a child is made inside a run: until the child has
    # dropped the parent's guard, a SIGTERM sent to it must not reach the guard's handler.
    if _installed and hasattr(signal, "pthread_sigmask"):
        _mask_before_fork.append(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))


def _after_fork_in_parent() -> None:
    if _mask_before_fork:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask_before_fork.pop())


def _after_fork_in_child() -> None:
    """A forked child (a ``Pool`` worker, a helper) is not inside its parent's ``run()``:
    SIGTERM does there what it did before the outermost ``run()`` began. The guard's handler
    would raise ``Terminated`` wherever the child is, and is lost where Python swallows
    exceptions (its own fork hooks), leaving a ``Pool`` worker that never ends."""
    if _installed:
        outermost = _installed[0]._previous
        for guard in _installed:
            guard._active = False
        _installed.clear()
        with contextlib.suppress(ValueError, OSError):  # not the main thread: nothing to undo
            signal.signal(signal.SIGTERM, signal.SIG_DFL if outermost is None else outermost)
    if _mask_before_fork:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask_before_fork.pop())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
