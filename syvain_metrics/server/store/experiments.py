"""Experiments: created in a folder (or the root), moved, and taken through their statuses.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> store.update_status(org, exp.id, {"status": "running"}).status
    'running'
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from syvain_metrics.contract.limits import DEFAULT_ERROR_NAME
from syvain_metrics.server.errors import ApiError, not_found
from syvain_metrics.server.sql import compact
from syvain_metrics.server.store.base import StoreBase
from syvain_metrics.server.store.ids import new_id
from syvain_metrics.server.store.records import (
    EXPERIMENT_COLUMNS,
    Experiment,
    Folder,
    experiment_record,
)


class Experiments(StoreBase):
    """Reading, listing, creating, moving experiments and changing their status."""

    def _experiment(self, db: sqlite3.Connection, org_id: str, experiment_id: str) -> Experiment:
        row = self._experiment_row(db, org_id, experiment_id)
        return experiment_record(row, self._folder_index(db, org_id))

    def get_experiment(self, org_id: str, experiment_id: str) -> Experiment:
        """One experiment of the organization (404 for another's)."""
        with self._lock:
            return self._experiment(self._db, org_id, experiment_id)

    def list_experiments(
        self,
        org_id: str,
        *,
        limit: int,
        status: str | None = None,
        slug: str | None = None,
        search: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> list[Experiment]:
        """Experiments newest first, filtered as ``GET /experiments`` says."""
        where = ["org_id = ?"]
        params: list[Any] = [org_id]
        for clause, value in (
            ("status = ?", status),
            ("slug = ?", slug),
            ("created_at_ms >= ?", from_ms),
            ("created_at_ms <= ?", to_ms),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if search is not None:
            where.append("(sm_contains(slug, ?) OR sm_contains(description, ?))")
            params += [search, search]
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE {' AND '.join(where)} "
                "ORDER BY created_at_ms DESC, seq DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
            index = self._folder_index(db, org_id)  # the same snapshot as the rows
        folders: dict[str, Folder] = {}
        return [experiment_record(r, index, folders) for r in rows]

    def create_experiment(self, org_id: str, body: Mapping[str, Any]) -> Experiment:
        """A new experiment in status ``created`` (at the root unless ``folder_id`` names one)."""
        folder_id = body.get("folder_id")
        now = self.now_ms()
        with self._tx() as db:
            if folder_id is not None and folder_id not in self._folder_index(db, org_id):
                raise not_found("Folder", field="folder_id")
            taken = db.execute(
                "SELECT 1 FROM experiments WHERE org_id = ? AND slug = ?", (org_id, body["slug"])
            ).fetchone()
            if taken is not None:
                raise ApiError(
                    409, "slug_exists", f"Slug {body['slug']!r} already exists", field="slug"
                )
            experiment_id = new_id()
            db.execute(
                "INSERT INTO experiments (id, org_id, folder_id, slug, description, metadata_json, "
                "status, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, 'created', ?, ?)",
                (
                    experiment_id,
                    org_id,
                    folder_id,
                    body["slug"],
                    body.get("description", ""),
                    compact(body.get("metadata", {})),
                    now,
                    now,
                ),
            )
            return self._experiment(db, org_id, experiment_id)

    def update_status(self, org_id: str, experiment_id: str, body: Mapping[str, Any]) -> Experiment:
        """Apply a status transition (any status may follow any other)."""
        now = self.now_ms()
        when = body.get("timestamp_ms", now)
        status = body["status"]
        with self._tx() as db:
            row = self._experiment_row(db, org_id, experiment_id)
            started = row["started_at_ms"]
            if status == "running" and started is None:
                started = when
            done = when if status in ("done", "error") else row["done_at_ms"]
            error_name = error_detail = None
            if status == "error":
                error = body.get("error") or {}
                error_name = error.get("name", DEFAULT_ERROR_NAME)
                error_detail = error.get("detail", "")
            db.execute(
                "UPDATE experiments SET status = ?, started_at_ms = ?, done_at_ms = ?, "
                "error_name = ?, error_detail = ?, updated_at_ms = ? WHERE id = ?",
                (status, started, done, error_name, error_detail, now, experiment_id),
            )
            return self._experiment(db, org_id, experiment_id)

    def move_experiment(self, org_id: str, experiment_id: str, folder_id: str | None) -> Experiment:
        """Put an experiment in ``folder_id`` (``None``: the root)."""
        with self._tx() as db:
            self._experiment_row(db, org_id, experiment_id)
            if folder_id is not None and folder_id not in self._folder_index(db, org_id):
                raise not_found("Folder", field="folder_id")
            db.execute(
                "UPDATE experiments SET folder_id = ?, updated_at_ms = ? WHERE id = ?",
                (folder_id, self.now_ms(), experiment_id),
            )
            return self._experiment(db, org_id, experiment_id)
