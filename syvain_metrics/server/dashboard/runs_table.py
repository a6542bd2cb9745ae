"""The list page's runs table: which runs (one folder, with or without its subfolders', or
all), filtered by status, text and metadata values, with metric columns (the last, smallest
or largest value of a sub-series, computed by the store) and sorted by any column.

Sorting compares numbers as numbers and text as text (numbers first), and puts empty cells
last whichever the direction.

Example:
    >>> sorted_rows([{"v": 2}, {"v": None}, {"v": 10}, {"v": "b"}], lambda r: r["v"], "asc")
    [{'v': 2}, {'v': 10}, {'v': 'b'}, {'v': None}]
    >>> sorted_rows([{"v": 2}, {"v": None}, {"v": 10}], lambda r: r["v"], "desc")
    [{'v': 10}, {'v': 2}, {'v': None}]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from syvain_metrics.contract.limits import EXPERIMENT_STATUSES, EXPERIMENTS_LIMIT
from syvain_metrics.server import wire
from syvain_metrics.server.dashboard import pages
from syvain_metrics.server.dashboard.runs_query import (
    DEFAULT_COLUMNS,
    RunsQuery,
    plain,
    series_label,
    split_column,
    value_matches,
)
from syvain_metrics.server.sql import canonical
from syvain_metrics.server.store import SeriesSummary, Store

MAX_FILTER_VALUES = 50
"""A metadata key's filter offers at most this many values (the form; a URL may name any)."""

Row = TypeVar("Row")


@dataclass(frozen=True)
class Column:
    """A metric column: its id (``loss[split=valid]:min``), sub-series label and what it shows."""

    id: str
    label: str
    how: str

    @property
    def sort_key(self) -> str:
        """The column's ``sort`` value."""
        return f"metric:{self.id}"


def sortable(value: Any) -> tuple[int, Any] | None:
    """A cell's value as a sort key: numbers before text, ``None`` for an empty cell.

    Example:
        >>> sortable(3), sortable("Adam"), sortable(None), sortable(True)
        ((0, 3), (1, 'adam'), None, (1, 'true'))
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    return (1, plain(value).casefold())


def sorted_rows(rows: Iterable[Row], key: Callable[[Row], Any], order: str) -> list[Row]:
    """``rows`` sorted by ``key`` (see :func:`sortable`), empty cells last; ties keep their
    order."""
    keyed = [(sortable(key(row)), row) for row in rows]
    full = [(k, row) for k, row in keyed if k is not None]
    full.sort(key=lambda pair: pair[0], reverse=order == "desc")
    return [row for _, row in full] + [row for k, row in keyed if k is None]


def matches(
    experiment: Mapping[str, Any], query: RunsQuery, *, status_and_text: bool = True
) -> bool:
    """Whether a run passes the query's filters (metadata values; status and text too unless
    the store applied them)."""
    if status_and_text:
        if query.status is not None and experiment["status"] != query.status:
            return False
        if query.text:
            needle = query.text.casefold()
            if not (
                needle in experiment["slug"].casefold()
                or needle in (experiment["description"] or "").casefold()
            ):
                return False
    metadata = experiment["metadata"]
    for key, values in query.filters:
        if key not in metadata or not any(value_matches(metadata[key], v) for v in values):
            return False
    return True


def filter_choices(
    experiments: Sequence[Mapping[str, Any]], keys: Sequence[str], query: RunsQuery
) -> list[dict[str, Any]]:
    """For each metadata column, the values a filter can pick (numbers in order, then text),
    and those the query picked."""
    choices = []
    for key in keys:
        seen: dict[str, Any] = {}
        for experiment in experiments:
            value = experiment["metadata"].get(key)
            if value is not None and not isinstance(value, dict | list):
                seen.setdefault(plain(value), value)
        texts = [t for t in sorted(seen, key=lambda t: sortable(seen[t]) or (2, t))]
        picked = query.filter_values(key)
        if not texts and not picked:
            continue
        shown = texts[:MAX_FILTER_VALUES]
        shown += [p for p in picked if p not in shown]
        choices.append({"key": key, "values": shown, "picked": picked})
    return choices


def _scope(store: Store, org_id: str, origin: str, query: RunsQuery) -> tuple[Any, list[Any]]:
    """The selected folder (or ``None``) and the runs the query's scope holds."""
    if query.folder is None:
        found = store.list_experiments(
            org_id, limit=EXPERIMENTS_LIMIT[1], status=query.status, search=query.text or None
        )
        return None, [wire.experiment(e, origin) for e in found]
    contents = wire.folder_contents(store.get_folder(org_id, query.folder), origin)
    experiments = list(contents["experiments"])
    if query.subfolders:
        for folder in store.list_folders(org_id):
            if query.folder in folder.parent_ids:
                inner = wire.folder_contents(store.get_folder(org_id, folder.id), origin)
                experiments += inner["experiments"]
        experiments.sort(key=lambda e: e["created_at_ms"], reverse=True)
    return contents["folder"], experiments


def catalog_labels(
    catalog: Mapping[str, Sequence[tuple[str, str]]],
) -> tuple[list[str], dict[str, dict[str, list[str]]], dict[str, str]]:
    """Every sub-series label the runs have (by metric name, then metadata); for each run,
    each label's metadata texts (one, unless the same metadata was sent in two key orders);
    and each label's metric name.

    Example:
        >>> catalog_labels({"e1": [("loss", '{"split":"valid"}')]})
        (['loss[split=valid]'], {'e1': {'loss[split=valid]': ['{"split":"valid"}']}}, {'loss[split=valid]': 'loss'})
    """
    labels: dict[str, tuple[str, str]] = {}
    texts: dict[str, dict[str, list[str]]] = {}
    known: dict[tuple[str, str], str] = {}  # runs of a sweep share their few sub-series
    for experiment_id, series in catalog.items():
        for name, text in series:
            label = known.get((name, text))
            if label is None:
                metadata = json.loads(text)
                label = series_label(name, metadata if isinstance(metadata, dict) else {})
                labels.setdefault(label, (name, canonical(metadata)))
                known[(name, text)] = label
            texts.setdefault(experiment_id, {}).setdefault(label, []).append(text)
    names = {label: name for label, (name, _) in labels.items()}
    return sorted(labels, key=lambda label: labels[label]), texts, names


def _merge(found: Sequence[SeriesSummary]) -> SeriesSummary | None:
    if not found:
        return None
    last = max(found, key=lambda s: s.last_at)
    return SeriesSummary(
        last.last, min(s.min for s in found), max(s.max for s in found), last.last_at
    )


def metric_cells(
    store: Store,
    org_id: str,
    labels_by_run: Mapping[str, Mapping[str, list[str]]],
    columns: Sequence[Column],
    names: Mapping[str, str],
) -> dict[str, dict[str, float | None]]:
    """Each run's value in each metric column (``None`` where it has no such sub-series)."""
    wanted = {column.label for column in columns}
    asked = [
        (experiment_id, names[label], text)
        for experiment_id, labels in labels_by_run.items()
        for label, texts in labels.items()
        if label in wanted
        for text in texts
    ]
    summaries = store.series_summaries(org_id, asked)
    cells: dict[str, dict[str, float | None]] = {}
    for experiment_id, labels in labels_by_run.items():
        row: dict[str, float | None] = {}
        for column in columns:
            texts = labels.get(column.label, [])
            merged = _merge(
                [
                    summaries[(experiment_id, names[column.label], t)]
                    for t in texts
                    if (experiment_id, names[column.label], t) in summaries
                ]
            )
            row[column.id] = None if merged is None else getattr(merged, column.how)
        cells[experiment_id] = row
    return cells


def _sort_value(
    experiment: Mapping[str, Any], key: str, cells: Mapping[str, Any], now_ms: int
) -> Any:
    if key == "slug":
        return experiment["slug"]
    if key == "status":
        return experiment["status"]
    if key == "created":
        return experiment["created_at_ms"]
    if key == "folder":
        folder = experiment["folder"]
        return None if folder is None else folder["path_name"]
    if key == "duration":
        end = experiment["done_at_ms"]
        if end is None and experiment["status"] == "running":
            end = now_ms
        start = experiment["started_at_ms"]
        return None if start is None or end is None else max(0, end - start)
    if key.startswith("meta:"):
        value = experiment["metadata"].get(key[5:])
        return None if isinstance(value, dict) else value
    return cells[experiment["id"]].get(key[len("metric:") :])


def runs_page(store: Store, org_id: str, origin: str, query: RunsQuery) -> dict[str, Any]:
    """The list page's context: the folder tree, the runs table (rows, metadata and metric
    columns, sort and filters) and the state's links."""
    selected, experiments = _scope(store, org_id, origin, query)
    scoped = [e for e in experiments if matches(e, query, status_and_text=query.folder is not None)]
    limit = EXPERIMENTS_LIMIT[1]
    catalog = store.series_catalog(org_id, [e["id"] for e in scoped])
    labels, labels_by_run, names = catalog_labels(catalog)
    if query.explicit_columns:
        ids = list(query.columns)
    else:
        ids = [f"{label}:last" for label in labels[:DEFAULT_COLUMNS]]
    if query.sort and query.sort.startswith("metric:") and query.sort[7:] not in ids:
        ids.append(query.sort[7:])
    columns = [Column(i, *split_column(i)) for i in ids]
    present = [c for c in columns if c.label in names]
    cells = metric_cells(store, org_id, labels_by_run, present, names)
    for experiment in scoped:
        cells.setdefault(experiment["id"], {})
    query = query.with_columns(ids)
    now = store.now_ms()
    rows = scoped
    if query.sort:
        key = query.sort
        rows = sorted_rows(scoped, lambda e: _sort_value(e, key, cells, now), query.order)
    # Objects (a run's captured environment) make poor cells and cannot be filtered: left out.
    objects = {k for e in experiments for k, v in e["metadata"].items() if isinstance(v, dict)}
    meta_columns = [k for k in pages.metadata_columns(experiments) if k not in objects]
    return {
        "tree": pages.folder_tree(wire.folder(f) for f in store.list_folders(org_id)),
        "selected": selected,
        "experiments": rows,
        "truncated": query.folder is None and len(experiments) >= limit,
        "limit": limit,
        "columns": meta_columns,
        "metric_columns": columns,
        "cells": cells,
        "choices": [f"{label}:{how}" for label in labels for how in ("last", "min", "max")],
        "labels": labels,
        "filters": filter_choices(experiments, meta_columns, query),
        "statuses": EXPERIMENT_STATUSES,
        "status": query.status,
        "text": query.text,
        "query": query,
        "show_folder": selected is None or query.subfolders,
        "run_time": {e["id"]: pages.run_time(e, now) for e in rows},
        "summary": (
            query.sort[7:]
            if query.sort and query.sort.startswith("metric:")
            else (ids[0] if ids else "")
        ),
    }


def cell_text(value: float | None) -> str:
    """A metric cell: up to 6 significant digits ('' when empty).

    Example:
        >>> cell_text(0.123456789), cell_text(1234567.0), cell_text(None)
        ('0.123457', '1.23457e+06', '')
    """
    if value is None:
        return ""
    return f"{value:.6g}"
