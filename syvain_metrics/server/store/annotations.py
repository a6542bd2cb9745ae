"""Annotations: notes on an experiment, oldest first.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> _, note = store.create_annotation(org, exp.id, {"annotation": "ckpt saved"})
    >>> [a.annotation for a in store.list_annotations(org, exp.id, limit=10)]
    ['ckpt saved']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from syvain_metrics.server.sql import compact
from syvain_metrics.server.store.experiments import Experiments
from syvain_metrics.server.store.ids import new_id
from syvain_metrics.server.store.records import Annotation, Experiment


class Annotations(Experiments):
    """Writing and listing annotations (a new one answers with its experiment too)."""

    def create_annotation(
        self, org_id: str, experiment_id: str, body: Mapping[str, Any]
    ) -> tuple[Experiment, Annotation]:
        """A new annotation, and its experiment."""
        annotation = Annotation(
            id=new_id(),
            experiment_id=experiment_id,
            annotation=body["annotation"],
            metadata=dict(body.get("metadata", {})),
            created_at_ms=self.now_ms(),
        )
        with self._tx() as db:
            experiment = self._experiment(db, org_id, experiment_id)
            db.execute(
                "INSERT INTO annotations (id, org_id, experiment_id, annotation, metadata_json, "
                "created_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    annotation.id,
                    org_id,
                    experiment_id,
                    annotation.annotation,
                    compact(annotation.metadata),
                    annotation.created_at_ms,
                ),
            )
        return experiment, annotation

    def list_annotations(
        self,
        org_id: str,
        experiment_id: str,
        *,
        limit: int,
        from_ms: int | None = None,
        to_ms: int | None = None,
    ) -> list[Annotation]:
        """Annotations oldest first, ``created_at_ms`` within the inclusive bounds."""
        where = ["experiment_id = ?"]
        params: list[Any] = [experiment_id]
        if from_ms is not None:
            where.append("created_at_ms >= ?")
            params.append(from_ms)
        if to_ms is not None:
            where.append("created_at_ms <= ?")
            params.append(to_ms)
        with self._reading() as db:
            self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "SELECT id, experiment_id, annotation, metadata_json, created_at_ms "
                f"FROM annotations WHERE {' AND '.join(where)} ORDER BY created_at_ms, seq LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [
            Annotation(
                r["id"],
                r["experiment_id"],
                r["annotation"],
                json.loads(r["metadata_json"]),
                r["created_at_ms"],
            )
            for r in rows
        ]
