"""Matplotlib plots of metric rows (the ``plot`` extra, imported lazily): one line per
series, coloured by a metadata key, smoothed, with annotations marked.

Example:
    >>> exp.metrics("loss").plot(hue="split", smooth=0.6)  # doctest: +SKIP
    >>> ema([0.0, 1.0], 0.5)
    [0.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.tables.frames import (
    JsonCache,
    SeriesKey,
    plain,
    require,
    series_keys,
    series_labels,
)
from syvain_metrics.tables.time_axis import TimeAxis, check_x, format_time_axis, time_axis

if TYPE_CHECKING:
    from syvain_metrics.resources.annotation import Annotation
    from syvain_metrics.tables.columns import RowColumns
    from syvain_metrics.tables.options import PlotOptions


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

    parse = JsonCache()
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
            found[key] = plain(value)
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
    distinct = sorted(set(values), key=lambda v: (0, v, "") if number(v) else (1, 0, plain(v)))
    numeric = all(number(v) for v in distinct)
    if numeric and len(distinct) > 2:
        cmap = mpl.colormaps["viridis"]
        return {v: cmap(i / (len(distinct) - 1) * 0.9) for i, v in enumerate(distinct)}
    cycle = mpl.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    return {v: cycle[i % len(cycle)] for i, v in enumerate(distinct)}


def plot_rows(table: RowColumns, options: PlotOptions) -> Any:
    """Draw one line per (experiment, metric, metadata) series; returns the matplotlib axes
    (see :meth:`MetricRows.plot`)."""
    require("matplotlib", "plot")
    import matplotlib.pyplot as plt

    hue, smooth, ax = options.hue, options.smooth, options.ax
    x = check_x(options.x)
    if smooth is not None and (
        isinstance(smooth, bool) or not isinstance(smooth, int | float) or not 0 <= smooth < 1
    ):
        raise MetricsValidationError({"smooth": ["Must be a weight from 0 up to (not) 1."]})
    axes = ax if ax is not None else plt.subplots(figsize=(8, 4.5))[1]
    keys = series_keys(table)
    axis: TimeAxis | None = None
    times: list[int] = []
    if x == "step":
        xs_column: Any = table.column("step")
    else:
        times = table.column("client_timestamp_ms")
        runs = table.column("experiment_id")
        axis = time_axis(x, runs, times)
        xs_column = list(map(axis.position, runs, times))
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
            label = f"{hue}={plain(value)}" if key in hues else "(none)"
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
    _mark_annotations(axes, options.annotations, axis)
    if axis is not None:
        format_time_axis(axes, axis, times)
    else:
        axes.set_xlabel("step")
    names = {key[1] for key in groups}
    if len(names) == 1:
        axes.set_ylabel(next(iter(names)))
    if options.logy:
        axes.set_yscale("log")
    if options.title is not None:
        axes.set_title(options.title)
    if len(groups) > 1 or hue is not None:
        axes.legend(title=hue, fontsize="small")
    return axes


def _mark_annotations(
    axes: Any, annotations: Iterable[Annotation] | None, axis: TimeAxis | None
) -> None:
    """Annotations as dashed vertical lines with their text: at their creation time on a
    time axis (on a relative one, since their run's start; those of runs not drawn are
    skipped), at ``metadata["step"]`` on a step axis (those without one are skipped)."""
    if annotations is None:
        return
    for note in annotations:
        if axis is not None:
            where: Any = axis.position(note.experiment_id, note.created_at_ms)
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
