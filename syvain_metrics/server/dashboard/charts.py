"""Chart data: each series of a metric reduced for drawing, never cut short.

A series is one experiment's events of one metric with one metadata value (``{"split":
"train"}`` and ``{"split": "valid"}`` are two lines). The store summarizes every series in
``width`` equal slices of the x range (one per pixel column of the chart): each slice keeps
its number of points, its lowest and highest value and the first and last x it covers. A
slice of one point is that point exactly; a slice of many draws as a vertical stroke from
its lowest to its highest value, which is what a line through all of its points would cover
on screen. So a 1M-point metric draws as a few thousand vertices, and the answer says how many
points there were (``points``) and how many are drawn (``drawn``).

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> org = store.authenticate(key).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> store.ingest(org, exp.id, [
    ...     {"client_event_id": str(i), "name": "loss", "value": 10 - i, "step": i}
    ...     for i in range(10)])
    >>> chart = chart_data(store, org, [exp.id], "loss", x="step", width=4)
    >>> [line["label"] for line in chart["series"]], chart["points"], chart["drawn"]
    (['(no metadata)'], 10, 8)
    >>> chart["series"][0]["n"], chart["series"][0]["lo"]
    ([3, 2, 3, 2], [8.0, 6.0, 3.0, 1.0])
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from syvain_metrics.server.sql import SeriesFilter, canonical

X_AXES = {"step": "step", "time": "client_timestamp"}
"""The x axes a chart offers: the event's step, or its client timestamp (milliseconds)."""
MIN_WIDTH, MAX_WIDTH, DEFAULT_WIDTH = 16, 4_096, 800


def metadata_label(metadata: dict[str, Any]) -> str:
    """A short label of a series' metadata (keys sorted; strings as they are).

    Example:
        >>> metadata_label({"split": "train", "seed": 3})
        'seed=3 split=train'
    """
    return " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
        for key, value in sorted(metadata.items())
    )


def chart_data(
    store: Any,
    org_id: str,
    experiment_ids: Sequence[str],
    metric: str,
    *,
    x: Literal["step", "time"] = "step",
    width: int = DEFAULT_WIDTH,
    slugs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every series of ``metric`` in the experiments, reduced to ``width`` slices over the
    range they all span. Series are labelled by metadata, prefixed with the slug when
    ``slugs`` are given (a comparison of several runs).

    Each series has arrays ``x0``/``x1`` (first and last x of a slice), ``lo``/``hi``
    (lowest and highest value) and ``n`` (points), plus ``points`` and ``drawn`` totals and
    ``unplaced`` (points without an x, e.g. without a step).
    """
    series = [SeriesFilter(experiment_id=e, metric_name=metric) for e in experiment_ids]
    lo, hi, rows = store.metric_buckets(
        org_id, series, X_AXES[x], width, missing_field="experiments"
    )
    out = []
    for (index, _), metadata, ordered, unplaced in group_slices(rows):
        label = metadata_label(metadata)
        if slugs is not None:
            label = f"{slugs[index]} {label}".strip()
        counts = [s[0] for s in ordered]
        out.append(
            {
                "label": label or "(no metadata)",
                "experiment_id": experiment_ids[index],
                "metadata": metadata,
                "points": sum(counts) + unplaced,
                "drawn": sum(1 if c == 1 else 2 for c in counts),
                "unplaced": unplaced,
                "x0": [s[3] for s in ordered],
                "x1": [s[4] for s in ordered],
                "lo": [s[1] for s in ordered],
                "hi": [s[2] for s in ordered],
                "n": counts,
            }
        )
    return {
        "metric": metric,
        "x": x,
        "x_range": [lo, hi],
        "width": width,
        "points": sum(s["points"] for s in out),
        "drawn": sum(s["drawn"] for s in out),
        "series": out,
    }


Slice = list[Any]
"""One slice of a series: ``[count, lowest, highest, first x, last x]``."""


def group_slices(
    rows: Iterable[tuple[Any, ...]],
) -> list[tuple[tuple[int, str], dict[str, Any], list[Slice], int]]:
    """The store's bucket rows (:meth:`Store.metric_buckets`) as one entry per series, in
    order of series index then metadata text: ``((index, metadata text), metadata, slices in
    x order, points without an x)``. The same metadata written with its keys in another order
    is one series.

    Example:
        >>> [(key, meta, slices, unplaced)] = group_slices(
        ...     [(0, '{"split":"a"}', 0, 2, 1.0, 3.0, 0, 1), (0, '{"split":"a"}', None, 1, 2.0, 2.0, None, None)])
        >>> key, meta, slices, unplaced
        ((0, '{"split":"a"}'), {'split': 'a'}, [[2, 1.0, 3.0, 0, 1]], 1)
    """
    grouped: dict[tuple[int, str], dict[int | None, Slice]] = {}
    metadata_of: dict[tuple[int, str], dict[str, Any]] = {}
    parsed: dict[str, tuple[str, dict[str, Any]]] = {}  # few distinct texts, many rows
    for index, metadata_json, bucket, count, low, high, first, last in rows:
        known = parsed.get(metadata_json)
        if known is None:
            metadata = json.loads(metadata_json)
            known = parsed[metadata_json] = (canonical(metadata), metadata)
        key = (index, known[0])
        metadata_of[key] = known[1]
        slices = grouped.setdefault(key, {})
        seen = slices.get(bucket)
        if seen is None:
            slices[bucket] = [count, float(low), float(high), first, last]
        else:
            seen[0] += count
            seen[1], seen[2] = min(seen[1], float(low)), max(seen[2], float(high))
            if first is not None:
                seen[3], seen[4] = min(seen[3], first), max(seen[4], last)
    out = []
    for key in sorted(grouped):
        slices = grouped[key]
        unplaced = slices.pop(None, [0])[0]
        ordered = [slices[b] for b in sorted(b for b in slices if b is not None)]
        out.append((key, metadata_of[key], ordered, unplaced))
    return out
