"""Ingest: a validated batch of metrics stored in one transaction, its rows read out of its
JSON text by SQLite, before the write lock when a staging slot is free (:meth:`staging`).

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> store.ingest(org, exp.id, [{"client_event_id": "a", "name": "loss", "value": 1}])
    >>> store.metric_names(org, exp.id)
    ['loss']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from syvain_metrics.server.sql import (
    ADD_TO_BLOCKS,
    HIGHEST_SEQ,
    INSERT_EVENT_ROW,
    INSERT_EVENTS,
    batch_json,
    canonical,
    insert_staged,
)
from syvain_metrics.server.staging import StagedBatch
from syvain_metrics.server.store.base import StoreBase

_EXACT_INTEGERS = float(2**62)
"""Up to this magnitude an integer ``value`` reaches SQLite as a 64-bit integer and becomes
the same double as Python's ``float()`` of it; beyond 2**63, SQLite parses its digits as a
double itself, which need not round as Python does. (A float's text is its shortest
repr, which SQLite reads back exactly.)"""


def _float_value(metric: Mapping[str, Any]) -> Mapping[str, Any]:
    # Python's rounding of an integer value, not SQLite's reading of its digits.
    value = metric["value"]
    return metric if type(value) is float else {**metric, "value": float(value)}


def _values_exact_in_sqlite(metrics: Sequence[Mapping[str, Any]]) -> bool:
    # One whole-column pass in C.
    return bool(max(map(abs, map(itemgetter("value"), metrics))) <= _EXACT_INTEGERS)


class Ingest(StoreBase):
    """Storing batches of metrics."""

    def _batch_text(
        self, metrics: Sequence[Mapping[str, Any]], source: str | None
    ) -> tuple[str | None, str]:
        batch, path = (source, "$.data") if source is not None else (None, "$")
        if batch is None or not _values_exact_in_sqlite(metrics):
            batch, path = batch_json([_float_value(m) for m in metrics]), "$"
        # SQLite's JSON functions end a string at a NUL: such a batch is bound row by row
        # (metadata texts keep the escape, so only names and ids need it).
        return (None, path) if "\\u0000" in batch else (batch, path)

    @contextmanager
    def staging(
        self, metrics: Sequence[Mapping[str, Any]], *, source: str | None = None
    ) -> Iterator[StagedBatch]:
        """Make a batch ready for :meth:`ingest` without the write lock: its rows are read out
        of its JSON text now, while other batches are written, and the write transaction only
        copies them (:mod:`~syvain_metrics.server.staging`). ``metrics`` and ``source`` are as
        :meth:`ingest` takes them; pass the result to :meth:`transaction` and :meth:`ingest`.

        Example:
            >>> with store.staging(metrics, source=text) as staged:  # doctest: +SKIP
            ...     with store.transaction(staged):
            ...         store.ingest(org_id, experiment_id, metrics, staged=staged)
        """
        now = self.now_ms()
        text, path = self._batch_text(metrics, source) if metrics else (None, "$")
        if text is None:
            yield StagedBatch(now, None, path)
            return
        with self._staging.staged(text, path, now) as slot:
            yield StagedBatch(now, text, path, slot)

    def ingest(
        self,
        org_id: str,
        experiment_id: str,
        metrics: Sequence[Mapping[str, Any]],
        *,
        source: str | None = None,
        staged: StagedBatch | None = None,
    ) -> None:
        """Store a validated batch in one transaction; a repeated ``client_event_id`` is ignored
        (the first write wins, within the batch or across batches). ``metrics`` are as
        :class:`~syvain_metrics.contract.schemas.ingest.MetricBatch` loads them, or kept as given
        (``as_given``: a value may be an ``int``, ``step`` may be missing).

        ``source`` is the canonical JSON text (:func:`canonical`) of ``{"data": raw}``, where
        ``raw`` is what ``metrics`` were validated and loaded from: SQLite then reads the rows
        out of it rather than out of a new text (one encoding less per batch). ``staged`` is the
        batch's :meth:`staging`, when the caller made it before the transaction. Either way an
        event's metadata is stored as its canonical text: keys in sorted order."""
        if not metrics:
            return
        if staged is None:
            staged = StagedBatch(self.now_ms(), *self._batch_text(metrics, source))
        now, slot = staged.now, staged.slot
        with self._tx() as db:
            experiment_seq = self._experiment_row(db, org_id, experiment_id)["seq"]
            after = int(db.execute(HIGHEST_SEQ).fetchone()[0])
            if staged.text is None:
                db.executemany(
                    INSERT_EVENT_ROW,
                    [
                        (
                            experiment_seq,
                            m["client_event_id"],
                            m["name"],
                            float(m["value"]),
                            m.get("step"),
                            canonical(m.get("metadata", {})),
                            m.get("timestamp_ms", now),
                            now,
                        )
                        for m in metrics
                    ],
                )
            elif slot is not None and slot.attached:
                db.execute(
                    insert_staged(slot.schema), {"experiment_seq": experiment_seq, "now": now}
                )
            else:
                db.execute(
                    INSERT_EVENTS,
                    {
                        "experiment_seq": experiment_seq,
                        "now": now,
                        "batch": staged.text,
                        "path": staged.path,
                    },
                )
            # The rows just inserted, and only those (a repeated id inserts none), in the same
            # transaction: the blocks always sum exactly the stored events.
            db.execute(ADD_TO_BLOCKS, {"after": after})
            db.execute(
                "UPDATE experiments SET updated_at_ms = ?, last_event_at_ms = ? WHERE id = ?",
                (now, now, experiment_id),
            )
