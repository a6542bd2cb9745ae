"""Continuing a run in a job restarted from a checkpoint: ``resume()``.

A job killed at step 1,200 and restarted from its checkpoint at step 1,000 logs steps
1,000-1,200 again. Both copies are stored (each ``log()`` call is its own event); reads with
``last_per_step=True`` keep the later one at each step, so the run reads as one curve.

Example:
    >>> exp = sm.Experiment.create("run-1", exist_ok=True)  # doctest: +SKIP
    >>> with exp.run(resume_from=checkpoint["step"]):      # doctest: +SKIP
    ...     for step in range(checkpoint["step"], 10_000):
    ...         exp.log("loss", train_step(), step=step)
    >>> exp.metrics("loss", last_per_step=True).steps[-3:]  # doctest: +SKIP
    [9997, 9998, 9999]
"""

from __future__ import annotations

import logging
import operator
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.pipeline.control import is_pending_id
from syvain_metrics.resources.experiment.annotations import Annotating

logger = logging.getLogger("syvain_metrics")

RESUMED_KEY = "resumed_from_step"
"""The annotation metadata key that marks a resume (beside ``step``, which plots use)."""


def checked_step(step: Any) -> int:
    """``step`` as an ``int`` if it is a whole number ≥ 0 (numpy integers included); else a
    :class:`MetricsValidationError` naming it.

    Example:
        >>> checked_step(1000)
        1000
        >>> checked_step(-1)
        Traceback (most recent call last):
        syvain_metrics.errors.MetricsValidationError: ...
    """
    try:
        value = None if isinstance(step, bool) else operator.index(step)
    except TypeError:
        value = None
    if value is None or value < 0:
        raise MetricsValidationError(
            {"step": [f"Must be a whole number >= 0 (the checkpoint's step); got {step!r}."]}
        )
    return value


def resume_text(step: int) -> str:
    """The annotation that records a resume.

    Example:
        >>> resume_text(1000)
        'resumed from step 1,000'
    """
    return f"resumed from step {step:,}"


class Resuming(Annotating):
    """``resume()``: continue a run after a restart."""

    if TYPE_CHECKING:

        def set_status(self, status: str) -> Any:
            """Defined by :class:`~syvain_metrics.Experiment`."""

    def resume(self, step: int) -> Any:
        """Continue this run in a job restarted from the checkpoint of ``step``: the status
        goes back to ``running`` (from ``done`` or ``error`` too) and the annotation
        "resumed from step 1,000" (metadata ``{"resumed_from_step": 1000, "step": 1000}``,
        drawn by ``plot(annotations=exp.annotations())``) records where. A run that never
        started (status ``created``) is only started, so one script serves the first launch
        and every restart; a run whose creation waits for the service (an outage at
        start-up) cannot tell yet, and records the resume. Returns the experiment. ``exp.run(resume_from=step)`` does this
        on entering the block.

        Then log from ``step`` on as usual. The steps the killed job logged after its
        checkpoint are stored twice; reads with ``last_per_step=True`` (``metrics()``,
        ``compare()``, ``summary()``, ``to_pandas()``, ``plot()``) keep the copy logged
        last, so the run reads as one curve. The annotation is best effort: failing to
        record it is logged, never raised into the job. ``run(resume_from=0)`` logs a
        finished run again from the start on purpose (what ``run()`` alone refuses): read
        with ``last_per_step=True``, each step shows the value logged last, and steps the
        new pass does not reach keep their old values.

        Example:
            >>> exp = sm.Experiment.create("run-1", exist_ok=True).resume(1000)  # doctest: +SKIP
            >>> exp.status, exp.annotations()[-1].text                          # doctest: +SKIP
            ('running', 'resumed from step 1,000')
        """
        start = checked_step(step)
        # A run whose creation still waits (an outage at start-up) is known only from what
        # this job asked for: with a step to resume from, it is most likely a restart of a
        # run that exists, so the resume is recorded (a new run then reads "resumed" once).
        started_before = (
            is_pending_id(self.id) or self.status != "created" or self.started_at_ms is not None
        )
        running = self.set_status("running")  # a finished run too: continuing is a choice
        if started_before:
            self._record_resume(start)
        return running

    def _record_resume(self, step: int) -> None:
        text, metadata = resume_text(step), {RESUMED_KEY: step, "step": step}
        # Never blocks nor raises: it follows the run's earlier events through the spool.
        self._annotate_later(text, metadata)
