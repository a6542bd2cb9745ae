"""Comparing runs: :class:`Series` (one metric of one experiment) and :func:`compare`, which
reads several series in one answer.

Example:
    >>> sm.compare([a.series("loss"), b.series("loss")])          # doctest: +SKIP
    <MetricRows 200 rows>
    >>> sm.compare([a, b], "loss", metadata={"split": "valid"})  # doctest: +SKIP
    <MetricRows 20 rows>
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.contract import operations
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.metric_query import (
    CompareQuery,
    CompareSeriesList,
    series_param,
)
from syvain_metrics.contract.schemas.options import check_flag, check_page_size
from syvain_metrics.errors import ExperimentNotCreatedError, MetricsValidationError
from syvain_metrics.pipeline.control import is_pending_id
from syvain_metrics.resources.base import Resource
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

    from syvain_metrics.resources.experiment.base import ExperimentBase


@dataclass(frozen=True)
class Series:
    """One metric of one experiment, optionally narrowed by a metadata filter, for :func:`compare`.

    ``metadata`` is a one-key dict (``{"split": "train"}``) or a bare key (``"split"``).

    Example:
        >>> Series("0f8e2c1a", "loss", metadata={"split": "train"}).to_param()
        '{"experiment_id":"0f8e2c1a","metric_name":"loss","metadata_key":"split","metadata_value":"train"}'
    """

    experiment_id: str
    name: str
    metadata: Mapping[str, Any] | str | None = None
    session: Session | None = field(default=None, repr=False, compare=False)

    def __init__(
        self,
        experiment_id: str | ExperimentBase,
        name: str,
        *,
        metadata: Mapping[str, Any] | str | None = None,
        session: Session | None = None,
    ) -> None:
        # Imported here: the experiment package imports this module (for series()).
        from syvain_metrics.resources.experiment.base import ExperimentBase

        if isinstance(experiment_id, ExperimentBase):
            session = session or experiment_id._session
            experiment_id = experiment_id.id
        object.__setattr__(self, "experiment_id", experiment_id)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "metadata", metadata)
        object.__setattr__(self, "session", session)

    def _wire(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "metric_name": self.name,
            "metadata": self.metadata,
        }

    def to_param(self) -> str:
        """The compact JSON text sent as one ``series`` query value.

        Example:
            >>> Series("e1", "loss").to_param()
            '{"experiment_id":"e1","metric_name":"loss"}'
        """
        loaded = load_request(CompareSeriesList(), {"series": [self._wire()]})
        return series_param(loaded["series"][0])


def series_of(
    items: Iterable[Series] | Iterable[Resource],
    names: Sequence[str],
    metadata: Mapping[str, Any] | str | None,
) -> list[Series]:
    """What a compare reads: ``items`` as they are when they are series; when they are
    experiments, each one's ``names`` metrics (narrowed by ``metadata``), run by run.

    Example:
        >>> series_of([Series("e1", "loss")], (), None)
        [Series(experiment_id='e1', name='loss', metadata=None)]
    """
    # Imported here: the experiment package imports this module (for series()).
    from syvain_metrics.resources.experiment.base import ExperimentBase

    if isinstance(items, str | Series | ExperimentBase | Mapping) or not isinstance(
        items, Iterable
    ):
        raise MetricsValidationError(
            {"series": ["Must be a list of sm.Series, or a list of experiments with metric names."]}
        )
    listed = list(items)
    if any(not isinstance(n, str) or not n for n in names):
        raise MetricsValidationError(
            {"names": ["Each name after the list must be a metric name: compare(runs, 'loss')."]}
        )
    runs = [item for item in listed if isinstance(item, ExperimentBase)]
    if runs and len(runs) == len(listed):
        if not names:
            raise MetricsValidationError(
                {"names": ["Name the metrics to compare: sm.compare([a, b], 'loss')."]}
            )
        return [Series(run, name, metadata=metadata) for run in runs for name in names]
    if any(isinstance(item, str) for item in listed):
        raise MetricsValidationError(
            {
                "series": [
                    "Got a string: pass experiments (runs['<slug>'] of an ExperimentList, or "
                    "sm.Experiment.list(slug='<slug>')[0]) or sm.Series, not slugs or ids."
                ]
            }
        )
    if runs or not all(isinstance(item, Series) for item in listed):
        raise MetricsValidationError(
            {"series": ["Each item must be an sm.Series, or each an experiment (not a mix)."]}
        )
    if names or metadata is not None:
        raise MetricsValidationError(
            {
                "names": [
                    "Metric names and metadata= go with experiments: a Series names its own "
                    "metric and metadata."
                ]
            }
        )
    return listed  # type: ignore[return-value]


def _compare_read(
    series: Sequence[Series], session: Session | None, options: ReadOptions
) -> tuple[Session, dict[str, Any], int | None]:
    """Validate a compare: its session, its query parameters and its ``limit``."""
    items = list(series)
    if not all(isinstance(s, Series) for s in items):
        raise MetricsValidationError({"series": ["Each item must be an sm.Series."]})
    loaded = load_request(CompareSeriesList(), {"series": [s._wire() for s in items]})
    if any(is_pending_id(s["experiment_id"]) for s in loaded["series"]):
        # A placeholder never reaches the wire.
        raise ExperimentNotCreatedError(
            "A series names an experiment that is not created yet (its creation waits in "
            "the spool): compare it once the service has created it."
        )
    schema = CompareQuery()
    values = options.values()
    query = load_request(schema, {key: values[key] for key in schema.fields})
    bound = get_session(session or next((s.session for s in items if s.session), None))
    limit_value = query.pop("limit", None)
    # Read your writes: this session's pending log() events of these runs land first.
    bound.logs.settle({s["experiment_id"] for s in loaded["series"]}, bound.timeout)
    return bound, {"series": [series_param(s) for s in loaded["series"]], **query}, limit_value


@keyword_options(ReadOptions, before="progress")
def compare(
    series: Sequence[Series] | Sequence[Resource],
    *names: str,
    metadata: Mapping[str, Any] | str | None = None,
    progress: bool = False,
    session: Session | None = None,
    **options: Unpack[ReadKeywords],
) -> MetricRows:
    """Read several series (up to 64) in one answer; without ``limit``, every row.

    ``series`` is a list of :class:`Series` (each one metric of one run, with its own
    metadata filter), or a list of experiments followed by metric names: ``sm.compare([a,
    b], "loss", "acc", metadata={"split": "valid"})`` reads each run's ``loss`` and
    ``acc`` (``runs.compare("loss")`` reads more than 64 runs, in several reads).
    ``sort_by`` may also name ``"series"`` (the order of ``series``). ``progress=True``
    shows a progress bar of rows read (the ``progress`` extra: a widget in a notebook).
    ``last_per_step=True`` keeps only the row logged last at each step of each series.

    Example:
        >>> rows = sm.compare([a.series("loss", metadata={"split": "train"}),
        ...                    b.series("loss", metadata={"split": "train"})], to_step=100)  # doctest: +SKIP
        >>> rows.to_pandas().groupby("experiment_slug")["value"].min()  # doctest: +SKIP
    """
    check_flag("progress", progress)
    built = ReadOptions(**options)
    last_per_step = whole_read(built)
    items = series_of(series, names, metadata)
    bound, params, limit_value = _compare_read(items, session, built)
    return read_rows(
        bound,
        operations.COMPARE_METRICS,
        (),
        params,
        limit_value,
        progress=progress,
        description="compare",
        last_per_step=last_per_step,
    )


@keyword_options(ReadOptions, before="page_size")
def iter_compare(
    series: Sequence[Series] | Sequence[Resource],
    *names: str,
    metadata: Mapping[str, Any] | str | None = None,
    page_size: int | None = None,
    session: Session | None = None,
    **options: Unpack[ReadKeywords],
) -> Iterator[MetricRows]:
    """:func:`compare` (series, or experiments and metric names), one :class:`MetricRows`
    page at a time, in constant memory: for
    histories larger than memory (``page.to_pandas()`` gives DataFrame chunks).
    ``page_size`` (default 20,000, or the session's if smaller) bounds the rows per page.
    ``last_per_step`` needs every row at once: it is refused here.

    Example:
        >>> for page in sm.iter_compare([a.series("loss"), b.series("loss")]):  # doctest: +SKIP
        ...     total += sum(page.values)
    """
    built = ReadOptions(**options)
    refuse_in_pages(built)
    items = series_of(series, names, metadata)
    bound, params, limit_value = _compare_read(items, session, built)
    return iter_rows(
        bound, operations.COMPARE_METRICS, (), params, limit_value, check_page_size(page_size)
    )
