"""What ``last_per_step=True`` costs a large read, measured on the columns alone.

A read of ``--rows`` rows (default 1,000,000: 3 metrics x 2 splits of one run) is built as
the SDK builds it (validated pages of 50,000 rows appended to a ``RowColumns``), then these
are timed (best of ``--repeat`` runs, ``time.perf_counter``):

* ``pages -> columns``: appending the validated pages, the client's own share of a read
  (the network and the service are not counted, so the ratios below overstate the cost);
* ``last_per_step, no repeat``: no step logged twice (the common case: no row is looked
  at one by one), for the 6 series and for one series of as many rows
  (``exp.metrics("loss", metadata={"split": "train"})``);
* ``last_per_step, resumed``: a run restarted from a checkpoint, ``--resumed`` of its
  steps logged twice;
* ``naive, resumed``: the same with one dict per row and a loop over rows (what the
  column version replaces), for comparison.

Run (from the repository root)::

    python benchmarks/last_per_step.py
    python benchmarks/last_per_step.py --rows 200000 --repeat 5

The exit status is 0 unless the column version and the naive one disagree; this is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

from syvain_metrics.contract.schemas.rows import MetricRowTable
from syvain_metrics.tables.columns import RowColumns, last_per_step

PAGE = 50_000
SERIES = [(name, split) for name in ("loss", "acc", "lr") for split in ("train", "valid")]


def make_rows(
    count: int, resumed: float, series: list[tuple[str, str]] = SERIES
) -> list[dict[str, Any]]:
    """``count`` rows of one run; the last ``resumed`` fraction of each series' steps is
    logged again by a restarted job (later client time)."""
    per_series = count // len(series)
    again = int(per_series * resumed)
    first_steps = per_series - again
    rows: list[dict[str, Any]] = []
    for name, split in series:
        meta = f'{{"split":"{split}"}}'
        for step in range(first_steps):
            rows.append(row(len(rows), name, meta, step, 1_000_000 + step))
        restart = first_steps - again  # the checkpoint: ``again`` steps before the kill
        for step in range(restart, first_steps):
            rows.append(row(len(rows), name, meta, step, 5_000_000 + step))
    return rows


def row(number: int, name: str, meta: str, step: int, client_ms: int) -> dict[str, Any]:
    return {
        "event_id": f"e{number}",
        "org_id": "org",
        "experiment_id": "x1",
        "experiment_slug": "run-1",
        "metric_name": name,
        "metric_value": step / 7,
        "step": float(step),
        "event_metadata_json": meta,
        "client_timestamp_ms": client_ms,
        "server_timestamp_ms": client_ms + 3,
    }


def to_columns(pages: list[list[dict[str, Any]]]) -> RowColumns:
    table = RowColumns()
    for page in pages:
        table.extend(page)
    return table


def naive(table: RowColumns) -> list[str]:
    """One dict per row and a loop: the event ids kept, in order."""
    best: dict[Any, dict[str, Any]] = {}
    rows = list(table.rows())
    for item in rows:
        if item["step"] is None:
            continue
        key = (item["experiment_id"], item["metric_name"], item["event_metadata_json"])
        key = (*key, item["step"])
        order = (item["client_timestamp_ms"], item["server_timestamp_ms"], item["event_id"])
        held = best.get(key)
        if held is None or order > held["order"]:
            best[key] = {"order": order, "id": item["event_id"]}
    winners = {held["id"] for held in best.values()}
    return [r["event_id"] for r in rows if r["step"] is None or r["event_id"] in winners]


def best_of(repeat: int, work: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resumed", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    def pages_of(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [MetricRowTable().deserialize(rows[i : i + PAGE]) for i in range(0, len(rows), PAGE)]

    plain_rows = make_rows(args.rows, 0.0)
    resumed_rows = make_rows(args.rows, args.resumed)
    plain_pages, resumed_pages = pages_of(plain_rows), pages_of(resumed_rows)
    plain, resumed = to_columns(plain_pages), to_columns(resumed_pages)
    single = to_columns(pages_of(make_rows(args.rows, 0.0, SERIES[:1])))
    del plain_rows, plain_pages
    kept = last_per_step(resumed)
    if kept.column("event_id") != naive(resumed):
        print("the column version and the naive one disagree", file=sys.stderr)
        return 1

    base = best_of(args.repeat, lambda: to_columns(resumed_pages))
    figures = [
        ("pages -> columns", base),
        ("last_per_step, no repeat", best_of(args.repeat, lambda: last_per_step(plain))),
        ("  the same, one series", best_of(args.repeat, lambda: last_per_step(single))),
        ("last_per_step, resumed", best_of(args.repeat, lambda: last_per_step(resumed))),
        ("naive, resumed", best_of(1, lambda: naive(resumed))),
    ]
    print(
        f"{len(resumed):,} rows ({len(resumed) - len(kept):,} replaced by a later one), "
        f"{len(plain):,} rows without a repeat; best of {args.repeat}"
    )
    for label, seconds in figures:
        print(f"  {label:<28} {seconds * 1000:8.1f} ms  {seconds / base:5.2f} x pages -> columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
