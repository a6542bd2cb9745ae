"""The optional extras, imported lazily: pandas frames and matplotlib plots of metric rows,
and tqdm progress bars.

Example:
    >>> df = exp.metrics("loss").to_pandas()          # doctest: +SKIP
    >>> df.groupby("split")["value"].min()            # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import MetricsApiError, MetricsValidationError

if TYPE_CHECKING:
    from syvain_metrics.resources.annotation import Annotation
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


SeriesKey = tuple[str, str, str]
"""One line of a plot or one column of a wide frame: (experiment slug, metric name, event
metadata text)."""


class _JsonCache:
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
    return ", ".join(f"{key}={_plain(value)}" for key, value in metadata.items())


def _plain(value: Any) -> str:
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
    parse = _JsonCache()
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


def _series_keys(table: RowColumns) -> list[SeriesKey]:
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
    parse = _JsonCache()
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
        flat[text] = {} if text is None else flatten(_JsonCache()(text))
    keys = sorted({key for item in flat.values() for key in item})
    descriptions = table.column("experiment_description")
    if any(d is not None for d in descriptions):
        frame["experiment_description"] = descriptions
    for key in keys:
        frame[f"experiment.{key}"] = [flat[text].get(key) for text in texts]


def _wide_frame(table: RowColumns, index: str) -> Any:
    """One column per series (named by :func:`series_labels`), indexed by step or time."""
    pd = require("pandas", "pandas")
    if index not in ("step", "time"):
        raise MetricsValidationError({"index": ["Must be 'step' or 'time'."]})
    keys = _series_keys(table)
    positions = (
        table.column("step") if index == "step" else utc_times(table.column("client_timestamp_ms"))
    )
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
    frame.index.name = index
    frame.columns.name = "series"
    return frame


def ema(values: list[float], weight: float) -> list[float]:
    """An exponential moving average, as TensorBoard's smoothing: each point is
    ``weight * previous + (1 - weight) * value``.

    Example:
        >>> ema([0.0, 1.0, 1.0], 0.5)
        [0.0, 0.5, 0.75]
    """
    out: list[float] = []
    last: float | None = None
    for value in values:
        last = value if last is None else weight * last + (1 - weight) * value
        out.append(last)
    return out


def _hue_values(table: RowColumns, keys: list[SeriesKey], hue: str) -> dict[SeriesKey, Any]:
    """Each series' value (``keys``: each row's series) of ``hue``: an event metadata key, else an experiment metadata
    key (dotted keys reach nested objects), else ``"experiment"`` / ``"name"``."""
    from syvain_metrics.tables.display import flatten

    parse = _JsonCache()
    found: dict[SeriesKey, Any] = {}
    for key, exp_text in zip(keys, table.column("experiment_metadata_json"), strict=True):
        if key in found:
            continue
        event_meta = parse(key[2])
        if hue in event_meta:
            found[key] = event_meta[hue]
            continue
        exp_meta = flatten(parse(exp_text)) if exp_text else {}
        if hue in exp_meta:
            found[key] = exp_meta[hue]
        elif hue in ("experiment", "experiment_slug"):
            found[key] = key[0]
        elif hue in ("name", "metric_name"):
            found[key] = key[1]
    for key, value in found.items():
        if isinstance(value, dict | list):  # unhashable: coloured by its JSON text
            found[key] = _plain(value)
    if keys and not found:
        raise MetricsValidationError(
            {
                "hue": [
                    f"{hue!r} is neither an event metadata key nor an experiment metadata key "
                    "of these rows (experiment metadata comes with "
                    "include_experiment_meta_as_of=True; runs.compare() and runs.plot() "
                    "read it), nor 'experiment' or 'name'."
                ]
            }
        )
    return found


def _hue_colours(values: list[Any]) -> dict[Any, Any]:
    import matplotlib as mpl

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    # Numbers in numeric order, then everything else by its text.
    distinct = sorted(set(values), key=lambda v: (0, v, "") if number(v) else (1, 0, _plain(v)))
    numeric = all(number(v) for v in distinct)
    if numeric and len(distinct) > 2:
        cmap = mpl.colormaps["viridis"]
        return {v: cmap(i / (len(distinct) - 1) * 0.9) for i, v in enumerate(distinct)}
    cycle = mpl.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    return {v: cycle[i % len(cycle)] for i, v in enumerate(distinct)}


def plot_rows(
    table: RowColumns,
    *,
    x: str = "step",
    hue: str | None = None,
    title: str | None = None,
    logy: bool = False,
    smooth: float | None = None,
    annotations: Iterable[Annotation] | None = None,
    ax: Any = None,
) -> Any:
    """Draw one line per (experiment, metric, metadata) series; returns the matplotlib axes
    (see :meth:`MetricRows.plot`)."""
    require("matplotlib", "plot")
    import matplotlib.dates
    import matplotlib.pyplot as plt

    mdates: Any = matplotlib.dates  # its locators and formatters are not annotated

    if x == "client_timestamp":
        x = "time"
    if x not in ("step", "time"):
        raise MetricsValidationError({"x": ["Must be 'step' or 'time'."]})
    if smooth is not None and (
        isinstance(smooth, bool) or not isinstance(smooth, int | float) or not 0 <= smooth < 1
    ):
        raise MetricsValidationError({"smooth": ["Must be a weight from 0 up to (not) 1."]})
    axes = ax if ax is not None else plt.subplots(figsize=(8, 4.5))[1]
    keys = _series_keys(table)
    xs_column: Any = (
        table.column("step")
        if x == "step"
        else [
            dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
            for ms in table.column("client_timestamp_ms")
        ]
    )
    groups: dict[SeriesKey, tuple[list[Any], list[float]]] = {}
    for key, x_value, y_value in zip(keys, xs_column, table.column("metric_value"), strict=True):
        if x_value is None:
            continue
        xs, ys = groups.setdefault(key, ([], []))
        xs.append(x_value)
        ys.append(y_value)
    labels = series_labels(list(groups))
    hues = _hue_values(table, keys, hue) if hue is not None else {}
    colours = _hue_colours(list(hues.values())) if hues else {}
    labelled: set[Any] = set()
    rank = {value: index for index, value in enumerate(colours)}  # hue values in order
    ordered = sorted(groups, key=lambda k: rank.get(hues.get(k), len(rank))) if hues else groups
    for key in ordered:
        xs, ys = groups[key]
        style: dict[str, Any] = {}
        if hue is not None:
            value = hues.get(key)
            style["color"] = colours.get(value, "grey")
            label = f"{hue}={_plain(value)}" if key in hues else "(none)"
            style["label"] = label if label not in labelled else "_nolegend_"
            labelled.add(label)
        else:
            style["label"] = labels[key]
        if smooth:
            (raw,) = axes.plot(
                xs, ys, alpha=0.25, linewidth=1, **{k: v for k, v in style.items() if k == "color"}
            )
            style.setdefault("color", raw.get_color())
            axes.plot(xs, ema(ys, float(smooth)), **style)
        else:
            axes.plot(xs, ys, **style)
    _mark_annotations(axes, annotations, x)
    if x == "time":
        locator = mdates.AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.timezone.utc))
        axes.set_xlabel("time (UTC)")
    else:
        axes.set_xlabel("step")
    names = {key[1] for key in groups}
    if len(names) == 1:
        axes.set_ylabel(next(iter(names)))
    if logy:
        axes.set_yscale("log")
    if title is not None:
        axes.set_title(title)
    if len(groups) > 1 or hue is not None:
        axes.legend(title=hue, fontsize="small")
    return axes


def _mark_annotations(axes: Any, annotations: Iterable[Annotation] | None, x: str) -> None:
    """Annotations as dashed vertical lines with their text: at their creation time on a
    time axis, at ``metadata["step"]`` on a step axis (those without one are skipped)."""
    if annotations is None:
        return
    for note in annotations:
        if x == "time":
            where: Any = note.created_at
        else:
            step = (note.metadata or {}).get("step")
            where = step if isinstance(step, int | float) and not isinstance(step, bool) else None
        if where is None:
            continue
        axes.axvline(where, color="grey", linestyle="--", linewidth=1, alpha=0.8)
        text = note.text if len(note.text) <= 30 else note.text[:29] + "…"
        axes.annotate(
            text,
            xy=(where, 1),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize="x-small",
            color="dimgrey",
        )
