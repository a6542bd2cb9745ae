"""What each dashboard page shows, read from the store with the API's own read functions
(the list page's runs table is :mod:`~.runs_table`).

Every read takes the visitor's organization id, so another organization's folder or
experiment is not found (404), exactly as through the API.

Example:
    >>> duration(1_000, 66_500), duration(0, 7_380_000), duration(None, 5)
    ('1 min 05 s', '2 h 03 min', '')
    >>> when(1_795_716_952_000)
    '2026-11-26 18:15:52 UTC'
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syvain_metrics.contract.limits import ANNOTATIONS_LIMIT, MAX_COMPARE_SERIES
from syvain_metrics.server import wire
from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.store import Store

MAX_METADATA_COLUMNS = 8
"""The list page shows at most this many metadata keys as columns (the most common ones)."""


def when(ms: int | None) -> str:
    """A millisecond timestamp as UTC text ('' for ``None``)."""
    if ms is None:
        return ""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(start_ms: int | None, end_ms: int | None) -> str:
    """The time from ``start_ms`` to ``end_ms`` as short text ('' when either is missing)."""
    if start_ms is None or end_ms is None:
        return ""
    seconds = max(0, end_ms - start_ms) / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def value_text(value: Any) -> str:
    """A metadata value as shown in a cell: strings as they are, anything else as JSON.

    Example:
        >>> value_text("train"), value_text(0.01), value_text([1, True])
        ('train', '0.01', '[1, true]')
    """
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def run_time(experiment: Mapping[str, Any], now_ms: int) -> str:
    """How long a run took (or has been running)."""
    end = experiment["done_at_ms"]
    if end is None and experiment["status"] == "running":
        end = now_ms
    return duration(experiment["started_at_ms"], end)


@dataclass
class FolderNode:
    """One folder of the tree on the list page."""

    id: str
    name: str
    path_name: str
    children: list[FolderNode] = field(default_factory=list)


def folder_tree(folders: Iterable[Mapping[str, Any]]) -> list[FolderNode]:
    """The folders as a tree, children by name.

    Example:
        >>> tree = folder_tree([
        ...     {"folder_id": "a", "name": "a", "path_name": "a", "parent_id_path": []},
        ...     {"folder_id": "b", "name": "b", "path_name": "a/b", "parent_id_path": ["a"]}])
        >>> [(n.name, [c.name for c in n.children]) for n in tree]
        [('a', ['b'])]
    """
    nodes: dict[str, FolderNode] = {}
    parents: dict[str, str | None] = {}
    for folder in folders:
        nodes[folder["folder_id"]] = FolderNode(
            folder["folder_id"], folder["name"], folder["path_name"]
        )
        path = folder["parent_id_path"]
        parents[folder["folder_id"]] = path[-1] if path else None
    roots: list[FolderNode] = []
    for folder_id, node in nodes.items():
        parent = parents[folder_id]
        (nodes[parent].children if parent in nodes else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.name, n.id))
    return sorted(roots, key=lambda n: (n.name, n.id))


def metadata_columns(experiments: Iterable[Mapping[str, Any]]) -> list[str]:
    """The metadata keys to show as columns: the most common first, then by name; keys
    holding objects (such as a run's captured ``environment``) after every other, since a
    cell shows one value well and a whole JSON document badly.

    Example:
        >>> metadata_columns([{"metadata": {"lr": 1, "seed": 2}}, {"metadata": {"lr": 3}}])
        ['lr', 'seed']
        >>> metadata_columns([{"metadata": {"environment": {"host": "a"}, "lr": 1}}])
        ['lr', 'environment']
    """
    counts: dict[str, int] = {}
    objects: set[str] = set()
    for experiment in experiments:
        for key, value in experiment["metadata"].items():
            counts[key] = counts.get(key, 0) + 1
            if isinstance(value, dict):
                objects.add(key)
    ranked = sorted(counts, key=lambda key: (key in objects, -counts[key], key))
    return ranked[:MAX_METADATA_COLUMNS]


def key_state(key: Mapping[str, Any], now_ms: int) -> str:
    """``revoked``, ``expired`` or ``active``."""
    if key["revoked_at_ms"] is not None:
        return "revoked"
    return "expired" if now_ms >= key["expires_at_ms"] else "active"


def experiment_page(store: Store, org_id: str, origin: str, experiment_id: str) -> dict[str, Any]:
    """The experiment page: the run, its annotations, ingestion keys and metric names."""
    experiment = wire.experiment(store.get_experiment(org_id, experiment_id), origin)
    limit = ANNOTATIONS_LIMIT[1]
    annotations = [
        wire.annotation(a) for a in store.list_annotations(org_id, experiment_id, limit=limit)
    ]
    keys = [wire.ingestion_key(k) for k in store.list_ingestion_keys(org_id, experiment_id)]
    now = store.now_ms()
    return {
        "experiment": experiment,
        "run_time": run_time(experiment, now),
        "annotations": annotations,
        "annotations_truncated": len(annotations) >= limit,
        "keys": [{**key, "state": key_state(key, now)} for key in keys],
        "metrics": store.metric_names(org_id, experiment_id),
        "experiment_ids": json.dumps([experiment_id]),
    }


def experiment_ids(values: Iterable[str]) -> list[str]:
    """The experiment ids a comparison asks for (repeated and/or comma-separated, in order,
    once each); 400 when there are none or more than a comparison may hold.

    Example:
        >>> experiment_ids(["a,b", "a", "c"])
        ['a', 'b', 'c']
    """
    return id_list(
        values,
        most=MAX_COMPARE_SERIES,
        empty="Choose at least one experiment to compare.",
        too_many=f"A comparison holds at most {MAX_COMPARE_SERIES} experiments.",
    )


def id_list(values: Iterable[str], *, most: int, empty: str, too_many: str) -> list[str]:
    """Ids given repeated and/or comma-separated, in order, once each; 400 with ``empty`` when
    there are none, with ``too_many`` when there are more than ``most``.

    Example:
        >>> id_list(["a,b", "a"], most=2, empty="none", too_many="too many")
        ['a', 'b']
    """
    ids: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and part not in ids:
                ids.append(part)
    if not ids:
        raise ApiError(400, "validation_error", empty)
    if len(ids) > most:
        raise ApiError(400, "validation_error", too_many)
    return ids
