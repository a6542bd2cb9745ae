"""Metric rows: what reads return (:class:`MetricRows` of :class:`Metric`), and the read
that fills them page by page, through the paging reader, into columns.

Example:
    >>> rows = exp.metrics("loss", metadata={"split": "train"})   # doctest: +SKIP
    >>> rows[0].value, rows[0].step, rows[0].metadata             # doctest: +SKIP
    (0.91, 0, {'split': 'train'})
"""

from __future__ import annotations

import datetime as dt
import json
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from math import isnan
from typing import TYPE_CHECKING, Any, overload

from syvain_metrics.client.paging import RowReader
from syvain_metrics.contract.limits import STREAM_PAGE_SIZE
from syvain_metrics.contract.schemas.metric_query import QUERY_ORDER
from syvain_metrics.contract.schemas.options import check_flag
from syvain_metrics.contract.schemas.rows import ABSENT, MetricRowsReply
from syvain_metrics.errors import MetricsApiResponseError, MetricsValidationError
from syvain_metrics.resources.base import from_ms
from syvain_metrics.tables.columns import RowColumns
from syvain_metrics.tables.frames import progress_bar
from syvain_metrics.tables.options import PlotKeywords, PlotOptions, ReadOptions, keyword_options

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes
    from typing_extensions import Unpack

    from syvain_metrics.client.session import Session
    from syvain_metrics.contract.operations import Operation


def _json_object(text: str, field_name: str) -> dict[str, Any]:
    # Parsed when read rather than when loaded: a 100,000-row answer would otherwise pay
    # for 100,000 small parses that most reads never need.
    try:
        loaded = json.loads(text)
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict):
        raise MetricsApiResponseError(
            f"Metrics API row field {field_name} is not a JSON object text: {text[:80]!r}"
        )
    return loaded


_MISSING: Any = object()
_new_metric = object.__new__


class Metric:
    """One metric event as read back: a view of one row of a read's columns, so rows cost
    nothing until used.

    ``name``, ``value``, ``step`` (an ``int`` or ``None``) and ``metadata`` (a ``dict``) are
    friendly views of ``metric_name``, ``metric_value``, ``step`` and ``event_metadata_json``;
    every other row field (``event_id``, ``experiment_slug``, ``client_timestamp_ms``, and any
    the service adds) reads as an attribute.

    Example:
        >>> m = Metric({"event_id": "e1", "metric_name": "loss", "metric_value": 0.5,
        ...             "step": 3.0, "event_metadata_json": '{"split":"train"}'})
        >>> m.name, m.value, m.step, m.metadata
        ('loss', 0.5, 3, {'split': 'train'})
    """

    __slots__ = ("_index", "_table")

    def __init__(self, row: dict[str, Any]) -> None:
        self._table = RowColumns.from_rows([row])
        self._index = 0

    @staticmethod
    def _at(table: RowColumns, index: int) -> Metric:
        # A static method, not a class method: one call less per row of a row-by-row read.
        metric = _new_metric(Metric)
        metric._table = table
        metric._index = index
        return metric

    def _get(self, field_name: str, default: Any = None) -> Any:
        return self._table.value(field_name, self._index, default)

    @property
    def name(self) -> str:
        """The metric name."""
        name: str = self._get("metric_name")
        return name

    @property
    def value(self) -> float:
        """The metric value."""
        # The hot path of row-by-row reads: straight to the column, the general lookup only
        # for a row that lacks the field.
        try:
            value = self._table.columns["metric_value"][self._index]
        except KeyError:
            value = ABSENT
        found: float = self._get("metric_value") if value is ABSENT else value
        return found

    @property
    def step(self) -> int | None:
        """The step as an ``int``, or ``None`` when the event had no step."""
        try:
            step = self._table.columns["step"][self._index]
        except KeyError:
            return None
        if step is None or step != step or step is ABSENT:  # NaN: a null in a packed column
            return None
        return int(step)

    @property
    def metadata(self) -> dict[str, Any]:
        """The event's metadata object."""
        text = self._get("event_metadata_json")
        return {} if not text else _json_object(text, "event_metadata_json")

    @property
    def experiment_metadata(self) -> dict[str, Any] | None:
        """The experiment's metadata when read with ``include_experiment_meta_as_of=True``."""
        text = self._get("experiment_metadata_json")
        return None if text is None else _json_object(text, "experiment_metadata_json")

    @property
    def timestamp(self) -> dt.datetime | None:
        """The client timestamp as an aware UTC ``datetime``."""
        return from_ms(self._get("client_timestamp_ms"))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probe before the slots are set
            raise AttributeError(name)
        value = self._get(name, _MISSING)
        if value is _MISSING:
            raise AttributeError(f"Metric has no field {name!r}")
        return value

    def __dir__(self) -> list[str]:
        return sorted({*object.__dir__(self), *self.to_dict()})

    def __reduce__(self) -> tuple[type[Metric], tuple[dict[str, Any]]]:
        return Metric, (self.to_dict(),)  # the row alone, not the whole read

    def to_dict(self) -> dict[str, Any]:
        """The row as the service sent it.

        Example:
            >>> Metric({"event_id": "e1", "metric_name": "loss"}).to_dict()
            {'event_id': 'e1', 'metric_name': 'loss'}
        """
        return self._table.row(self._index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Metric):
            return NotImplemented
        return bool(self._get("event_id") == other._get("event_id"))

    def __hash__(self) -> int:
        return hash(self._get("event_id"))

    def _repr_html_(self) -> str:
        from syvain_metrics.tables.display import html_table

        return html_table(
            "Metric",
            ["experiment", "name", "step", "value", "metadata", "time"],
            [
                [
                    self._get("experiment_slug"),
                    self.name,
                    self.step,
                    self.value,
                    self.metadata or None,
                    self.timestamp,
                ]
            ],
        )

    def __repr__(self) -> str:
        return (
            f"<Metric {self._get('experiment_slug')}/{self.name} step={self.step} "
            f"value={self.value!r} metadata={self._get('event_metadata_json')}>"
        )


class MetricRows(Sequence[Metric]):
    """The rows of a metrics read: a sequence of :class:`Metric`, plus whole columns.

    The rows are held column by column (a field's values in one list), so a large read
    costs little memory; ``values``, ``steps`` and :meth:`column` hand a field of every
    row over without building row objects, and :meth:`to_pandas` builds its frame from the
    columns. :meth:`plot` serves notebooks.

    Example:
        >>> rows = MetricRows([{"event_id": "e1", "metric_name": "loss", "metric_value": 0.5,
        ...                     "step": 1.0, "event_metadata_json": "{}"}])
        >>> len(rows), rows.values, rows.steps
        (1, [0.5], [1])
    """

    def __init__(self, rows: Iterable[dict[str, Any]] | RowColumns = ()) -> None:
        self._table = rows if isinstance(rows, RowColumns) else RowColumns.from_rows(rows)

    def __len__(self) -> int:
        return self._table.length

    @overload
    def __getitem__(self, index: int) -> Metric: ...
    @overload
    def __getitem__(self, index: slice) -> MetricRows: ...
    def __getitem__(self, index: int | slice) -> Metric | MetricRows:
        if isinstance(index, slice):
            return MetricRows(self._table.take(index))
        if not -self._table.length <= index < self._table.length:
            raise IndexError("MetricRows index out of range")
        return Metric._at(self._table, index % self._table.length)

    def __iter__(self) -> Iterator[Metric]:
        return map(Metric._at, repeat(self._table), range(self._table.length))

    def column(self, field_name: str) -> list[Any]:
        """Every row's value of one wire field (``None`` where absent).

        Example:
            >>> MetricRows([{"event_id": "e1"}, {"event_id": "e2"}]).column("event_id")
            ['e1', 'e2']
        """
        return self._table.column(field_name)

    @property
    def values(self) -> list[float]:
        """Every row's value, in order."""
        return self.column("metric_value")

    @property
    def steps(self) -> list[int | None]:
        """Every row's step as an ``int`` (or ``None``), in order."""
        column = self._table.columns.get("step")
        if type(column) is array and not any(map(isnan, column)):
            return list(map(int, column))  # no null step: every value converts alike
        return [None if s is None else int(s) for s in self.column("step")]

    @property
    def names(self) -> list[str]:
        """Every row's metric name, in order."""
        return self.column("metric_name")

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as the service sent them.

        Example:
            >>> MetricRows([{"event_id": "e1"}]).to_dicts()
            [{'event_id': 'e1'}]
        """
        return list(self._table.rows())

    def last_per_step(self) -> MetricRows:
        """These rows without those a later one replaced: of the rows of one series (run,
        metric, event metadata) at one step, only the one logged last (the latest client
        time; then server time, then event id) is kept, in the rows' order. Rows without a
        step are all kept. What ``last_per_step=True`` gives a read, a plot or a frame: after
        a job restarted from a checkpoint logged steps again, one curve.

        Example:
            >>> rows = MetricRows([
            ...     {"event_id": "a", "metric_name": "loss", "metric_value": 0.9, "step": 5.0,
            ...      "client_timestamp_ms": 1},
            ...     {"event_id": "b", "metric_name": "loss", "metric_value": 0.7, "step": 5.0,
            ...      "client_timestamp_ms": 2}])
            >>> len(rows), rows.last_per_step().values
            (2, [0.7])
        """
        kept = self._table.last_per_step()
        return self if kept is self._table else MetricRows(kept)

    def to_pandas(
        self,
        *,
        wide: bool = False,
        index: str = "step",
        expand_metadata: bool = True,
        last_per_step: bool = False,
    ) -> pandas.DataFrame:
        """The rows as a DataFrame (needs the ``pandas`` extra), built from the columns
        without a row object in between.

        Long form (the default): one row per event with typed columns (``experiment_slug``,
        ``name``, ``value``, ``step`` as nullable ``Int64``, timestamps as UTC datetimes),
        one column per event metadata key, and, for rows read with
        ``include_experiment_meta_as_of=True``, ``experiment_description`` and one column
        ``experiment.<key>`` per experiment metadata key (nested keys joined with dots).

        ``wide=True``: one column per series (run, metric, metadata, named by the parts
        that differ: ``run-0 split=valid``), indexed by ``step`` (events without a step are
        left out), with ``index="time"`` (or ``"wall"``) by client time (UTC datetimes), or
        with ``index="relative"`` by the time since each run's first row (timedeltas); a
        position with several events keeps the last in the rows' order.

        ``last_per_step=True`` first keeps only the row logged last at each step of each
        series (:meth:`last_per_step`): a run resumed from a checkpoint gives one curve.

        Example:
            >>> exp.metrics("loss").to_pandas()[["step", "value", "split"]]  # doctest: +SKIP
            >>> exp.metrics("loss").to_pandas(wide=True).tail()               # doctest: +SKIP
        """
        from syvain_metrics.tables.frames import rows_to_frame

        check_flag("wide", wide)
        table = (
            self._table.last_per_step()
            if check_flag("last_per_step", last_per_step)
            else self._table
        )
        return rows_to_frame(table, expand_metadata=expand_metadata, wide=wide, index=index)

    @keyword_options(PlotOptions)
    def plot(self, **options: Unpack[PlotKeywords]) -> Axes:
        """Plot one line per series (run, metric, metadata); needs the ``plot`` extra.
        Returns the matplotlib ``Axes``. Legend labels name only what differs between the
        lines (``run-0 split=valid``).

        Example:
            >>> exp.metrics("loss").plot(hue="split", logy=True, smooth=0.6,
            ...                          annotations=exp.annotations())  # doctest: +SKIP
            <Axes: xlabel='step', ylabel='loss'>
        """
        from syvain_metrics.tables.plots import plot_rows

        built = PlotOptions(**options)
        check_flag("logy", built.logy)
        table = (
            self._table.last_per_step()
            if check_flag("last_per_step", built.last_per_step)
            else self._table
        )
        axes: Axes = plot_rows(table, built)
        return axes

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MetricRows):
            return len(self) == len(other) and self.to_dicts() == other.to_dicts()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names = sorted(set(self._table.column("metric_name")) - {None})
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        return f"<MetricRows {len(self):,} rows{': ' + shown if shown else ''}>"

    def _repr_html_(self) -> str:
        from syvain_metrics.tables.display import HTML_ROWS, html_table

        head = MetricRows(self._table.take(slice(0, HTML_ROWS)))
        rows = [
            [m.experiment_slug, m.name, m.step, m.value, m.metadata or None, m.timestamp]
            for m in head
        ]
        return html_table(
            f"MetricRows ({len(self):,} rows)",
            ["experiment", "name", "step", "value", "metadata", "time"],
            rows,
            total=len(self),
        )


def _row_pages(
    session: Session,
    route: Operation,
    segments: tuple[str, ...],
    params: dict[str, Any],
    limit: int | None,
    page_size: int | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The validated rows of a read, one list per request (the next one already on its way
    while the caller works on the current)."""
    reply = MetricRowsReply()

    def fetch(
        page_params: dict[str, Any], on_body: Callable[[bytes], object] | None = None
    ) -> list[dict[str, Any]]:
        ordered = sorted(page_params.items(), key=lambda item: QUERY_ORDER.index(item[0]))
        data = session.call(route, *segments, reply=reply, query=dict(ordered), on_body=on_body)
        rows: list[dict[str, Any]] = data["rows"]
        return rows

    reader = RowReader(
        fetch=fetch, page_size=page_size or session.page_size, prefetch=True, look_ahead=True
    )
    return reader.pages(params, limit=limit)


def whole_read(options: ReadOptions) -> bool:
    """Whether a read keeps only the last row per step (``last_per_step``, checked)."""
    return check_flag("last_per_step", options.last_per_step)


def refuse_in_pages(options: ReadOptions) -> None:
    """Refuse ``last_per_step`` in a read that hands rows over a page at a time: a step
    logged again may come pages later, so no page could say which row stays."""
    if whole_read(options):
        raise MetricsValidationError(
            {
                "last_per_step": [
                    "Needs every row of the read at once: use metrics() or compare(), or "
                    "MetricRows.last_per_step() on rows gathered from the pages."
                ]
            }
        )


def read_rows(
    session: Session,
    route: Operation,
    segments: tuple[str, ...],
    params: dict[str, Any],
    limit: int | None,
    *,
    progress: bool = False,
    description: str = "read",
    last_per_step: bool = False,
) -> MetricRows:
    """Read rows through :class:`RowReader`: all of them, or at most ``limit``, into columns
    page by page. With ``last_per_step`` every row is read, those replaced by a later one at
    their step are dropped, and only then does ``limit`` cut: cut first, a row could stay
    whose replacement lay beyond the limit."""
    read_limit = None if last_per_step else limit
    table = RowColumns()
    bar = progress_bar(read_limit, description, unit="row") if progress else None
    try:
        for page in _row_pages(session, route, segments, params, read_limit):
            table.extend(page)
            if bar is not None:
                bar.update(len(page))
    finally:
        if bar is not None:
            bar.close()
    if last_per_step:
        table = table.last_per_step()
        if limit is not None and limit < len(table):
            table = table.take(slice(0, limit))
    return MetricRows(table)


def iter_rows(
    session: Session,
    route: Operation,
    segments: tuple[str, ...],
    params: dict[str, Any],
    limit: int | None,
    page_size: int | None,
) -> Iterator[MetricRows]:
    """The rows of a read as one :class:`MetricRows` per page, each dropped once the caller
    moves on: memory stays that of a page or two, however long the history. Pages hold
    ``page_size`` rows, by default :data:`STREAM_PAGE_SIZE` (or the session's, if smaller)."""
    size = page_size or min(session.page_size, STREAM_PAGE_SIZE)
    for page in _row_pages(session, route, segments, params, limit, size):
        yield MetricRows(RowColumns.from_rows(page))
