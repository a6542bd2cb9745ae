"""Summaries of sub-series for the dashboard's runs table: which sub-series (a metric and its
event metadata) each run has, and the last, smallest and largest value of each.

Every answer is a few index seeks per sub-series (``events_by_series``, and
``events_by_metric_step`` for the last value), however many points a series holds. Values are
finite: the service never stores NaN or infinities.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> store.ingest(org, exp.id, [
    ...     {"client_event_id": "a", "name": "loss", "value": 2, "step": 1},
    ...     {"client_event_id": "b", "name": "loss", "value": 1, "step": 0}])
    >>> store.series_catalog(org, [exp.id])[exp.id]
    [('loss', '{}')]
    >>> summary = store.series_summaries(org, [(exp.id, "loss", "{}")])[(exp.id, "loss", "{}")]
    >>> summary.last, summary.min, summary.max
    (2.0, 1.0, 2.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from syvain_metrics.server.store.base import StoreBase

_CATALOG = """
WITH RECURSIVE names(name) AS (
    SELECT min(metric_name) FROM events WHERE experiment_seq = ?1
    UNION ALL SELECT (SELECT min(metric_name) FROM events
        WHERE experiment_seq = ?1 AND metric_name > names.name)
    FROM names WHERE names.name IS NOT NULL
), series(name, meta) AS (
    SELECT name, (SELECT min(metadata_json) FROM events
        WHERE experiment_seq = ?1 AND metric_name = names.name AND metric_value IS NOT NULL)
    FROM names WHERE name IS NOT NULL
    UNION ALL SELECT series.name, (SELECT min(metadata_json) FROM events
        WHERE experiment_seq = ?1 AND metric_name = series.name
        AND metadata_json > series.meta AND metric_value IS NOT NULL)
    FROM series WHERE series.meta IS NOT NULL
)
SELECT name, meta FROM series WHERE meta IS NOT NULL
"""
"""An experiment's sub-series in (name, metadata text) order: a skip scan, one seek each
(``metric_value IS NOT NULL``, true of every event, is the condition of ``events_by_series``:
repeating it lets the query use that index)."""

_SUMMARY = """
SELECT
    (SELECT min(metric_value) FROM events
        WHERE experiment_seq = ?1 AND metric_name = ?2 AND metadata_json = ?3
        AND metric_value IS NOT NULL),
    (SELECT max(metric_value) FROM events
        WHERE experiment_seq = ?1 AND metric_name = ?2 AND metadata_json = ?3
        AND metric_value IS NOT NULL)
"""
"""One sub-series' min and max: each one seek of ``events_by_series``."""

_LAST = """
SELECT metric_value, step, client_timestamp_ms, seq
FROM events INDEXED BY events_by_metric_step
WHERE experiment_seq = ?1 AND metric_name = ?2 AND metadata_json = ?3
ORDER BY step DESC, client_timestamp_ms DESC, seq DESC LIMIT 1
"""
"""One sub-series' last event in the reads' order: step (null first), then client time, then
storage order. It is read backwards along its metric's steps, where the sub-series' newest
event sits among the newest events of the metric; ``events_by_series`` would sort the whole
sub-series first."""


class SeriesSummary(NamedTuple):
    """The last, smallest and largest value of a sub-series, and where its last event sits in
    the reads' order (``(step, client time, storage order)``; a null step sorts first)."""

    last: float
    min: float
    max: float
    last_at: tuple[float, int, int]


class Summaries(StoreBase):
    """Which sub-series runs have, and their last, min and max values."""

    def _sequence_numbers(
        self, db: Any, org_id: str, experiment_ids: Sequence[str]
    ) -> dict[str, int]:
        found: dict[str, int] = {}
        ids = list(dict.fromkeys(experiment_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in db.execute(
                f"SELECT id, seq FROM experiments WHERE org_id = ? AND id IN ({marks})",
                (org_id, *chunk),
            ):
                found[row[0]] = int(row[1])
        return found

    def series_catalog(
        self, org_id: str, experiment_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, str]]]:
        """Each experiment's sub-series as ``(metric name, metadata JSON text)``, by name then
        text; another organization's experiments are left out.

        Example:
            >>> store.series_catalog(org, [exp.id])  # doctest: +SKIP
            {'...': [('loss', '{"split":"train"}'), ('loss', '{"split":"valid"}')]}
        """
        with self._reading() as db:
            seqs = self._sequence_numbers(db, org_id, experiment_ids)
            return {
                experiment_id: [(str(n), str(m)) for n, m in db.execute(_CATALOG, (seq,))]
                for experiment_id, seq in seqs.items()
            }

    def series_summaries(
        self, org_id: str, series: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], SeriesSummary]:
        """The summary of each ``(experiment id, metric name, metadata JSON text)`` that has
        events; a sub-series without any, or of another organization's experiment, is left
        out.

        Example:
            >>> store.series_summaries(org, [(exp.id, "loss", "{}")])  # doctest: +SKIP
            {('...', 'loss', '{}'): SeriesSummary(last=2.0, min=1.0, max=2.0, ...)}
        """
        out: dict[tuple[str, str, str], SeriesSummary] = {}
        with self._reading() as db:
            seqs = self._sequence_numbers(db, org_id, [one[0] for one in series])
            for key in dict.fromkeys(series):
                seq = seqs.get(key[0])
                if seq is None:
                    continue
                params = (seq, key[1], key[2])
                last = db.execute(_LAST, params).fetchone()
                if last is None:
                    continue
                value, step, at_ms, event_seq = last
                low, high = db.execute(_SUMMARY, params).fetchone()
                order = (float("-inf") if step is None else float(step), int(at_ms), event_seq)
                out[key] = SeriesSummary(float(value), float(low), float(high), order)
        return out
