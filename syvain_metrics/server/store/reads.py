"""Reads of metric events: rows of one or more series, the metric catalog, metric names and
the per-slice summaries charts draw.

Rows come back as the SQL selects them (:data:`~syvain_metrics.server.sql.ROW_COLUMNS`, or
the three texts of a row's JSON): :mod:`syvain_metrics.server.wire` writes the answer.

Example:
    >>> from syvain_metrics.server.sql import RowQuery, SeriesFilter
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> store.ingest(org, exp.id, [{"client_event_id": "a", "name": "loss", "value": 1}])
    >>> [row[6:8] for row in store.metric_rows(RowQuery(org, [SeriesFilter(exp.id)], 10))]
    [('loss', 1.0)]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from syvain_metrics.server.errors import not_found
from syvain_metrics.server.limits import MAX_ROWS_ANSWER_BYTES
from syvain_metrics.server.sql import RowQuery, SeriesFilter, canonical
from syvain_metrics.server.store.base import StoreBase
from syvain_metrics.server.store.records import CatalogEntry, CatalogValues, KeyValues


class Reads(StoreBase):
    """Metric rows, the catalog, metric names and chart buckets."""

    def metric_rows(
        self, query: RowQuery, *, missing_field: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Metric rows of one or more series, each in
        :data:`~syvain_metrics.server.sql.ROW_COLUMNS` order; every experiment must be the
        organization's (else 404, naming ``missing_field``)."""
        return self._metric_rows(query, missing_field, as_json=False)

    def metric_row_texts(
        self, query: RowQuery, *, missing_field: str | None = None
    ) -> list[tuple[Any, ...]]:
        """:meth:`metric_rows` as SQLite writes their JSON: per row, the text before the
        value, the value, and the text after it (``RowQuery.sql(as_json=True)``), the rows
        cut once they pass :data:`MAX_ROWS_ANSWER_BYTES`. A large read's answer costs a
        fraction of what a dict per row and ``json.dumps`` cost."""
        return self._metric_rows(query, missing_field, as_json=True)

    def _metric_rows(
        self, query: RowQuery, missing_field: str | None, *, as_json: bool
    ) -> list[tuple[Any, ...]]:
        text, params = replace(query, id_prefix=self._id_prefix).sql(as_json=as_json)
        with self._reading() as db:
            for series in query.series:
                known = db.execute(
                    "SELECT 1 FROM experiments WHERE org_id = ? AND id = ?",
                    (query.org_id, series.experiment_id),
                ).fetchone()
                if known is None:
                    raise not_found("Experiment", field=missing_field)
            cursor = db.cursor()
            cursor.row_factory = None  # plain tuples: a Row object per row costs more
            cursor.execute(text, params)
            if not as_json:
                rows: list[tuple[Any, ...]] = cursor.fetchall()
                return rows
            rows, size = [], 0
            while size <= MAX_ROWS_ANSWER_BYTES and (chunk := cursor.fetchmany(1_000)):
                for row in chunk:
                    rows.append(row)
                    size += len(row[0]) + len(row[2]) + 24  # the value's text at most
                    if size > MAX_ROWS_ANSWER_BYTES:
                        break
        return rows

    def catalog(self, org_id: str, experiment_id: str, limit: int) -> list[CatalogEntry]:
        """Metric names and the metadata keys seen with each, alphabetically."""
        with self._reading() as db:
            experiment = self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "SELECT metric_name, metadata_json FROM events WHERE experiment_seq = ? "
                "GROUP BY metric_name, metadata_json",
                (experiment["seq"],),
            ).fetchall()
        keys: dict[str, set[str]] = {}
        for row in rows:
            keys.setdefault(row["metric_name"], set()).update(json.loads(row["metadata_json"]))
        return [CatalogEntry(name, sorted(keys[name])) for name in sorted(keys)[:limit]]

    def catalog_values(
        self,
        org_id: str,
        experiment_id: str,
        metric_name: str,
        keys: Sequence[str] | None,
        limit: int,
    ) -> CatalogValues:
        """The values of a metric's metadata keys, ordered by JSON text, at most ``limit`` each."""
        with self._reading() as db:
            experiment = self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "SELECT metadata_json, COUNT(*) AS n FROM events "
                "WHERE experiment_seq = ? AND metric_name = ? GROUP BY metadata_json",
                (experiment["seq"], metric_name),
            ).fetchall()
        values: dict[str, dict[str, Any]] = {}
        scanned = 0
        for row in rows:
            scanned += row["n"]
            for key, value in json.loads(row["metadata_json"]).items():
                values.setdefault(key, {})[canonical(value)] = value
        wanted = sorted(set(keys)) if keys else sorted(values)
        out = []
        for key in wanted:
            seen = values.get(key)
            if seen:
                texts = sorted(seen)
                out.append(KeyValues(key, [seen[t] for t in texts[:limit]], len(texts)))
        return CatalogValues(metric_name, scanned, out)

    def metric_names(self, org_id: str, experiment_id: str) -> list[str]:
        """The experiment's metric names, alphabetically: one index seek per name, however
        many events each has.

        Example:
            >>> store.metric_names(org, experiment_id)  # doctest: +SKIP
            ['accuracy', 'loss']
        """
        with self._reading() as db:
            experiment = self._experiment_row(db, org_id, experiment_id)
            rows = db.execute(
                "WITH RECURSIVE names(name) AS ("
                " SELECT min(metric_name) FROM events WHERE experiment_seq = ?1"
                " UNION ALL SELECT (SELECT min(metric_name) FROM events"
                "  WHERE experiment_seq = ?1 AND metric_name > names.name)"
                " FROM names WHERE names.name IS NOT NULL"
                ") SELECT name FROM names WHERE name IS NOT NULL",
                (experiment["seq"],),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def metric_buckets(
        self,
        org_id: str,
        series: Sequence[SeriesFilter],
        x: Literal["step", "client_timestamp"],
        buckets: int,
        *,
        missing_field: str | None = None,
    ) -> tuple[int | None, int | None, list[tuple[Any, ...]]]:
        """Each series (the API's filters) summarized in ``buckets`` equal slices of ``x``
        (the step, or the client timestamp) over the range all of them span, one index range
        per slice: ``(lo, hi, rows)``, a row being ``(series index, metadata_json, bucket,
        count, min value, max value, min x, max x)`` for each metadata text seen in a slice;
        rows whose ``x`` is null have bucket ``None``. Every experiment must be the
        organization's (else 404, naming ``missing_field``).

        Example:
            >>> lo, hi, rows = store.metric_buckets(org, [SeriesFilter(e, "loss")], "step", 800)  # doctest: +SKIP
        """
        column = "e.step" if x == "step" else "e.client_timestamp_ms"
        # A series of one metric is read along its x, slice by slice: an index in the GROUP
        # BY's order (by sub-series, as ``events_by_series`` of some version-6 databases is)
        # would make each slice scan the whole metric.
        by_x = "events_by_metric_step" if x == "step" else "events_by_metric_time"
        along = f"INDEXED BY {by_x}" if all(s.metric_name for s in series) else ""
        # Each series' experiment is checked to be the organization's below, and a series
        # condition names exactly that experiment.
        conditions = [one.sql() for one in series]
        with self._reading() as db:
            for one in series:
                known = db.execute(
                    "SELECT 1 FROM experiments WHERE org_id = ? AND id = ?",
                    (org_id, one.experiment_id),
                ).fetchone()
                if known is None:
                    raise not_found("Experiment", field=missing_field)
            lows: list[int] = []
            highs: list[int] = []
            for condition, params in conditions:
                low, high = db.execute(
                    f"SELECT (SELECT min({column}) FROM events e WHERE {condition}), "
                    f"(SELECT max({column}) FROM events e WHERE {condition})",
                    (*params, *params),
                ).fetchone()
                if low is not None:
                    lows.append(int(low))
                    highs.append(int(high))
            lo = min(lows) if lows else None
            hi = max(highs) if highs else None
            rows: list[tuple[Any, ...]] = []
            single: dict[int, int] = {}  # rowid of a slice's only point -> index in rows
            for index, (condition, params) in enumerate(conditions):
                for metadata_json, count, low, high in db.execute(
                    f"SELECT e.metadata_json, count(*), min(e.metric_value), max(e.metric_value) "
                    f"FROM events e {along} WHERE {condition} AND {column} IS NULL "
                    "GROUP BY e.metadata_json",
                    params,
                ):
                    rows.append((index, metadata_json, None, count, low, high, None, None))
                if lo is None or hi is None:
                    continue
                # One index range per slice, each grouped on its own: no sort of the whole
                # series. SQLite writes the values with quote(), exact but for extreme
                # exponents, so a slice of one point is read again by its rowid.
                slices = db.execute(
                    "WITH RECURSIVE k(b) AS (SELECT 0 UNION ALL SELECT b + 1 FROM k WHERE b + 1 < ?)"
                    " SELECT k.b, (SELECT json_group_array(json_array(m, c, l, h, x0, x1, r)) FROM"
                    f" (SELECT e.metadata_json AS m, count(*) AS c, quote(min(e.metric_value)) AS l,"
                    f" quote(max(e.metric_value)) AS h, min({column}) AS x0, max({column}) AS x1,"
                    f" min(e.rowid) AS r FROM events e {along} WHERE {condition}"
                    f" AND {column} >= ? + (k.b * ? + ? - 1) / ?"
                    f" AND {column} < ? + ((k.b + 1) * ? + ? - 1) / ?"
                    " GROUP BY e.metadata_json)) FROM k",
                    (buckets, *params, *[lo, hi - lo + 1, buckets, buckets] * 2),
                ).fetchall()
                for bucket, text in slices:
                    for metadata_json, count, low, high, first, last, rowid in json.loads(text):
                        if count == 1:
                            single[rowid] = len(rows)
                        rows.append(
                            (
                                index,
                                metadata_json,
                                bucket,
                                count,
                                float(low),
                                float(high),
                                first,
                                last,
                            )
                        )
            ids = list(single)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                for rowid, value in db.execute(
                    f"SELECT rowid, metric_value FROM events WHERE rowid IN ({marks})", chunk
                ):
                    at = single[rowid]
                    rows[at] = (*rows[at][:4], float(value), float(value), *rows[at][6:])
        return lo, hi, rows
