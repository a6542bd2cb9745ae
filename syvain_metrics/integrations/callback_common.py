"""What the callback integrations (Keras, XGBoost, LightGBM, transformers) share: the
evaluation set's metadata key, the context manager that ends a run left open, and the rule
that tells a training continued from a checkpoint from a new training from scratch.

Example:
    >>> EVAL_SET_KEY
    'eval_set'
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from syvain_metrics.integrations.framework_run import FrameworkRun

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
    the same slug) once ``previous`` has ended. Otherwise ``previous`` itself.

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
        return follower
    return previous


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
