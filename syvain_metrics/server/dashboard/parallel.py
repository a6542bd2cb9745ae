"""The parallel-coordinates page: the chosen runs' hyperparameters (the metadata keys whose
values differ between them) against one metric summary, drawn on the server as SVG.

One vertical axis per hyperparameter (numbers on a linear scale, anything else as evenly
spaced categories) and one for the metric; one polyline per run, coloured by its metric value
on a sequential scale. A run without a value on an axis sits on that axis' "none" mark,
below it.

Example:
    >>> colour(0.0), colour(1.0), colour(None)
    ('#440154', '#fde725', '#9aa3ad')
    >>> numeric_axis([0.42, 0.7])[1]
    [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from syvain_metrics.server import wire
from syvain_metrics.server.dashboard import pages
from syvain_metrics.server.dashboard.runs_query import plain, split_column
from syvain_metrics.server.dashboard.runs_table import (
    Column,
    catalog_labels,
    cell_text,
    metric_cells,
    sortable,
)
from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.store import Store

MAX_PARALLEL_RUNS = 200
"""At most this many runs in one parallel-coordinates view."""

VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
"""The sequential scale's stops, low to high (viridis: readable in grey and by most people
with a colour vision deficiency)."""

NONE_COLOUR = "#9aa3ad"
AXIS_GAP, TOP, PLOT_HEIGHT, NONE_GAP = 170, 56, 340, 34


def _bad(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


def parallel_ids(values: Iterable[str]) -> list[str]:
    """The runs to draw (repeated and/or comma-separated ids, once each); 400 when there are
    none or more than :data:`MAX_PARALLEL_RUNS`.

    Example:
        >>> parallel_ids(["a,b", "a"])
        ['a', 'b']
    """
    return pages.id_list(
        values,
        most=MAX_PARALLEL_RUNS,
        empty="Select at least one run to draw.",
        too_many=f"A parallel-coordinates view holds at most {MAX_PARALLEL_RUNS} runs.",
    )


def colour(fraction: float | None) -> str:
    """The sequential scale's colour at ``fraction`` (0 to 1); grey for ``None``."""
    if fraction is None:
        return NONE_COLOUR
    at = min(max(fraction, 0.0), 1.0) * (len(VIRIDIS) - 1)
    low = min(int(at), len(VIRIDIS) - 2)
    part = at - low
    mixed = [round(a + (b - a) * part) for a, b in zip(VIRIDIS[low], VIRIDIS[low + 1], strict=True)]
    return "#" + "".join(f"{c:02x}" for c in mixed)


def numeric_axis(values: Sequence[float]) -> tuple[tuple[float, float], list[float]]:
    """The range of a numeric axis and its ticks: the values' range widened to round numbers
    (1, 2, 2.5 or 5 times a power of ten apart, at most 7 ticks), so both ends are labelled;
    the one value when every value is the same.

    Example:
        >>> numeric_axis([0.0003, 0.003])
        ((0.0, 0.003), [0.0, 0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003])
        >>> numeric_axis([32, 64])
        ((30.0, 65.0), [30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0])
    """
    low, high = min(values), max(values)
    if low == high:
        return (low, high), [low]
    power = 10 ** math.floor(math.log10((high - low) / 10))
    for step in (m * power * 10**k for k in range(4) for m in (1, 2, 2.5, 5)):
        first = math.floor(low / step + 1e-9)
        last = math.ceil(high / step - 1e-9)
        if last - first <= 7:
            break
    ticks = [float(round(k * step, 12)) for k in range(first, last + 1)]
    return (ticks[0], ticks[-1]), ticks


def hyperparameters(experiments: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metadata keys whose values differ between the runs (or that some lack), by name;
    objects (a captured environment) are left out."""
    keys: set[str] = set()
    for experiment in experiments:
        keys.update(k for k, v in experiment["metadata"].items() if not isinstance(v, dict))
    varying = []
    for key in sorted(keys):
        texts = {plain(e["metadata"][key]) if key in e["metadata"] else None for e in experiments}
        if len(texts) > 1:
            varying.append(key)
    return varying


def _axis(label: str, values: list[Any], x: float) -> dict[str, Any]:
    """An axis: its ticks and each run's y (``values`` in the runs' order; ``None``: none)."""
    bottom = TOP + PLOT_HEIGHT
    present = [v for v in values if v is not None]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    ys: list[float] = []
    ticks: list[tuple[float, str]] = []
    if present and numbers:
        (low, high), marks = numeric_axis([float(v) for v in present])

        def place(v: float) -> float:
            return bottom - (
                PLOT_HEIGHT / 2 if high == low else (v - low) / (high - low) * PLOT_HEIGHT
            )

        ticks = [(place(m), f"{m:.4g}") for m in marks]
        ys = [bottom + NONE_GAP if v is None else place(float(v)) for v in values]
    else:
        texts = sorted({plain(v) for v in present}, key=lambda t: sortable(t) or (2, t))
        step = PLOT_HEIGHT / max(len(texts) - 1, 1)
        spots = {
            t: (bottom - i * step if len(texts) > 1 else TOP + PLOT_HEIGHT / 2)
            for i, t in enumerate(texts)
        }
        ticks = [(spots[t], t) for t in texts]
        ys = [bottom + NONE_GAP if v is None else spots[plain(v)] for v in values]
    if any(v is None for v in values):
        ticks.append((bottom + NONE_GAP, "none"))
    return {"label": label, "x": x, "ticks": ticks, "ys": ys, "numeric": bool(present) and numbers}


def parallel_page(
    store: Store, org_id: str, origin: str, ids: list[str], summary: str | None
) -> dict[str, Any]:
    """The page's context: the runs, the summaries to choose from, and the drawing (axes,
    one line per run, the colour scale)."""
    experiments = [wire.experiment(store.get_experiment(org_id, e), origin) for e in ids]
    catalog = store.series_catalog(org_id, ids)
    labels, labels_by_run, names = catalog_labels(catalog)
    choices = [f"{label}:{how}" for label in labels for how in ("last", "min", "max")]
    if summary:
        label, _ = split_column(summary)
        if label not in names:
            raise _bad(f"None of these runs has a sub-series {label!r}.")
    elif choices:
        summary = choices[0]
    values: dict[str, float | None] = {e["id"]: None for e in experiments}
    if summary:
        column = Column(summary, *split_column(summary))
        cells = metric_cells(store, org_id, labels_by_run, [column], names)
        values = {e["id"]: cells.get(e["id"], {}).get(summary) for e in experiments}
    keys = hyperparameters(experiments)
    axes = [
        _axis(key, [e["metadata"].get(key) for e in experiments], 60 + i * AXIS_GAP)
        for i, key in enumerate(keys)
    ]
    metric_axis = _axis(
        summary or "no metric", [values[e["id"]] for e in experiments], 60 + len(keys) * AXIS_GAP
    )
    axes.append(metric_axis)
    found = [v for v in values.values() if v is not None]
    low, high = (min(found), max(found)) if found else (0.0, 0.0)
    lines = []
    for index, experiment in enumerate(experiments):
        value = values[experiment["id"]]
        fraction = None if value is None else (0.5 if high == low else (value - low) / (high - low))
        points = [(axis["x"], axis["ys"][index]) for axis in axes]
        path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)
        details = ", ".join(
            f"{key}={plain(experiment['metadata'][key])}"
            for key in keys
            if key in experiment["metadata"]
        )
        lines.append(
            {
                "id": experiment["id"],
                "slug": experiment["slug"],
                "path": path,
                "colour": colour(fraction),
                "value": cell_text(value),
                "title": f"{experiment['slug']}: {summary} = {cell_text(value) or 'none'}"
                + (f" ({details})" if details else ""),
                "order": -1.0 if value is None else value,
            }
        )
    lines.sort(key=lambda line: line["order"])  # the grey ones under the coloured ones
    width = 60 + len(keys) * AXIS_GAP + 120
    return {
        "experiments": experiments,
        "ids": ids,
        "summary": summary or "",
        "choices": choices,
        "keys": keys,
        "axes": axes,
        "lines": lines,
        "width": width,
        "height": TOP + PLOT_HEIGHT + NONE_GAP + 30,
        "scale": {
            "low": cell_text(low) if found else "",
            "high": cell_text(high) if found else "",
            "stops": [(i * 25, colour(i / 4)) for i in range(5)],
        },
        "values": values,
    }
