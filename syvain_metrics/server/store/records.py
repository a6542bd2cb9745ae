"""What the store reads back: plain records of its rows, with no wire or HTTP form.

:mod:`syvain_metrics.server.wire` turns them into the contract's JSON objects. Records are
named tuples: a listing makes one per row, and a tuple is made in a third of a frozen
dataclass's time.

Example:
    >>> index = {"a": (None, "vision"), "b": ("a", "resnet")}
    >>> folder_record("org", "b", index).path_names
    ('vision', 'resnet')
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any, NamedTuple

FolderIndex = Mapping[str, tuple[str | None, str]]
"""An organization's folders: id -> (parent id, name)."""


class Organization(NamedTuple):
    """An organization: every API key is one."""

    id: str
    name: str


class Folder(NamedTuple):
    """A folder and where it sits: its ancestors' ids and every name from the root down."""

    id: str
    org_id: str
    name: str
    parent_ids: tuple[str, ...]
    """Ancestors' ids, the root's first."""
    path_names: tuple[str, ...]
    """Names from the root down to this folder's own."""

    @property
    def path(self) -> str:
        """The names from the root joined by ``/`` (a folder name holds no ``/``)."""
        return "/".join(self.path_names)


class Experiment(NamedTuple):
    """An experiment's stored fields, its folder resolved."""

    id: str
    org_id: str
    folder: Folder | None
    slug: str
    description: str
    metadata: dict[str, Any]
    status: str
    error_name: str | None
    error_detail: str | None
    created_at_ms: int
    updated_at_ms: int
    started_at_ms: int | None
    done_at_ms: int | None
    last_heartbeat_at_ms: int | None
    last_event_at_ms: int | None


class FolderContents(NamedTuple):
    """A folder with its child folders (by name) and its experiments (newest first)."""

    folder: Folder
    folders: list[Folder]
    experiments: list[Experiment]


class Annotation(NamedTuple):
    """A note on an experiment."""

    id: str
    experiment_id: str
    annotation: str
    metadata: dict[str, Any]
    created_at_ms: int


class IngestionKey(NamedTuple):
    """An ingestion key as stored (its token is kept only as a hash, never read back)."""

    id: str
    experiment_id: str
    name: str
    created_at_ms: int
    expires_at_ms: int
    revoked_at_ms: int | None
    last_used_at_ms: int | None


class CatalogEntry(NamedTuple):
    """A metric name and the metadata keys seen with it, alphabetically."""

    metric_name: str
    metadata_keys: list[str]


class KeyValues(NamedTuple):
    """A metadata key's distinct values (at most the limit asked for) and how many there are."""

    key: str
    values: list[Any]
    value_count: int


class CatalogValues(NamedTuple):
    """The values of a metric's metadata keys, and how many events were looked at."""

    metric_name: str
    scanned_event_count: int
    keys: list[KeyValues]


def folder_record(org_id: str, folder_id: str, index: FolderIndex) -> Folder:
    """The folder ``folder_id`` of an organization's folder index."""
    parents: list[str] = []
    names = [index[folder_id][1]]
    parent = index[folder_id][0]
    while parent is not None:
        parents.append(parent)
        names.append(index[parent][1])
        parent = index[parent][0]
    return Folder(folder_id, org_id, names[0], tuple(parents[::-1]), tuple(names[::-1]))


def experiment_record(
    row: sqlite3.Row, index: FolderIndex, folders: dict[str, Folder] | None = None
) -> Experiment:
    """An experiment of its row (:data:`EXPERIMENT_COLUMNS`) and its organization's folders;
    ``folders`` keeps the folder records already made, for a listing of many experiments."""
    folder_id = row["folder_id"]
    folder = None
    if folder_id is not None:
        folders = {} if folders is None else folders
        folder = folders.get(folder_id)
        if folder is None:
            folder = folders[folder_id] = folder_record(row["org_id"], folder_id, index)
    return Experiment(
        row["id"],
        row["org_id"],
        folder,
        row["slug"],
        row["description"],
        json.loads(row["metadata_json"]),
        row["status"],
        row["error_name"],
        row["error_detail"],
        row["created_at_ms"],
        row["updated_at_ms"],
        row["started_at_ms"],
        row["done_at_ms"],
        row["last_heartbeat_at_ms"],
        row["last_event_at_ms"],
    )


EXPERIMENT_COLUMNS = (
    "seq, id, org_id, folder_id, slug, description, metadata_json, status, error_name, "
    "error_detail, created_at_ms, updated_at_ms, started_at_ms, done_at_ms, "
    "last_heartbeat_at_ms, last_event_at_ms"
)
"""The columns :func:`experiment_record` reads."""

KEY_COLUMNS = (
    "id, experiment_id, name, created_at_ms, expires_at_ms, revoked_at_ms, last_used_at_ms"
)
"""The columns of an :class:`IngestionKey`, in its fields' order."""
