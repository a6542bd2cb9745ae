"""The dashboard's runs table at sweep scale: the list page's server time with metric columns,
against the list page before it had any.

A database file holds ``--runs`` runs (100; lr, batch size, optimizer and seed as metadata, in
a folder with a subfolder) of ``--series`` sub-series (10: loss and accuracy in train and
valid splits, and six more metrics) of ``--points`` points each (10,000): 10 million events by
default. The events are written with one ``INSERT ... SELECT`` into the store's own table,
run by run and series by series (the API would take many minutes to carry them, and so would
an insert in logging order, step by step across runs; the page's index seeks read the same
rows either way).

Then, each in a process of its own, with the database built by the older code first:

1. baseline: the list page of ``--baseline-ref`` (default ``75b0abd``, metadata columns only),
   served by that ref's code from a ``git worktree add --detach`` (PYTHONPATH set to it, and
   checked), for all runs and for the folder;
2. current: this tree's code opens the same file (the layout step that adds the
   ``events_by_series`` index runs here: its time is printed), then the list page with the
   default columns (the last value of the first 4 sub-series), with 10 metric columns sorted
   by one (``loss[split=valid]:min``), a metadata filter, the folder with its subfolders, and
   the parallel-coordinates page of every run.

Each page is requested through the dashboard's WSGI application in the process (no socket:
server time only), once to warm up and then ``--repeat`` times; the median is printed in
seconds with its ratio to the baseline's list page of all runs.

    python benchmarks/dashboard_runs.py [--runs 100 --series 10 --points 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "ak_local_0123456789abcdef0123456789abcdef"
SERIES = [
    ("loss", '{"split":"train"}'),
    ("loss", '{"split":"valid"}'),
    ("accuracy", '{"split":"train"}'),
    ("accuracy", '{"split":"valid"}'),
    ("lr", "{}"),
    ("grad_norm", "{}"),
    ("throughput", "{}"),
    ("memory", "{}"),
    ("weight_norm", "{}"),
    ("epoch_time", "{}"),
]


def build(path: str, runs: int, series: int, points: int) -> dict[str, Any]:
    """The database: runs in a folder (the last tenth in a subfolder), then their events."""
    from syvain_metrics.server.store import Store

    store = Store(path)
    [key] = store.use_api_keys([KEY])
    org = store.authenticate(key).org_id
    folder = store.create_folder(org, "sweep", None)
    inner = store.create_folder(org, "more", folder.id)
    for index in range(runs):
        metadata = {
            "lr": [0.1, 0.03, 0.01, 0.003, 0.001][index % 5],
            "batch_size": [32, 64, 128][index % 3],
            "optimizer": ["adam", "sgd"][index % 2],
            "seed": index,
        }
        store.create_experiment(
            org,
            {
                "slug": f"run-{index:03d}",
                "metadata": metadata,
                "folder_id": inner.id if index >= runs * 9 // 10 else folder.id,
            },
        )
    store.close()
    names = " UNION ALL ".join(
        f"SELECT {i} AS n, '{name}' AS name, '{meta}' AS meta"
        for i, (name, meta) in enumerate(SERIES[:series])
    )
    db = sqlite3.connect(path)
    started = time.perf_counter()
    db.execute(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?) "
        "INSERT INTO events (experiment_seq, client_event_id, metric_name, metric_value, step, "
        "metadata_json, client_timestamp_ms, server_timestamp_ms) "
        "SELECT x.seq, k.i || '/' || m.n, m.name, "
        "(1.0 + x.seq % 7) / (1 + k.i / 100.0) + (abs(random()) % 1000) / 10000.0, "
        f"k.i, m.meta, 1700000000000 + k.i * 10, 1700000000000 + k.i * 10 "
        f"FROM k, experiments x, ({names}) m ORDER BY x.seq, m.n, k.i",
        (points,),
    )
    db.commit()
    db.close()
    return {"folder": folder.id, "build_s": time.perf_counter() - started}


def measure(path: str, folder: str, repeat: int, current: bool) -> dict[str, Any]:
    """Each page's median server time in seconds (the database opened, and migrated, first)."""
    from werkzeug.test import Client

    import syvain_metrics

    started = time.perf_counter()
    from syvain_metrics.server.dashboard.web import Dashboard
    from syvain_metrics.server.store import Store

    store = Store(path)
    opened = time.perf_counter() - started
    [key] = store.use_api_keys([KEY])
    dashboard = Dashboard(store)
    client = Client(dashboard)
    assert client.get(dashboard.login_path(key)).status_code == 200
    pages = {"all runs": "/dashboard/", "folder": f"/dashboard/?folder={folder}"}
    if current:
        columns = "&".join(
            f"col={name}[split={split}]:{how}"
            for name in ("loss", "accuracy")
            for split in ("train", "valid")
            for how in (("last", "min", "max") if name == "loss" else ("last", "max"))
        )
        ids = [e.id for e in store.list_experiments(store.authenticate(key).org_id, limit=1000)]
        pages.update(
            {
                "10 columns, sorted": f"/dashboard/?{columns}&sort=metric:loss[split=valid]:min",
                "filtered lr=0.01": f"/dashboard/?{columns}&meta.lr=0.01",
                "folder + subfolders": f"/dashboard/?folder={folder}&sub=1&{columns}",
                "parallel, every run": "/dashboard/parallel?experiments="
                + ",".join(ids)
                + "&summary=loss[split=valid]:min",
            }
        )
    times: dict[str, float] = {}
    for label, url in pages.items():
        reply = client.get(url)
        assert reply.status_code == 200, reply.get_data(as_text=True)[:500]
        runs = []
        for _ in range(repeat):
            begin = time.perf_counter()
            reply = client.get(url)
            reply.get_data()
            runs.append(time.perf_counter() - begin)
        times[label] = statistics.median(runs)
    store.close()
    return {"code": syvain_metrics.__file__, "open_s": opened, "pages": times}


def _worker(tree: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-ref", default="75b0abd")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        kind, path, *rest = options.worker
        if kind == "build":
            print(json.dumps(build(path, *map(int, rest))))
        else:
            folder, repeat = rest
            print(json.dumps(measure(path, folder, int(repeat), kind == "current")))
        return
    with tempfile.TemporaryDirectory(prefix="dashboard-runs-") as scratch:
        base = Path(scratch) / "baseline"
        subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "worktree",
                "add",
                "--detach",
                str(base),
                options.baseline_ref,
            ],
            check=True,
            capture_output=True,
        )
        try:
            path = str(Path(scratch) / "runs.sqlite")
            events = options.runs * options.series * options.points
            print(
                f"{options.runs} runs x {options.series} sub-series x {options.points:,} points "
                f"= {events:,} events"
            )
            made = _worker(
                base,
                "build",
                path,
                str(options.runs),
                str(options.series),
                str(options.points),
            )
            print(f"built by {options.baseline_ref}'s store in {made['build_s']:.1f} s")
            old = _worker(base, "baseline", path, made["folder"], str(options.repeat))
            assert old["code"].startswith(str(base)), old["code"]
            new = _worker(ROOT, "current", path, made["folder"], str(options.repeat))
            assert new["code"].startswith(str(ROOT)), new["code"]
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=False,
                capture_output=True,
            )
        reference = old["pages"]["all runs"]
        print(
            f"opening the database: baseline {old['open_s']:.2f} s, current {new['open_s']:.2f} s"
            " (the current one adds the events_by_series index)"
        )
        print(f"{'page':<28} {'seconds':>9} {'x baseline list':>16}")
        for label, seconds in old["pages"].items():
            print(f"{'baseline ' + label:<28} {seconds:>9.4f} {seconds / reference:>16.2f}")
        for label, seconds in new["pages"].items():
            print(f"{'current ' + label:<28} {seconds:>9.4f} {seconds / reference:>16.2f}")


if __name__ == "__main__":
    main()
