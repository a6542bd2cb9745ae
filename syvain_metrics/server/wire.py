"""The store's records written as the contract's JSON objects (``data`` of an answer), the
dashboard links included. Handlers and dashboard pages call these; the store knows no wire.

Example:
    >>> from syvain_metrics.server.store.records import Folder
    >>> folder(Folder("f2", "org", "resnet", ("f1",), ("vision", "resnet")))["path_name"]
    'vision/resnet'
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from syvain_metrics.contract.operations import dashboard_experiment_path
from syvain_metrics.server.sql import ROW_COLUMNS
from syvain_metrics.server.store.records import (
    Annotation,
    CatalogEntry,
    CatalogValues,
    Experiment,
    Folder,
    FolderContents,
    IngestionKey,
    Organization,
)

Wire = dict[str, Any]


def organization(org: Organization) -> Wire:
    """``{id, name}``."""
    return {"id": org.id, "name": org.name}


def folder(record: Folder) -> Wire:
    """A folder with the ids of its ancestors and its path of names."""
    return {
        "folder_id": record.id,
        "org_id": record.org_id,
        "name": record.name,
        "parent_id_path": list(record.parent_ids),
        "path_name": record.path,
    }


def experiment(record: Experiment, origin: str) -> Wire:
    """An experiment; its ``url`` is its dashboard page at ``origin`` (the scheme and host
    the request was sent to)."""
    return {
        "id": record.id,
        "org_id": record.org_id,
        "folder": None if record.folder is None else folder(record.folder),
        "url": origin + dashboard_experiment_path(record.id),
        "slug": record.slug,
        "description": record.description,
        "metadata": record.metadata,
        "status": record.status,
        "error_name": record.error_name,
        "error_detail": record.error_detail,
        "created_at_ms": record.created_at_ms,
        "updated_at_ms": record.updated_at_ms,
        "started_at_ms": record.started_at_ms,
        "done_at_ms": record.done_at_ms,
        "last_heartbeat_at_ms": record.last_heartbeat_at_ms,
        "last_event_at_ms": record.last_event_at_ms,
    }


def folder_contents(contents: FolderContents, origin: str) -> Wire:
    """``{folder, folders, experiments}`` of ``GET /folders/{id}``."""
    return {
        "folder": folder(contents.folder),
        "folders": [folder(f) for f in contents.folders],
        "experiments": [experiment(e, origin) for e in contents.experiments],
    }


def annotation(record: Annotation) -> Wire:
    """An annotation."""
    return {
        "id": record.id,
        "experiment_id": record.experiment_id,
        "annotation": record.annotation,
        "metadata": record.metadata,
        "created_at_ms": record.created_at_ms,
    }


def ingestion_key(record: IngestionKey) -> Wire:
    """An ingestion key (never its token)."""
    return {
        "id": record.id,
        "experiment_id": record.experiment_id,
        "name": record.name,
        "created_at_ms": record.created_at_ms,
        "expires_at_ms": record.expires_at_ms,
        "revoked_at_ms": record.revoked_at_ms,
        "last_used_at_ms": record.last_used_at_ms,
    }


def catalog_entry(entry: CatalogEntry) -> Wire:
    """A metric name and its metadata keys."""
    return {"metric_name": entry.metric_name, "metadata_keys": entry.metadata_keys}


def catalog_values(values: CatalogValues) -> Wire:
    """The values of a metric's metadata keys."""
    return {
        "metric_name": values.metric_name,
        "scanned_event_count": values.scanned_event_count,
        "keys": [
            {"key": k.key, "values": k.values, "value_count": k.value_count} for k in values.keys
        ],
    }


def metric_row(values: Sequence[Any]) -> Wire:
    """One metric row (:data:`~syvain_metrics.server.sql.ROW_COLUMNS` order) as the contract
    writes it (``step`` and the value as floats).

    Example:
        >>> metric_row(["e1", "o", "x", "s", None, None, "loss", 1, 3, "{}", 5, 6])["step"]
        3.0
    """
    row = dict(zip(ROW_COLUMNS, values, strict=False))
    row["metric_value"] = float(row["metric_value"])
    if row["step"] is not None:
        row["step"] = float(row["step"])
    return row


_ROW_TEXT = "{}{!r}{}".format


def rows_json(rows: Sequence[Sequence[Any]]) -> str:
    """The JSON array of rows selected with ``RowQuery.sql(as_json=True)``
    (:meth:`Store.metric_row_texts`): each row is its head text, its value written by Python
    (the shortest text that reads back exactly) and its tail text.

    Example:
        >>> rows_json([('{"event_id":"e1","metric_value":', 0.1, ',"step":null}')])
        '[{"event_id":"e1","metric_value":0.1,"step":null}]'
    """
    if not rows:
        return "[]"
    texts = map(
        _ROW_TEXT,
        map(itemgetter(0), rows),
        map(float, map(itemgetter(1), rows)),
        map(itemgetter(2), rows),
    )
    return "[" + ",".join(texts) + "]"
