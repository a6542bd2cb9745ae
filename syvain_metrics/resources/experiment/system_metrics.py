"""System metrics of a run: ``exp.start_system_metrics()`` and ``run(system_metrics=...)``.

The sampler (``syvain_metrics/context/system.py``) logs ``system/...`` series through this
experiment's ``log()``, so they are spooled and delivered like the run's own metrics.

Example:
    >>> sampler = exp.start_system_metrics(interval=10.0)  # doctest: +SKIP
    >>> sampler.stop()                                      # doctest: +SKIP
"""

from __future__ import annotations

from syvain_metrics.context.system import DEFAULT_INTERVAL_S, SystemMetrics
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.resources.experiment.writing import MetricWriting


class SystemSampling(MetricWriting):
    """``start_system_metrics()`` of an experiment."""

    def start_system_metrics(self, interval: float = DEFAULT_INTERVAL_S) -> SystemMetrics:
        """Sample CPU, memory and (with nvidia-ml-py) GPU load every ``interval`` seconds
        into ``system/...`` series, from a daemon thread, until ``.stop()`` on the returned
        sampler (also a context manager). The first sample is taken at once, a last one at
        ``stop()``. Needs the ``system`` extra (psutil): without it, raises at this call.

        Example:
            >>> with exp.start_system_metrics(interval=5.0):  # doctest: +SKIP
            ...     train()
        """
        return SystemMetrics(self.log, interval, rank=self._bind().rank.rank).start()

    def _system_sampler(self, system_metrics: bool | float) -> SystemMetrics | None:
        """The sampler ``run(system_metrics=...)`` asks for, not started: ``True`` samples
        every 10 s, a number is the interval, ``False`` none."""
        if system_metrics is False:
            return None
        rank = self._bind().rank.rank
        if system_metrics is True:
            return SystemMetrics(self.log, DEFAULT_INTERVAL_S, rank=rank)
        if isinstance(system_metrics, int | float):
            return SystemMetrics(self.log, system_metrics, rank=rank)
        raise MetricsValidationError(
            {"system_metrics": ["Must be True, False or an interval in seconds."]}
        )
