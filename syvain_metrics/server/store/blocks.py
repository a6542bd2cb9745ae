"""Blocks of sub-series: each run's metric and event metadata summarized per run of
:data:`BLOCK_STEPS` consecutive steps (how many points, the lowest and highest value, the
first and last step), kept in ``series_blocks`` in the same transaction as the events.

A chart of a long series slices it by step: slices made of whole blocks are summed from the
blocks alone, a few hundred rows per sub-series instead of every point, and stay exact (a
slice's count, lowest and highest value and steps are those of its points; a block of one
point holds that point's value). Events without a step are in no block.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> store.ingest(org, exp.id, [
    ...     {"client_event_id": str(i), "name": "loss", "value": i, "step": i}
    ...     for i in range(40)])
    >>> [row[3:] for row in store.series_blocks(org, exp.id, "loss")]
    [(0, 16, 0.0, 15.0, 0, 15), (1, 16, 16.0, 31.0, 16, 31), (2, 8, 32.0, 39.0, 32, 39)]
"""

from __future__ import annotations

from typing import Any

from syvain_metrics.server.sql import BLOCK_BITS, SeriesFilter
from syvain_metrics.server.store.reads import Reads

_SLICES = """
SELECT metadata_json, ((block - :first + 1) * :slices - 1) / :blocks AS slice, sum(count),
    min(min_value), max(max_value), min(min_step), max(max_step)
FROM series_blocks
WHERE experiment_seq = :seq AND metric_name = :metric AND block BETWEEN :first AND :last
GROUP BY metadata_json, slice
"""
"""Slice ``i`` of ``:slices`` over ``:blocks`` blocks from ``:first`` holds the blocks
``floor(i * blocks / slices)`` up to the next slice's first: block ``j`` (counted from
``:first``) is in slice ``floor(((j + 1) * slices - 1) / blocks)``."""

_NO_STEP = """
SELECT metadata_json, count(*), min(metric_value), max(metric_value)
FROM events INDEXED BY events_by_metric_step
WHERE experiment_seq = ? AND metric_name = ? AND step IS NULL GROUP BY metadata_json
"""

_STEP_RANGE = """
SELECT (SELECT min(step) FROM events WHERE experiment_seq = ?1 AND metric_name = ?2),
    (SELECT max(step) FROM events WHERE experiment_seq = ?1 AND metric_name = ?2)
"""

_LARGEST_PRODUCT = 2**62
"""Past this, ``(block + 1) * slices`` could overflow SQLite's 64-bit integers."""


class Blocks(Reads):
    """Charts of long series by step, read from the blocks."""

    def series_blocks(
        self, org_id: str, experiment_id: str, metric_name: str
    ) -> list[tuple[Any, ...]]:
        """Every block of the experiment's metric, as stored: ``(experiment seq, metric,
        metadata_json, block, count, min value, max value, min step, max step)``, in key
        order; 404 for another organization's experiment.

        Example:
            >>> store.series_blocks(org, exp.id, "loss")[0][3:5]  # doctest: +SKIP
            (0, 16)
        """
        with self._reading() as db:
            seq = self._experiment_row(db, org_id, experiment_id)["seq"]
            rows = db.execute(
                "SELECT * FROM series_blocks WHERE experiment_seq = ? AND metric_name = ? "
                "ORDER BY metadata_json, block",
                (seq, metric_name),
            ).fetchall()
        return [tuple(row) for row in rows]

    def step_buckets(
        self,
        org_id: str,
        experiment_id: str,
        metric_name: str,
        buckets: int,
        *,
        missing_field: str | None = None,
    ) -> tuple[int | None, int | None, list[tuple[Any, ...]]]:
        """One experiment's metric summarized by step as :meth:`Store.metric_buckets` does it
        (same answer shape, one series), read from the blocks when its steps span at least
        ``buckets`` blocks: then there are exactly ``buckets`` slices, each a whole number of
        blocks (their widths differ by at most one block), each exact. A shorter series is
        read point by point (:meth:`Store.metric_buckets`), as is a time axis.

        Example:
            >>> lo, hi, rows = store.step_buckets(org, exp.id, "loss", 300)  # doctest: +SKIP
        """
        with self._reading() as db:
            found = db.execute(
                "SELECT seq FROM experiments WHERE org_id = ? AND id = ?", (org_id, experiment_id)
            ).fetchone()
            if found is not None:
                seq = int(found[0])
                lo, hi = db.execute(_STEP_RANGE, (seq, metric_name)).fetchone()
                first = None if lo is None else int(lo) >> BLOCK_BITS
                last = None if hi is None else int(hi) >> BLOCK_BITS
            if found is not None and first is not None and last is not None:
                blocks = last - first + 1
                if blocks >= buckets and (blocks + 1) * buckets < _LARGEST_PRODUCT:
                    rows: list[tuple[Any, ...]] = [
                        (0, metadata_json, None, count, float(low), float(high), None, None)
                        for metadata_json, count, low, high in db.execute(
                            _NO_STEP, (seq, metric_name)
                        )
                    ]
                    params = {
                        "first": first,
                        "last": last,
                        "slices": buckets,
                        "blocks": blocks,
                        "seq": seq,
                        "metric": metric_name,
                    }
                    cursor = db.cursor()
                    cursor.row_factory = None  # plain tuples: a Row object per row costs more
                    for metadata_json, piece, count, low, high, x0, x1 in cursor.execute(
                        _SLICES, params
                    ):
                        rows.append(
                            (0, metadata_json, piece, count, float(low), float(high), x0, x1)
                        )
                    return int(lo), int(hi), rows
        series = [SeriesFilter(experiment_id=experiment_id, metric_name=metric_name)]
        return self.metric_buckets(org_id, series, "step", buckets, missing_field=missing_field)
