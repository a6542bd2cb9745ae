"""Reading metrics of one experiment: ``metrics()`` and ``series()``.

Example:
    >>> exp.metrics("loss", metadata={"split": "train"}).values[:2]  # doctest: +SKIP
    [1.0, 0.5]
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from syvain_metrics import routes
from syvain_metrics.resources.experiment_base import ExperimentBase
from syvain_metrics.resources.metric import MetricRows, Series, read_rows
from syvain_metrics.schemas.base import load_request
from syvain_metrics.schemas.metric_query import MetricsQuery


class MetricReading(ExperimentBase):
    """``metrics()`` and ``series()`` of an experiment."""

    def metrics(
        self,
        name: str | None = None,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        step: int | None = None,
        from_step: int | None = None,
        to_step: int | None = None,
        from_time: int | dt.datetime | None = None,
        to_time: int | dt.datetime | None = None,
        sort_by: str | Sequence[str] | None = None,
        sort_direction: str | None = None,
        limit: int | None = None,
        include_experiment_meta_as_of: bool | None = None,
    ) -> MetricRows:
        """Read metric events. Without ``limit`` every matching row is returned (paging as
        needed); with ``limit``, at most that many.

        ``metadata`` is a one-key dict (``{"split": "train"}``; a non-string value matches
        by JSON equality) or a bare key (``"split"``: events that have that key).

        Example:
            >>> rows = exp.metrics("loss", metadata={"split": "train"}, from_step=0, to_step=50)  # doctest: +SKIP
            >>> rows[0].value, rows.to_pandas()                                                  # doctest: +SKIP
        """
        query = load_request(
            MetricsQuery(),
            {
                "metric_name": name,
                "metadata": metadata,
                "step": step,
                "from_step": from_step,
                "to_step": to_step,
                "from_time": from_time,
                "to_time": to_time,
                "sort_by": sort_by,
                "sort_direction": sort_direction,
                "limit": limit,
                "include_experiment_meta_as_of": include_experiment_meta_as_of,
            },
        )
        limit_value = query.pop("limit", None)
        self._settle_logs()
        return read_rows(self._bind(), routes.LIST_METRICS, (self.id,), query, limit_value)

    def series(self, name: str, *, metadata: Mapping[str, Any] | str | None = None) -> Series:
        """This experiment's ``name`` metric as a :class:`Series` for :func:`sm.compare`.

        Example:
            >>> sm.compare([a.series("loss"), b.series("loss")])  # doctest: +SKIP
        """
        return Series(self, name, metadata=metadata)
