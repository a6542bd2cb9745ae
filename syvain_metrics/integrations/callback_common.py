"""What the callback integrations (Keras, XGBoost, LightGBM, transformers) share: the
evaluation set's metadata key, the context manager that ends a run left open, and the rule
that tells a training continued from a checkpoint from a new training from scratch.

Example:
    >>> EVAL_SET_KEY
    'eval_set'
"""

from __future__ import annotations

import copy
import logging
import time
from types import TracebackType
from typing import Any, ClassVar

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.errors import FlushError
from syvain_metrics.integrations.framework_run import FrameworkRun
from syvain_metrics.resources.experiment import UNSET
from syvain_metrics.resources.folder import folder_id_of

logger = logging.getLogger("syvain_metrics")

EVAL_SET_KEY = "eval_set"
"""The event metadata key naming a value's evaluation set (``{"eval_set": "valid"}``)."""


def run_for_training(previous: FrameworkRun, resume_from: int | None, again: Any) -> FrameworkRun:
    """The run of a training that starts at ``resume_from`` (``None`` or 0: from scratch)
    with a callback whose last run is ``previous``.

    A training from scratch after one that logged steps is a new run,
    ``previous.successor()`` (``<slug>-2``, ``-3``...): two trainings never share steps. A
    training that continues (``resume_from > 0``: a saved model, ``init_model``,
    ``initial_epoch``) continues the same run, through ``again()`` (a new run lifecycle on
    the same slug) once ``previous`` has ended; so does a training after one that entered
    its run and logged nothing (its run holds no value to store twice). Otherwise
    ``previous`` itself.

    Example:
        >>> first = FrameworkRun("gbm-1")
        >>> run_for_training(first, None, None) is first
        True
    """
    if not resume_from and previous.max_step >= 0:
        try:
            return previous.successor()
        except Exception as error:  # a slug too long for a suffix: the same run, warned
            logger.warning("syvain_metrics: no next run after %s (%s)", previous.slug, error)
    if previous.ended:
        follower: FrameworkRun = again()
        if previous.entered and previous.max_step < 0:
            follower.reopening()
        return follower
    return previous


SPOOLING_WAIT_SECONDS = 5.0
"""The longest a trial's run waits, when it ends, for its last events to reach the spool on
disk (the spooler writes them within a fraction of a second, whatever the service does)."""


class TrialRun(FrameworkRun):
    """The run of one trial of a sweep (Optuna, ``hyperparameter_search``): without a
    ``flush_timeout`` and with a spool, it does not wait for the service when it ends. Its
    events are safe on disk and ``done`` follows them, so that a slow or absent service
    never adds the session's whole wait (30 s) to every trial. Without a spool, or with a
    ``flush_timeout`` given, it waits like any run.

    Example:
        >>> TrialRun("sweep-trial-0", framework="optuna").slug
        'sweep-trial-0'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        given = kwargs.get("flush_timeout")
        session = kwargs.get("session")
        self._spooled_end = given is None and _has_spool(session)
        if self._spooled_end:
            kwargs["flush_timeout"] = 0.0
        super().__init__(*args, **kwargs)

    def end(self, error: BaseException | None = None) -> None:
        """End the run once its events are on disk (see the class); never raises.

        Example:
            >>> TrialRun("sweep-trial-0").end()
        """
        if self._spooled_end and self.started:
            _wait_spooled(self)
        super().end(error)


def _has_spool(session: Session | None) -> bool:
    try:
        return get_session(session).spool_dir is not None
    except Exception:  # no session yet: the run's own start reports it
        return False


def _wait_spooled(run: FrameworkRun) -> None:
    """Wait (at most :data:`SPOOLING_WAIT_SECONDS`) until the run's events are acknowledged
    or safe in the spool on disk, whichever comes first."""
    deadline = time.monotonic() + SPOOLING_WAIT_SECONDS
    while True:
        try:
            run.experiment.flush(timeout=0.1)
            return
        except FlushError as error:
            if error.spooled_safely or error.rejected or time.monotonic() >= deadline:
                return
        except Exception:  # never into training: the run's end reports what is left
            return


class ClosingBlock:
    """A callback used as a context manager: a training of the block that raises ends the
    run ``error`` with the exception (the frameworks call no hook then). A subclass defines
    ``_end_open(error)``.

    Example:
        >>> with callback:                                  # doctest: +SKIP
        ...     model.fit(x, y, callbacks=[callback])
    """

    def __enter__(self) -> Any:
        """Watch the trainings of a block.

        Example:
            >>> with callback as cb:  # doctest: +SKIP
            ...     pass
        """
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """End a run the block's training left open: ``error`` with the block's exception."""
        self._end_open(error)

    def _end_open(self, error: BaseException | None) -> None:
        raise NotImplementedError


_LEFT_OUT = "\x00folder-left-out"
"""A folder left out (``UNSET``), as a pickle carries it (``UNSET`` is this process's own)."""


class Copyable:
    """Pickling and deep copies for a callback that holds a :class:`FrameworkRun`, its
    options and a few objects of this process only (locks, the model being trained): those
    are made anew in the copy (``_fresh()``); a pickle leaves the session behind (the
    default session of the process that loads it), and an experiment given as
    ``experiment=`` travels by its slug. A deep copy in this process keeps both.
    (``GridSearchCV(n_jobs=...)`` pickles callbacks; ray pickles the ``Trainer``.)

    Example:
        >>> import pickle
        >>> pickle.loads(pickle.dumps(callback)).slug  # doctest: +SKIP
        'gbm-1'
    """

    _shared: ClassVar[tuple[str, ...]] = ("_given",)
    """Attributes that may hold an Experiment: kept as they are by a deep copy, dropped from
    a pickle (the run keeps the slug)."""

    def _fresh(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        """What a pickle holds: everything but the objects of this process."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._fresh()}
        options = state.get("_options")
        if isinstance(options, dict):
            options = dict(options, session=None)
            if "folder" in options:
                folder = options["folder"]
                # Left out: "the service's default" again where it is loaded.
                options["folder"] = _LEFT_OUT if folder is UNSET else folder_id_of(folder)
            state["_options"] = options
        for name in self._shared:
            if name in state:
                state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A callback from a pickle, its locks made anew."""
        options = state.get("_options")
        if isinstance(options, dict) and options.get("folder") == _LEFT_OUT:
            options["folder"] = UNSET
        self.__dict__.update(state)
        self.__dict__.update(self._fresh())

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A copy in this process: the same session and experiment, a run of its own."""
        keep: list[Any] = [UNSET, *(self.__dict__.get(name) for name in self._shared)]
        options = self.__dict__.get("_options")
        if isinstance(options, dict):
            keep.extend((options.get("session"), options.get("folder")))
        for value in keep:
            if value is not None:
                memo[id(value)] = value  # shared, not copied
        twin = type(self).__new__(type(self))
        fresh = self._fresh()
        state = {k: v for k, v in self.__dict__.items() if k not in fresh}
        twin.__dict__.update(copy.deepcopy(state, memo))
        twin.__dict__.update(fresh)
        return twin
