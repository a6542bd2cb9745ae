"""Reading metrics of one experiment: ``metrics()`` and ``series()``.

Example:
    >>> exp.metrics("loss", metadata={"split": "train"}).values[:2]  # doctest: +SKIP
    [1.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from syvain_metrics.contract import operations
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.metric_query import MetricsQuery
from syvain_metrics.contract.schemas.options import check_flag, check_page_size
from syvain_metrics.resources.compare import Series
from syvain_metrics.resources.experiment.base import ExperimentBase
from syvain_metrics.resources.experiment.values import plain
from syvain_metrics.resources.metric import (
    MetricRows,
    iter_rows,
    read_rows,
    refuse_in_pages,
    whole_read,
)
from syvain_metrics.tables.options import ReadKeywords, ReadOptions, keyword_options

if TYPE_CHECKING:
    from typing_extensions import Unpack


class MetricReading(ExperimentBase):
    """``metrics()``, ``iter_metrics()`` and ``series()`` of an experiment."""

    def _metrics_query(
        self,
        name: str | None,
        metadata: Mapping[str, Any] | str | None,
        step: int | None,
        options: ReadOptions,
    ) -> tuple[dict[str, Any], int | None]:
        """Validate a read's filters and options: the query and its limit."""
        schema = MetricsQuery()
        values = {**options.values(), "metric_name": name, "metadata": metadata, "step": step}
        values = plain(values)  # numpy scalars as bounds, limits, steps or filter values
        query = load_request(schema, {key: values[key] for key in schema.fields})
        limit_value = query.pop("limit", None)
        self._settle_logs()
        return query, limit_value

    @keyword_options(ReadOptions, before="progress")
    def metrics(
        self,
        name: str | None = None,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        step: int | None = None,
        progress: bool = False,
        **options: Unpack[ReadKeywords],
    ) -> MetricRows:
        """Read metric events. Without ``limit`` every matching row is returned (paging as
        needed); with ``limit``, at most that many. ``progress=True`` shows a progress bar of
        rows read (the ``progress`` extra: a widget in a notebook, text in a terminal).
        ``last_per_step=True`` keeps only the row logged last at each step of each series
        (steps logged again by a job resumed from a checkpoint replace the earlier ones).

        ``metadata`` is a one-key dict (``{"split": "train"}``; a non-string value matches
        by JSON equality) or a bare key (``"split"``: events that have that key); ``step``
        one step.

        Example:
            >>> rows = exp.metrics("loss", metadata={"split": "train"}, from_step=0, to_step=50)  # doctest: +SKIP
            >>> rows[0].value, rows.to_pandas()                                                  # doctest: +SKIP
        """
        check_flag("progress", progress)
        built = ReadOptions(**options)
        last_per_step = whole_read(built)
        query, limit_value = self._metrics_query(name, metadata, step, built)
        return read_rows(
            self._bind(),
            operations.LIST_METRICS,
            (self.id,),
            query,
            limit_value,
            progress=progress,
            description=f"read {self.slug or self.id}",
            last_per_step=last_per_step,
        )

    @keyword_options(ReadOptions, before="page_size")
    def iter_metrics(
        self,
        name: str | None = None,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        step: int | None = None,
        page_size: int | None = None,
        **options: Unpack[ReadKeywords],
    ) -> Iterator[MetricRows]:
        """:meth:`metrics`, one :class:`MetricRows` page at a time, in constant memory: for
        histories larger than memory. ``page.to_pandas()`` gives DataFrame chunks;
        ``page_size`` (default 20,000, or the session's if smaller) bounds the rows per
        page. The next page is fetched while you work on the current one.
        ``last_per_step`` needs every row at once: it is refused here.

        Example:
            >>> for page in exp.iter_metrics("loss", page_size=50_000):  # doctest: +SKIP
            ...     frame = page.to_pandas()
        """
        built = ReadOptions(**options)
        refuse_in_pages(built)
        query, limit_value = self._metrics_query(name, metadata, step, built)
        return iter_rows(
            self._bind(),
            operations.LIST_METRICS,
            (self.id,),
            query,
            limit_value,
            check_page_size(page_size),
        )

    def series(self, name: str, *, metadata: Mapping[str, Any] | str | None = None) -> Series:
        """This experiment's ``name`` metric as a :class:`Series` for :func:`sm.compare`.

        Example:
            >>> sm.compare([a.series("loss"), b.series("loss")])  # doctest: +SKIP
        """
        return Series(self, name, metadata=metadata)
