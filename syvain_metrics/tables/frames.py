"""The optional extras, imported lazily: pandas frames of metric rows and tqdm progress
bars (plots are in :mod:`syvain_metrics.tables.plots`).

Example:
    >>> df = exp.metrics("loss").to_pandas()          # doctest: +SKIP
    >>> df.groupby("split")["value"].min()            # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import MetricsApiError, MetricsValidationError

if TYPE_CHECKING:
    from syvain_metrics.tables.columns import RowColumns

FRAME_COLUMNS = (
    "event_id",
    "experiment_id",
    "experiment_slug",
    "name",
    "value",
    "step",
    "metadata",
    "client_timestamp",
    "server_timestamp",
)


def require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise MetricsApiError(
            f"This needs {module}: pip install 'syvain-metrics[{extra}]'"
        ) from None


def progress_bar(total: int | None, description: str, *, unit: str = "metric") -> Any:
    """A ``tqdm.auto`` progress bar (a widget in a notebook, text in a terminal; needs the
    ``progress`` extra); ``total=None`` when the count is not known in advance.

    Example:
        >>> bar = progress_bar(2_000, "ingest run-1")  # doctest: +SKIP
        >>> bar.update(1_000); bar.close()             # doctest: +SKIP
    """
    require("tqdm", "progress")
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit)


WIDE_INDEXES = ("step", "time", "wall", "relative")
"""The indexes of a wide frame: the step; the client time as UTC datetimes (``"time"``,
or ``"wall"`` as plots name it); the time since each run's first row, as timedeltas."""

SeriesKey = tuple[str, str, str]
"""One line of a plot or one column of a wide frame: (experiment slug, metric name, event
metadata text)."""


class JsonCache:
    """Parses each distinct JSON text once (rows share a few metadata texts)."""

    def __init__(self) -> None:
        self.parsed: dict[str, dict[str, Any]] = {}

    def __call__(self, text: str | None) -> dict[str, Any]:
        text = text or "{}"
        found = self.parsed.get(text)
        if found is None:
            loaded = json.loads(text)
            found = self.parsed[text] = loaded if isinstance(loaded, dict) else {}
        return found


def _metadata_label(metadata: dict[str, Any]) -> str:
    return ", ".join(f"{key}={plain(value)}" for key, value in metadata.items())


def plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def series_labels(keys: list[SeriesKey]) -> dict[SeriesKey, str]:
    """Short readable names for series: only the parts that differ between them (the run,
    the metric, the event metadata as ``key=value``); the metric name when nothing does.

    Example:
        >>> series_labels([("run-0", "loss", '{"split":"train"}'),
        ...                ("run-0", "loss", '{"split":"valid"}')])
        {('run-0', 'loss', '{"split":"train"}'): 'split=train', ('run-0', 'loss', '{"split":"valid"}'): 'split=valid'}
    """
    parse = JsonCache()
    varies = [len({key[i] for key in keys}) > 1 for i in range(3)]
    labels: dict[SeriesKey, str] = {}
    for key in keys:
        slug, name, meta = key
        parts = [slug] if varies[0] else []
        if varies[1]:
            parts.append(name)
        if varies[2] and meta != "{}":
            parts.append(_metadata_label(parse(meta)))
        labels[key] = " ".join(parts) if parts else name
    return labels


def series_keys(table: RowColumns) -> list[SeriesKey]:
    return [
        (slug or "", name or "", meta or "{}")
        for slug, name, meta in zip(
            table.column("experiment_slug"),
            table.column("metric_name"),
            table.column("event_metadata_json"),
            strict=True,
        )
    ]


def rows_to_frame(
    table: RowColumns, *, expand_metadata: bool = True, wide: bool = False, index: str = "step"
) -> Any:
    """The rows as a DataFrame (see :meth:`MetricRows.to_pandas`)."""
    if wide:
        return _wide_frame(table, index)
    return _long_frame(table, expand_metadata)


def _long_frame(table: RowColumns, expand_metadata: bool) -> Any:
    """One row per event: typed columns, timestamps as UTC datetimes, ``step`` as nullable
    Int64; built from the columns of ``table`` (each distinct metadata text parsed once).

    With ``expand_metadata`` each metadata key also gets its own column (when it does not
    clash with a fixed column); experiment metadata read with the rows (``experiment.<key>``,
    nested keys joined with dots) too.
    """
    pd = require("pandas", "pandas")
    parse = JsonCache()
    metadata = list(map(parse, table.column("event_metadata_json")))
    frame = pd.DataFrame(
        {
            "event_id": table.column("event_id"),
            "experiment_id": table.column("experiment_id"),
            "experiment_slug": table.column("experiment_slug"),
            "name": table.column("metric_name"),
            "value": pd.array(table.column("metric_value"), dtype="float64"),
            "step": pd.Series(table.column("step"), dtype="float64").astype("Int64").array,
            # Copies: the parsed dicts are shared between rows with the same metadata text.
            "metadata": [dict(item) for item in metadata],
            "client_timestamp": utc_times(table.column("client_timestamp_ms")),
            "server_timestamp": utc_times(table.column("server_timestamp_ms")),
        },
        columns=list(FRAME_COLUMNS),
    )
    if expand_metadata:
        keys = sorted({key for item in parse.parsed.values() for key in item} - set(FRAME_COLUMNS))
        for key in keys:
            frame[key] = [item.get(key) for item in metadata]
        _add_experiment_columns(frame, table)
    return frame


def utc_times(milliseconds: Sequence[int]) -> Any:
    """UTC datetimes of epoch milliseconds at millisecond resolution, so every time the
    contract allows (years 1 to 9999) fits, not only pandas' nanosecond range (1677-2262).

    Example:
        >>> [str(t) for t in utc_times([0, 253_402_300_799_999])]
        ['1970-01-01 00:00:00+00:00', '9999-12-31 23:59:59.999000+00:00']
    """
    pd = require("pandas", "pandas")
    import numpy as np

    return pd.DatetimeIndex(np.asarray(milliseconds, dtype="datetime64[ms]")).tz_localize("UTC")


def _add_experiment_columns(frame: Any, table: RowColumns) -> None:
    from syvain_metrics.tables.display import flatten

    texts = table.column("experiment_metadata_json")
    if not any(text is not None for text in texts):
        return
    flat: dict[str | None, dict[str, Any]] = {}
    for text in set(texts):
        flat[text] = {} if text is None else flatten(JsonCache()(text))
    keys = sorted({key for item in flat.values() for key in item})
    descriptions = table.column("experiment_description")
    if any(d is not None for d in descriptions):
        frame["experiment_description"] = descriptions
    for key in keys:
        frame[f"experiment.{key}"] = [flat[text].get(key) for text in texts]


def _wide_frame(table: RowColumns, index: str) -> Any:
    """One column per series (named by :func:`series_labels`), indexed by step, by client
    time (``"time"`` or ``"wall"``: UTC datetimes) or by the time since each run's first
    row (``"relative"``: timedeltas)."""
    pd = require("pandas", "pandas")
    if index not in WIDE_INDEXES:
        raise MetricsValidationError(
            {
                "index": [
                    "Must be 'step', 'time' or 'wall' (client time, UTC datetimes), or "
                    f"'relative' (the time since each run's first row); got {index!r}."
                ]
            }
        )
    keys = series_keys(table)
    positions: Any
    if index == "step":
        positions = table.column("step")
    elif index == "relative":
        times = table.column("client_timestamp_ms")
        runs = table.column("experiment_id")
        starts: dict[str, int] = {}
        for run, ms in zip(runs, times, strict=True):
            starts[run] = min(ms, starts.get(run, ms))
        positions = pd.to_timedelta(
            [ms - starts[run] for run, ms in zip(runs, times, strict=True)], unit="ms"
        )
    else:
        positions = utc_times(table.column("client_timestamp_ms"))
    values = table.column("metric_value")
    groups: dict[SeriesKey, tuple[list[Any], list[float]]] = {}
    for key, position, value in zip(keys, positions, values, strict=True):
        if position is None:
            continue  # a step axis has no place for an event without a step
        xs, ys = groups.setdefault(key, ([], []))
        xs.append(int(position) if index == "step" else position)
        ys.append(value)
    labels = series_labels(list(groups))
    columns = {}
    for key, (xs, ys) in groups.items():
        column = pd.Series(ys, index=xs, dtype="float64")
        columns[labels[key]] = column[~column.index.duplicated(keep="last")]
    frame = pd.concat(columns, axis=1) if columns else pd.DataFrame()
    frame = frame.sort_index()
    frame.index.name = {"wall": "time", "relative": "time since start"}.get(index, index)
    frame.columns.name = "series"
    return frame
