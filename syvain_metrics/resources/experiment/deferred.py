"""Calls an experiment makes on behalf of ``log()`` without waiting for them: recording an
annotation from inside a training loop must never block it or raise into it.

Example:
    >>> exp._annotate_later("loss became NaN at step 500",
    ...                     {"metric": "loss", "step": 500, "value": "NaN"})  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

from syvain_metrics.resources.experiment.base import ExperimentBase

logger = logging.getLogger("syvain_metrics")


class DeferredCalls(ExperimentBase):
    """What an experiment records later, off the caller's thread."""

    def _annotate_later(self, text: str, metadata: dict[str, Any]) -> None:
        """Annotate the run with ``text`` and ``metadata`` soon, on a thread of its own:
        returns at once and never raises; a failure is logged.

        Example:
            >>> exp._annotate_later("loss became NaN at step 500",
            ...                     {"metric": "loss", "step": 500, "value": "NaN"})  # doctest: +SKIP
        """
        thread = threading.Thread(
            target=self._annotate_now,
            args=(text, metadata),
            name="syvain-metrics-annotate",
            daemon=True,
        )
        try:
            thread.start()
        except Exception as error:  # no thread to be had (a process at its limit)
            logger.warning("syvain_metrics: could not annotate %s: %s", self.slug, error)

    def _annotate_now(self, text: str, metadata: dict[str, Any]) -> None:
        try:
            # Experiment mixes in Annotating beside this class.
            cast(Any, self).annotate(text, metadata=metadata)
        except Exception as error:
            logger.warning("syvain_metrics: could not annotate %s (%r): %s", self.slug, text, error)
