"""The compare page: every metric of a set of runs, one small chart per sub-series.

The page itself carries the runs (slug, status, metadata) in a JSON block; its script then
asks ``/dashboard/data/compare`` for each metric, once per x axis kind. An answer holds every
sub-series (metric x event metadata, labelled as the SDK labels them: ``loss[split=valid]``)
of every run, each reduced on the server to ``width`` slices over that run's own x range
(:mod:`.charts`), so a run of a million points still sends at most ``2 * width`` numbers per
array. On the time axis, x is sent in milliseconds since the run's first event (``start``),
which the script shows as relative time or adds back for wall time.

Example:
    >>> series_label("loss", {"split": "valid"}), series_label("loss", {})
    ('loss[split=valid]', 'loss')
    >>> experiment_ids(["a,b", "a", "c"])
    ['a', 'b', 'c']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup

from syvain_metrics.server import wire
from syvain_metrics.server.dashboard import charts, pages
from syvain_metrics.server.dashboard.series_cache import Key, Reduced, SeriesCache, first_event_ms
from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.sql import SeriesFilter
from syvain_metrics.server.store import Store

MAX_COMPARED_RUNS = 200
"""The most runs one compare page shows (a sweep of a hundred, with room)."""
X_KINDS = ("step", "time")
"""What the data route reduces over; relative and wall time are both drawn from ``time``."""
MAX_COLOR_KEYS = 40
"""The most metadata keys offered to colour runs by."""
SIGNIFICANT = 7
"""Digits kept of a slice's lowest and highest value when it holds several points (the
hover shows 6); a slice of one point keeps its value exactly."""


def _bad(message: str) -> ApiError:
    return ApiError(400, "validation_error", message)


def experiment_ids(values: Iterable[str]) -> list[str]:
    """The experiment ids a comparison asks for (repeated and/or comma-separated, in order,
    once each); 400 when there are none or more than a page may hold."""
    return pages.id_list(
        values,
        most=MAX_COMPARED_RUNS,
        empty="Choose at least one experiment to compare.",
        too_many=f"A comparison holds at most {MAX_COMPARED_RUNS} experiments.",
    )


def series_label(metric: str, metadata: Mapping[str, Any]) -> str:
    """A sub-series' name: the metric, then its event metadata in brackets, keys sorted."""
    if not metadata:
        return metric
    parts = ",".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in sorted(metadata.items())
    )
    return f"{metric}[{parts}]"


def scalar_metadata(metadata: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The metadata's numbers, strings and booleans, nested objects as dotted keys (the
    captured ``environment`` left out: it describes the machine, not the run's choices).

    Example:
        >>> scalar_metadata({"lr": 0.1, "opt": {"name": "adam"}, "environment": {"a": 1}})
        {'lr': 0.1, 'opt.name': 'adam'}
    """
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if not prefix and key == "environment":
            continue
        if isinstance(value, Mapping):
            out.update(scalar_metadata(value, f"{prefix}{key}."))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[f"{prefix}{key}"] = value
    return out


def _script_json(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    survive as such, so no text can close the element."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # escaped above, for a script element


def compare_page(store: Store, org_id: str, origin: str, ids: list[str]) -> dict[str, Any]:
    """The compare page: the runs, the metrics any of them has (with how many runs have
    each) and the metadata keys to colour runs by, for the page's script."""
    experiments = [wire.experiment(store.get_experiment(org_id, e), origin) for e in ids]
    having: dict[str, int] = {}
    for experiment_id in ids:
        for name in store.metric_names(org_id, experiment_id):
            having[name] = having.get(name, 0) + 1
    runs = []
    key_count: dict[str, int] = {}
    for exp in experiments:
        values = scalar_metadata(exp["metadata"])
        for key in values:
            key_count[key] = key_count.get(key, 0) + 1
        runs.append(
            {
                "id": exp["id"],
                "slug": exp["slug"],
                "status": exp["status"],
                "url": exp["url"],
                "metadata": values,
            }
        )
    color_keys = sorted(key_count, key=lambda k: (-key_count[k], k))[:MAX_COLOR_KEYS]
    metrics = [{"name": name, "runs": having[name]} for name in sorted(having)]
    data = {"runs": runs, "metrics": metrics, "color_keys": color_keys}
    return {"experiments": experiments, "metrics": metrics, "page_data": _script_json(data)}


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def _reduce_run(
    store: Store, org_id: str, experiment_id: str, metric: str, x: str, width: int
) -> Reduced:
    if x == "step":  # a long series' slices are summed from its blocks of steps
        _, _, rows = store.step_buckets(
            org_id, experiment_id, metric, width, missing_field="experiments"
        )
    else:
        series = [SeriesFilter(experiment_id=experiment_id, metric_name=metric)]
        _, _, rows = store.metric_buckets(
            org_id, series, "client_timestamp", width, missing_field="experiments"
        )
    start = 0
    if x == "time":
        start = first_event_ms(store, [experiment_id]).get(experiment_id, 0)
    items = []
    points = drawn = 0
    for (_, key), metadata, ordered, unplaced in charts.group_slices(rows):
        counts = [s[0] for s in ordered]
        one = [c == 1 for c in counts]
        item = {
            "experiment_id": experiment_id,
            "key": key,
            "metadata": metadata,
            "label": series_label(metric, metadata),
            "start": start,
            "points": sum(counts) + unplaced,
            "drawn": sum(1 if single else 2 for single in one),
            "unplaced": unplaced,
            "x0": [s[3] - start for s in ordered],
            "x1": [s[4] - start for s in ordered],
            "lo": [
                s[1] if single else _rounded(s[1]) for s, single in zip(ordered, one, strict=True)
            ],
            "hi": [
                s[2] if single else _rounded(s[2]) for s, single in zip(ordered, one, strict=True)
            ],
            "n": counts,
        }
        points += item["points"]
        drawn += item["drawn"]
        items.append(json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    return ",".join(items), points, drawn


def compare_data(
    store: Store,
    cache: SeriesCache,
    org_id: str,
    ids: list[str],
    metric: str | None,
    x: str | None,
    width: str | None,
) -> str:
    """The JSON text answering ``/dashboard/data/compare``: every sub-series of ``metric``
    in each run (``run``: its index in ``ids``), reduced to ``width`` slices; 400 for a
    missing metric, an unknown x axis or a width that is no number, 404 for a run that is
    not the organization's."""
    if not metric:
        raise _bad("Name the metric to draw.")
    axis = x or "step"
    if axis not in X_KINDS:
        raise _bad("x is 'step' or 'time'.")
    try:
        pixels = int(width) if width is not None else charts.DEFAULT_WIDTH
    except ValueError:
        raise _bad("width is a number of pixels.") from None
    pixels = min(max(pixels, charts.MIN_WIDTH), charts.MAX_WIDTH)
    for experiment_id in ids:  # 404 before anything is read, cached or not
        store.get_experiment(org_id, experiment_id)
    keys: list[Key] = [(org_id, e, metric, axis, pixels) for e in ids]
    found = cache.get_many(
        store, keys, lambda key: _reduce_run(store, org_id, key[1], metric, axis, pixels)
    )
    runs = [f'{{"run":{i},"series":[{text}]}}' for i, (text, _, _) in enumerate(found)]
    head = json.dumps(
        {
            "metric": metric,
            "x": axis,
            "width": pixels,
            "points": sum(f[1] for f in found),
            "drawn": sum(f[2] for f in found),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return head[:-1] + ',"runs":[' + ",".join(runs) + "]}"
