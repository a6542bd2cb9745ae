"""What every integration takes besides the run's identity: option checks made before
training starts, the slug of a run nobody named, and the run a training from scratch goes
to when the one it names has finished.

Example:
    >>> check_options(system_metrics=10, flush_timeout=None)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
from typing import Protocol, TypeVar

from syvain_metrics.errors import MetricsApiError, MetricsValidationError
from syvain_metrics.resources.experiment.base import FINISHED, ExperimentBase

logger = logging.getLogger("syvain_metrics")

FREE_RUN_LOOKUPS = 100
"""The most runs after a finished one looked at for one that has not finished."""


def default_slug(framework: str) -> str:
    """A slug for a run nobody named: the framework, the time and four random characters.

    Example:
        >>> default_slug("lightning").startswith("lightning-")
        True
    """
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{framework}-{now}-{secrets.token_hex(2)}"


def check_options(*, system_metrics: object, flush_timeout: object, **flags: object) -> None:
    """Refuse, before training starts, options of a callback that could only fail later.

    Example:
        >>> check_options(system_metrics=False, flush_timeout=None, log_batches=True)
        >>> check_options(system_metrics=False, flush_timeout=-1)
        Traceback (most recent call last):
        syvain_metrics.errors.MetricsValidationError: ...
    """
    problems: dict[str, list[str]] = {}
    for name, value in flags.items():
        if not isinstance(value, bool):
            problems[name] = [f"Must be True or False; got {value!r}."]
    if not isinstance(system_metrics, bool) and not (
        isinstance(system_metrics, int | float)
        and math.isfinite(system_metrics)
        and system_metrics > 0
    ):
        problems["system_metrics"] = [
            f"Must be True, False or a number of seconds > 0; got {system_metrics!r}."
        ]
    if flush_timeout is not None and (
        isinstance(flush_timeout, bool)
        or not isinstance(flush_timeout, int | float)
        or not flush_timeout >= 0
    ):
        problems["flush_timeout"] = [
            f"Must be None or a number of seconds >= 0; got {flush_timeout!r}."
        ]
    if problems:
        raise MetricsValidationError(problems)


_Run = TypeVar("_Run", bound="Successive")


class Successive(Protocol):
    """A run that names its successor (a ``FrameworkRun``).

    Example:
        >>> sorted(name for name in vars(Successive) if not name.startswith("_"))
        ['experiment', 'slug', 'successor']
    """

    @property
    def slug(self) -> str:
        """The run's slug."""

    @property
    def experiment(self) -> ExperimentBase:
        """The run's experiment, created on first use."""

    def successor(self: _Run) -> _Run:
        """The next run, ``<slug>-2``, ``-3``..."""


def finished(experiment: ExperimentBase) -> bool:
    """Whether a run has finished (``done`` or ``error``), as the object knows it: no request.

    Example:
        >>> finished(ExperimentBase({"status": "done"}, session=None))
        True
    """
    return experiment._data.get("status") in FINISHED


def next_free_run(run: _Run) -> _Run:
    """The first of ``run``'s successors (``<slug>-2``, ``-3``...) whose experiment has not
    finished (created when missing), for a training from scratch into a run that has: a
    cell run again never stores its values twice. One warning names both runs.

    Example:
        >>> next_free_run(FrameworkRun("sgd-0.1")).slug  # 'sgd-0.1' done  # doctest: +SKIP
        'sgd-0.1-2'
    """
    follower = run
    for _ in range(FREE_RUN_LOOKUPS):
        follower = follower.successor()
        if not finished(follower.experiment):
            break
    else:
        raise MetricsApiError(f"the {FREE_RUN_LOOKUPS} runs after {run.slug!r} have finished")
    logger.warning(
        "syvain_metrics: run %r has already finished (%s); this training logs into %r "
        "instead (a training resumed from a checkpoint continues %r)",
        run.slug,
        run.experiment.status,
        follower.slug,
        run.slug,
    )
    return follower
