"""Reduced series kept between requests, dropped the moment their events change.

Reducing a long series by step reads its blocks of 16 steps (:meth:`Store.step_buckets`);
by time, it reads every one of its points (:meth:`Store.metric_buckets`), about 1 µs each, so
a comparison of 100 runs of 10 series of 10,000 points costs seconds. A finished sweep does
not change, so each run's reduction of one metric is kept here, keyed by what shaped it
(organization, run, metric, x axis, width).

Events are only ever appended, each with a larger ``seq`` than any before it, and SQLite
commits them one writer at a time. So an entry read when the table's highest ``seq`` was
``mark`` is still exact while no event of its run and metric has a ``seq`` above ``mark``:
one query over the events added since (an index range of the table's own key) says which
entries to drop. Nothing is ever shown stale, whichever process of the server wrote.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> org = store.authenticate(key).org_id
    >>> exp = store.create_experiment(org, {"slug": "run-1"})
    >>> cache = SeriesCache()
    >>> made = []
    >>> def reduce():
    ...     made.append(1)
    ...     return "[]", 0, 0
    >>> cache.get(store, (org, exp.id, "loss", "step", 100), reduce)
    ('[]', 0, 0)
    >>> cache.get(store, (org, exp.id, "loss", "step", 100), reduce) and len(made)
    1
    >>> store.ingest(org, exp.id, [{"client_event_id": "1", "name": "loss", "value": 1, "step": 0}])
    >>> cache.get(store, (org, exp.id, "loss", "step", 100), reduce) and len(made)
    2
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

Key = tuple[str, str, str, str, int]
"""(organization id, experiment id, metric, x axis, width)."""
Reduced = tuple[str, int, int]
"""A run's series of one metric as JSON array items (text), its points and drawn points."""

MAX_BYTES = 64 * 1024 * 1024
"""The cache's size: a comparison of 100 runs x 10 series at 300 px takes about 10 MB."""
MAX_SCAN = 5_000_000
"""Past this many new events, entries are dropped rather than checked (a check reads them)."""


def high_water(store: Any) -> int:
    """The highest event ``seq`` stored (0 for none): one seek at the end of the table."""
    with store._reading() as db:
        row = db.execute("SELECT max(seq) FROM events").fetchone()
    return int(row[0] or 0)


def changed_since(store: Any, mark: int) -> dict[tuple[str, str], int]:
    """``(experiment id, metric) -> highest seq`` of the events stored after ``mark``."""
    with store._reading() as db:
        rows = db.execute(
            "SELECT x.id, e.metric_name, max(e.seq) FROM events e "
            "JOIN experiments x ON x.seq = e.experiment_seq WHERE e.seq > ? "
            "GROUP BY e.experiment_seq, e.metric_name",
            (mark,),
        ).fetchall()
    return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def first_event_ms(store: Any, experiment_ids: Iterable[str]) -> dict[str, int]:
    """Each run's earliest event time (client clock, ms), its start on a relative time axis:
    one index seek per run. Runs without events are left out."""
    out: dict[str, int] = {}
    with store._reading() as db:
        for experiment_id in experiment_ids:
            row = db.execute(
                "SELECT min(e.client_timestamp_ms) FROM events e "
                "WHERE e.experiment_seq = (SELECT seq FROM experiments WHERE id = ?)",
                (experiment_id,),
            ).fetchone()
            if row is not None and row[0] is not None:
                out[experiment_id] = int(row[0])
    return out


class SeriesCache:
    """Reduced series by key, least recently used dropped past ``max_bytes``.

    Args:
        max_bytes: the total size of the texts kept.
    """

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, tuple[int, Reduced]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, store: Any, key: Key, reduce: Callable[[], Reduced]) -> Reduced:
        """The entry for ``key`` if its events did not change, else ``reduce()`` (kept)."""
        return self.get_many(store, [key], lambda _: reduce())[0]

    def get_many(
        self, store: Any, keys: list[Key], reduce: Callable[[Key], Reduced]
    ) -> list[Reduced]:
        """The entries for ``keys`` in order, each reduced again only if it is missing or
        one of its events was stored since it was made.

        Example:
            >>> SeriesCache().get_many(Store(), [], lambda key: ("", 0, 0))  # doctest: +SKIP
            []
        """
        mark = high_water(store)  # read before reducing: an entry is exact at least to here
        with self._lock:
            found = {k: self._entries[k] for k in keys if k in self._entries}
            for k in found:
                self._entries.move_to_end(k)
        stale = [made for made, _ in found.values() if made < mark]
        if stale:
            since = min(stale)
            changed = changed_since(store, since) if mark - since <= MAX_SCAN else None
            with self._lock:
                for k, (made, reduced) in list(found.items()):
                    if made >= mark:
                        continue
                    last = None if changed is None else changed.get((k[1], k[2]), 0)
                    if last is None or last > made:
                        del found[k]
                        self._drop(k)
                    elif k in self._entries:
                        self._entries[k] = (mark, reduced)
        out = []
        for k in keys:
            hit = found.get(k)
            if hit is not None:
                out.append(hit[1])
                continue
            reduced = reduce(k)
            self._keep(k, mark, reduced)
            out.append(reduced)
        return out

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1][0])

    def _keep(self, key: Key, mark: int, reduced: Reduced) -> None:
        with self._lock:
            self._drop(key)
            self._entries[key] = (mark, reduced)
            self._bytes += len(reduced[0])
            while self._bytes > self.max_bytes and self._entries:
                oldest = next(iter(self._entries))
                self._drop(oldest)
