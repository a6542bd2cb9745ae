"""Folders: a tree per organization, sibling names unique.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    >>> vision = store.create_folder(org, "vision", None)
    >>> store.create_folder(org, "resnet", vision.id).path_names
    ('vision', 'resnet')
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from syvain_metrics.server.errors import ApiError, invalid, not_found
from syvain_metrics.server.store.base import StoreBase
from syvain_metrics.server.store.ids import new_id
from syvain_metrics.server.store.records import (
    EXPERIMENT_COLUMNS,
    Folder,
    FolderContents,
    experiment_record,
    folder_record,
)


class Folders(StoreBase):
    """Creating, listing, reading, renaming and moving folders."""

    def list_folders(self, org_id: str, path: str | None = None) -> list[Folder]:
        """Every folder of the organization by path, or the one whose path is ``path``."""
        with self._lock:
            index = self._folder_index(self._db, org_id)
        folders = [folder_record(org_id, fid, index) for fid in index]
        if path is not None:
            folders = [f for f in folders if f.path == path]
        return sorted(folders, key=lambda f: (f.path, f.id))

    def _check_sibling_name(
        self, db: sqlite3.Connection, org_id: str, parent_id: str | None, name: str
    ) -> None:
        clash = db.execute(
            "SELECT 1 FROM folders WHERE org_id = ? AND ifnull(parent_id, '') = ? AND name = ?",
            (org_id, parent_id or "", name),
        ).fetchone()
        if clash is not None:
            raise ApiError(
                409, "folder_exists", f"A folder named {name!r} already exists here", field="name"
            )

    def create_folder(self, org_id: str, name: str, parent_id: str | None) -> Folder:
        """A new folder under ``parent_id`` (``None``: the root)."""
        with self._tx() as db:
            index = self._folder_index(db, org_id)
            if parent_id is not None and parent_id not in index:
                raise not_found("Folder", field="parent_id")
            self._check_sibling_name(db, org_id, parent_id, name)
            folder_id = new_id()
            db.execute(
                "INSERT INTO folders (id, org_id, parent_id, name, created_at_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                (folder_id, org_id, parent_id, name, self.now_ms()),
            )
            index[folder_id] = (parent_id, name)
        return folder_record(org_id, folder_id, index)

    def get_folder(self, org_id: str, folder_id: str) -> FolderContents:
        """A folder, its children by name and its experiments newest first."""
        with self._lock:
            index = self._folder_index(self._db, org_id)
            if folder_id not in index:
                raise not_found("Folder")
            rows = self._db.execute(
                f"SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE org_id = ? AND folder_id = ? "
                "ORDER BY created_at_ms DESC, seq DESC",
                (org_id, folder_id),
            ).fetchall()
        children = sorted(
            (fid for fid, (parent, _) in index.items() if parent == folder_id),
            key=lambda fid: (index[fid][1], fid),
        )
        return FolderContents(
            folder_record(org_id, folder_id, index),
            [folder_record(org_id, fid, index) for fid in children],
            [experiment_record(r, index, {}) for r in rows],
        )

    def patch_folder(self, org_id: str, folder_id: str, changes: Mapping[str, Any]) -> Folder:
        """Rename (``name``) and/or move (``parent_id`` present, ``None`` = root) a folder."""
        with self._tx() as db:
            index = self._folder_index(db, org_id)
            if folder_id not in index:
                raise not_found("Folder")
            parent_id, name = index[folder_id]
            if "parent_id" in changes:
                parent_id = changes["parent_id"]
                if parent_id is not None and parent_id not in index:
                    raise not_found("Folder", field="parent_id")
                ancestor = parent_id
                while ancestor is not None:
                    if ancestor == folder_id:
                        raise invalid(
                            "parent_id",
                            "A folder cannot move under itself or one of its descendants.",
                            what="request body",
                        )
                    ancestor = index[ancestor][0]
            name = changes.get("name", name)
            if (parent_id, name) != index[folder_id]:
                self._check_sibling_name(db, org_id, parent_id, name)
                db.execute(
                    "UPDATE folders SET parent_id = ?, name = ? WHERE id = ?",
                    (parent_id, name, folder_id),
                )
                index[folder_id] = (parent_id, name)
        return folder_record(org_id, folder_id, index)
