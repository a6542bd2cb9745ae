"""Reads and writes at scale, end to end: syvain-metrics vs the published client vs a raw floor.

Every figure comes from a real ``syvain-metrics serve --db <file> --port 0 --api-key ...``
process on 127.0.0.1 (no stubbed transport), driven in the same run by three contenders:

* ours: ``syvain_metrics`` from this working tree, with its defaults (``sm.Session(api_key,
  host=url, spool_dir=None, timeout=300)``; only the timeouts are raised, so that a slow
  page on a busy machine does not fail the run);
* peer: the published ``syvain-metrics-api-client==0.0.71`` in a venv of its own
  (``benchmarks/.venv-published``, made by ``peer_env.ensure_peer_env``), same timeouts;
* floor: plain ``requests`` + ``json``: one ``requests.Session``, 1,000-event JSON bodies for
  ingest (with an ``Idempotency-Key``, as the contract wants and both clients send, so the
  server does the same work), and reads that page with the contract's largest ``limit``
  (100,000) by moving ``from_step``. The floor knows the data, so it stops at a short page
  or once it holds every row, and it keeps only the value and step columns.

What is measured (``--sizes`` N, 100,000 and 1,000,000 by default):

1. Reading one series (``loss``, metadata split=train, steps 0..N-1, in an experiment of its
   own) of N rows: ours default ``exp.metrics("loss", metadata={"split": "train"})``; ours
   with ``limit=N``; ours streaming ``for page in exp.iter_metrics(...)`` (each
   ``sm.MetricRows`` page consumed with ``sum(page.values)`` and dropped; printed "not
   available" when the SDK has no ``iter_metrics`` yet); the peer; the floor. Wall, client
   CPU, client peak RSS, requests, server CPU. Targets: ours no-limit <= 1.1x ours
   ``limit=N``; ours <= 0.6x the peer's wall at every size; at the largest size ours' peak RSS
   <= 0.3x the peer's and streaming <= 300 MB.
2. The multi-series case: the 10,000 rows of ``loss``/train among 300,000 (10 metrics x 3
   splits x 10,000 steps, logged step by step, so the series is spread over the table).
3. Ingesting N events into a fresh experiment on a fresh server and database file: ours one
   ``exp.ingest(events, sync=True)`` call of all N; the peer ``ingest_metrics(..., sync=True)``
   1,000 per call (its documented maximum); the floor. Wall, events/s, server CPU (and per
   100,000 events), bytes per event on disk (growth of the db + ``-wal`` files right after the
   ingest, and of the db file once the server stopped and checkpointed), client RSS after
   building the input list and the peak during the ingest above that (target ours <= +50 MB;
   the peak is reset with ``/proc/self/clear_refs`` once the input is built). Server CPU is
   read at every tenth of the ingest (for ours, on the 100th, 200th, ... ingest POST its
   DEBUG log reports; for the peer and the floor between their calls): the first and last
   tenth of the largest ingest are printed (flat target: last <= 1.2x first).
4. 4 (``--concurrent-clients``) processes ingesting at once with ours, each into its own
   experiment, 250,000 events each (``--concurrent-events``), on a fresh server, vs one such
   process alone on another fresh server: events/s together (all events / from the first
   start to the last end) vs alone (target >= 1.5x). Run on the server as in the other
   phases (one process) and on ``serve --processes 2`` (``--server-processes``), whose
   server CPU includes its worker processes'.
5. First vs last page of the largest read experiment: ``limit=1000`` reads at
   ``from_step=0`` and at ``from_step=N-1000``, by ours and the floor, interleaved, median of
   ``--page-repeat``; ratio last / first (target <= 1.2).
6. ``--baseline-ref REF`` (e.g. ``bae4d6e``) runs phases 3 and 4 again against the server
   code of that git ref: a ``git worktree add --detach`` into the temporary directory, served
   by ``python -m syvain_metrics.server`` from this same venv with ``PYTHONPATH`` set to the
   worktree (checked: the server must import from there), so "current server ingest >= 2.5x
   the baseline's events/s" is read off one run. The worktree is removed at the end.

How: every measured client runs in a fresh process of its own (this file, ``--worker ...``;
the peer's in the peer's venv), so its peak RSS (``VmHWM`` of ``/proc/self/status``, which
includes the interpreter and the imports: printed as "peak MB", and "+MB" above the RSS
right before the timed part) and its CPU (``time.process_time()``, every thread) are its own.
The worker builds its client and its input, says "ready", waits for "go" on stdin (so that
concurrent ingesters start together), runs the timed part and prints one JSON line. Server
CPU is utime + stime of ``/proc/<server pid>/stat``, read by the worker right before and
after its timed part. Requests: ours is not wrapped or patched: a ``logging`` handler on the
``syvain_metrics`` logger at DEBUG counts the per-attempt ``"METHOD URL -> status"`` records
the session writes; the peer is built with a counting ``request=`` (its documented transport
parameter) that calls ``niquests.request``, its default, unchanged; the floor counts its own.

Reads: before the timed runs of a data set, one untimed floor read warms the server's
caches; then ``--repeat`` (3) rounds run every contender once each, in an order rotated by
one every round, and the tables print the medians. Sanity checks (a failure stops the run
with an error): every read returned N rows whose steps sum to N(N-1)/2 and whose values sum to
the data's sum (relative 1e-9: the streaming reader adds page sums); every ingest stored N
events (the local server's catalog ``scanned_event_count``); each page read starts at the
step asked for. The data set-up (the read data sets, once per run, each in its own
experiment) uses the floor's ingest.

The peer: ``list_metrics`` sends one request per call and has no paging and no default
``limit`` (without one the server answers its default 1,000 rows); so the peer pages the
way its API allows: ``limit=--peer-page-size`` (default 100,000, the contract's largest, its
best case), ``from_step`` moved past the last step, until a short page. It opens a new
connection for every request (``niquests.request`` keeps none alive) and validates every
row into a pydantic model; ``ingest_metrics`` accepts at most 1,000 metrics a call.

Run (from the repository root)::

    python benchmarks/scale.py --quick                 # 20k / 100k, a few minutes
    python benchmarks/scale.py                         # 100k / 1M
    python benchmarks/scale.py --baseline-ref bae4d6e  # + the ingest phases on that server
    python benchmarks/scale.py --skip-peer --repeat 1 --db-dir /big/disk
    python benchmarks/scale.py --published-python /path/to/venv/bin/python

The exit status is 0 whether a target passes or misses (this is a measurement, not a
test); it is non-zero only when the set-up or a sanity check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from peer_env import ensure_peer_env  # benchmarks/ is on sys.path when run as a script
from processes import kill_process, stop_process

PEER_PACKAGE = "syvain-metrics-api-client"
PEER_VERSION = "0.0.71"
DEFAULT_VENV = Path(__file__).resolve().parent / ".venv-published"
REPO = Path(__file__).resolve().parent.parent

API_KEY = "ak_local_scale_bench"
METRIC = "loss"
SPLIT = "train"
TRAIN = {"split": SPLIT}
MAX_LIMIT = 100_000  # the contract's largest metric-rows limit
CHUNK = 1_000  # events per ingest request (the contract's maximum)
SLICES = 10  # server CPU is read at every tenth of an ingest
PAGE = 1_000  # phase 5's page
HTTP_TIMEOUT = 300.0
WORKER_TIMEOUT = 3_600.0
MULTI_METRICS = (
    "loss",
    "accuracy",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "perplexity",
    "weight_norm",
    "throughput",
    "memory_gb",
    "epoch",
)
MULTI_SPLITS = ("train", "val", "test")

Json = dict[str, Any]


# -- the data (built identically in every process) --------------------------------------------


def metric_value(step: int, series: int = 0) -> float:
    """A loss-like curve with some wiggle: floats of varied length, all finite."""
    return (1.0 + series) * 2.5 / (1.0 + 0.001 * step) + 0.01 * math.sin(step + series)


def series_events(tag: str, steps: int) -> list[Json]:
    """``loss``/train at steps 0..steps-1: what a training loop would hand to ``ingest``."""
    return [
        {
            "client_event_id": f"{tag}/{METRIC}/{SPLIT}/{i}",
            "name": METRIC,
            "value": metric_value(i),
            "step": i,
            "metadata": {"split": SPLIT},
        }
        for i in range(steps)
    ]


def multi_series_events(tag: str, steps: int) -> list[Json]:
    """Every metric x split at each step, step by step (``loss``/train is series 0)."""
    return [
        {
            "client_event_id": f"{tag}/{name}/{split}/{i}",
            "name": name,
            "value": metric_value(i, m * len(MULTI_SPLITS) + s),
            "step": i,
            "metadata": {"split": split},
        }
        for i in range(steps)
        for m, name in enumerate(MULTI_METRICS)
        for s, split in enumerate(MULTI_SPLITS)
    ]


@dataclass(frozen=True)
class Checksum:
    """What a read of ``loss``/train at steps 0..rows-1 must produce."""

    rows: int
    step_sum: int
    value_sum: float

    @classmethod
    def expected(cls, rows: int) -> Checksum:
        return cls(rows, rows * (rows - 1) // 2, math.fsum(metric_value(i) for i in range(rows)))

    def problem(self, label: str, got: Json) -> str | None:
        if got["rows"] != self.rows or got["step_sum"] != self.step_sum:
            return f"{label} read {got['rows']:,} rows (step sum {got['step_sum']}), not {self}"
        if not math.isclose(got["value_sum"], self.value_sum, rel_tol=1e-9):
            return f"{label} read values summing to {got['value_sum']!r}, not {self.value_sum!r}"
        return None


# -- /proc ---------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.rfind(")") + 2 :].split()  # the name may hold spaces and parentheses


def process_cpu(pid: int) -> float:
    """utime + stime of a server process, all its threads, and of its child processes that
    are running (the workers of ``serve --processes N``), in seconds."""
    fields = _stat_fields(pid)
    total = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                child = _stat_fields(int(entry))
            except OSError:
                continue  # ended meanwhile
            if int(child[1]) == pid:
                total += (int(child[11]) + int(child[12])) / CLOCK_TICKS
    return total


def status_mb(key: str) -> float:
    """A ``kB`` line of ``/proc/self/status`` in MB (``ru_maxrss`` if there is none)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start ``VmHWM`` again from the current RSS (Linux: ``5`` into clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def disk_bytes(db: Path) -> int:
    """The database file and its write-ahead log."""
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


# -- the floor: plain requests + json -------------------------------------------------------------


class Raw:
    """The raw floor; the parent also uses it to set data up and to check what was stored."""

    def __init__(self, url: str, api_key: str = API_KEY) -> None:
        import requests

        self.http = requests.Session()
        self.base = f"{url}/api/v1"
        self.api_key = api_key
        self.requests = 0

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        params: Json | None = None,
        body: Json | None = None,
        idempotent: bool = True,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token or self.api_key}", "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
            if idempotent:
                headers["Idempotency-Key"] = uuid.uuid4().hex
        response = self.http.request(
            method,
            self.base + path,
            params=params,
            data=data,
            headers=headers,
            timeout=HTTP_TIMEOUT,
        )
        self.requests += 1
        if response.status_code >= 400:
            raise SystemExit(f"floor: {method} {path} -> {response.status_code}: {response.text}")
        return json.loads(response.content)["data"]

    def create_experiment(self, slug: str) -> str:
        data = self.call(
            "POST", "/experiments", body={"slug": slug, "description": "", "metadata": {}}
        )
        experiment_id: str = data["experiment"]["id"]
        return experiment_id

    def mint_token(self, experiment_id: str) -> str:
        path = f"/experiments/{experiment_id}/ingestion-keys"
        token: str = self.call("POST", path, body={"name": "scale bench"}, idempotent=False)[
            "token"
        ]
        return token

    def ingest(
        self,
        experiment_id: str,
        token: str,
        events: list[Json],
        after_chunk: Callable[[int], None] | None = None,
    ) -> None:
        path = f"/experiments/{experiment_id}/ingest"
        for number, start in enumerate(range(0, len(events), CHUNK), 1):
            body = {"data": events[start : start + CHUNK]}
            self.call("POST", path, token=token, params={"sync": "true"}, body=body)
            if after_chunk is not None:
                after_chunk(number)

    def read_columns(self, experiment_id: str, expected_rows: int) -> tuple[list[float], list[int]]:
        """Every ``loss``/train row's value and step, in pages of the largest limit."""
        path = f"/experiments/{experiment_id}/metrics"
        values: list[float] = []
        steps: list[int] = []
        from_step = 0
        while True:
            params = {
                "metric_name": METRIC,
                "metadata_key": "split",
                "metadata_value": SPLIT,
                "from_step": from_step,
                "limit": MAX_LIMIT,
            }
            rows = self.call("GET", path, params=params)["rows"]
            values.extend([row["metric_value"] for row in rows])
            steps.extend([int(row["step"]) for row in rows])
            if len(rows) < MAX_LIMIT or len(values) >= expected_rows:
                return values, steps
            from_step = steps[-1] + 1

    def page(self, experiment_id: str, from_step: int) -> list[Json]:
        params = {
            "metric_name": METRIC,
            "metadata_key": "split",
            "metadata_value": SPLIT,
            "from_step": from_step,
            "limit": PAGE,
        }
        rows: list[Json] = self.call("GET", f"/experiments/{experiment_id}/metrics", params=params)[
            "rows"
        ]
        return rows

    def stored(self, experiment_id: str) -> int:
        """Events of ``loss`` stored (the local server's catalog counts them all)."""
        data = self.call("GET", f"/experiments/{experiment_id}/catalog/{METRIC}")
        count: int = data["metadata"]["scanned_event_count"]
        return count


# -- the workers (one process each) -------------------------------------------------------------


def emit(message: Json) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def ready_then_wait() -> None:
    """Say "ready" and wait for the parent's "go" (concurrent ingesters start together)."""
    emit({"event": "ready"})
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("worker: the parent went away")


class AttemptCounter(logging.Handler):
    """Counts the SDK's per-attempt DEBUG records ``"METHOD URL -> status"``; calls
    ``on_ingest(n)`` after the n-th ingest POST (to read server CPU at slice boundaries)."""

    PATTERN = re.compile(r"^(GET|POST|PATCH|PUT|DELETE) (\S+) -> \d+$")

    def __init__(self, on_ingest: Callable[[int], None] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0
        self.ingests = 0
        self.on_ingest = on_ingest
        logger = logging.getLogger("syvain_metrics")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        logger.propagate = False  # counted, never printed

    def emit(self, record: logging.LogRecord) -> None:
        found = self.PATTERN.match(record.getMessage())
        if found is None:
            return
        self.count += 1
        if found.group(1) == "POST" and found.group(2).split("?")[0].endswith("/ingest"):
            self.ingests += 1
            if self.on_ingest is not None:
                self.on_ingest(self.ingests)


@dataclass
class Meter:
    """The timed part of a worker: wall, process CPU, server CPU, RSS."""

    server_pid: int
    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0
    rss_before_mb: float = 0.0
    start_mono: float = 0.0
    end_mono: float = 0.0
    _marks: list[float] = field(default_factory=list)

    @contextlib.contextmanager
    def timed(self) -> Iterator[Meter]:
        gc.collect()
        self.rss_before_mb = status_mb("VmRSS")
        server0 = process_cpu(self.server_pid)
        self._marks = [server0]
        cpu0 = time.process_time()
        self.start_mono = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
        start = time.perf_counter()
        yield self
        self.wall = time.perf_counter() - start
        self.end_mono = time.monotonic()
        self.cpu = time.process_time() - cpu0
        self.server_cpu = process_cpu(self.server_pid) - server0

    def mark(self) -> None:
        """Server CPU now (a slice boundary)."""
        self._marks.append(process_cpu(self.server_pid))

    def slices(self) -> list[float]:
        return [b - a for a, b in zip(self._marks, self._marks[1:], strict=False)]

    def result(self, **extra: Any) -> Json:
        return {
            "event": "result",
            "wall": self.wall,
            "cpu": self.cpu,
            "server_cpu": self.server_cpu,
            "rss_before_mb": self.rss_before_mb,
            "peak_mb": status_mb("VmHWM"),
            "start_mono": self.start_mono,
            "end_mono": self.end_mono,
            **extra,
        }


def summed(count: int, step_sum: int, value_sum: float) -> Json:
    return {"rows": count, "step_sum": step_sum, "value_sum": value_sum}


def open_ours(job: Json) -> tuple[Any, Any]:
    import syvain_metrics as sm

    session = sm.Session(
        job["api_key"],
        host=job["url"],
        spool_dir=None,
        timeout=HTTP_TIMEOUT,
        ingest_timeout=HTTP_TIMEOUT,
    )
    return sm, session


def open_peer(job: Json) -> tuple[Any, list[int]]:
    """The published client with a counting ``request=`` around its default transport."""
    import niquests  # type: ignore[import-not-found, unused-ignore]
    from syvain_metrics_api_client import (  # type: ignore[import-not-found, unused-ignore]
        SyvainMetricsApiClient,
    )

    calls = [0]

    def request(method: str, url: str, **options: Any) -> Any:
        calls[0] += 1
        return niquests.request(method, url, **options)

    client = SyvainMetricsApiClient(
        job["api_key"],
        host=job["url"],
        timeout=HTTP_TIMEOUT,
        ingest_timeout=HTTP_TIMEOUT,
        request=request,
    )
    return client, calls


def worker_read(job: Json) -> None:
    contender, experiment_id = job["contender"], job["experiment_id"]
    meter = Meter(job["server_pid"])
    requests_made: Callable[[], int]
    read: Callable[[], Json]
    if contender.startswith("ours"):
        sm, session = open_ours(job)
        exp = sm.Experiment.get(experiment_id, session=session)
        counter = AttemptCounter()
        if contender == "ours-stream" and not hasattr(exp, "iter_metrics"):
            emit({"event": "ready"})
            emit({"event": "result", "available": False})
            return

        def read() -> Json:
            if contender == "ours-stream":
                count = step_sum = 0
                value_sum = 0.0
                for page in exp.iter_metrics(METRIC, metadata=TRAIN):
                    count += len(page)
                    value_sum += math.fsum(page.values)
                    step_sum += sum(page.steps)
                return summed(count, step_sum, value_sum)
            limit = job["expected_rows"] if contender == "ours-limit" else None
            rows = exp.metrics(METRIC, metadata=TRAIN, limit=limit)
            values, steps = rows.values, rows.steps
            return summed(len(rows), sum(steps), math.fsum(values))

        def requests_made() -> int:
            return counter.count
    elif contender == "peer":
        client, calls = open_peer(job)
        page_size = job["peer_page_size"]

        def read() -> Json:
            rows: list[Any] = []
            from_step = 0
            while True:
                page = client.list_metrics(
                    experiment_id,
                    metric_name=METRIC,
                    metadata_key="split",
                    metadata_value=SPLIT,
                    from_step=from_step,
                    limit=page_size,
                ).rows
                rows.extend(page)
                if len(page) < page_size:
                    break
                from_step = int(page[-1].step) + 1
            values = [row.metric_value for row in rows]
            steps = [int(row.step) for row in rows]
            return summed(len(rows), sum(steps), math.fsum(values))

        def requests_made() -> int:
            return calls[0]
    else:
        raw = Raw(job["url"], job["api_key"])

        def read() -> Json:
            values, steps = raw.read_columns(experiment_id, job["expected_rows"])
            return summed(len(values), sum(steps), math.fsum(values))

        def requests_made() -> int:
            return raw.requests

    ready_then_wait()
    with meter.timed():
        got = read()
    emit(meter.result(available=True, requests=requests_made(), **got))


def worker_ingest(job: Json) -> None:
    contender, count = job["contender"], job["events"]
    slice_requests = job["slice_requests"]  # 0: no slices
    meter = Meter(job["server_pid"])
    slug = f"scale-ingest-{contender}-{uuid.uuid4().hex[:12]}"
    run: Callable[[list[Json]], None]
    requests_made: Callable[[], int]

    def at_chunk(number: int) -> None:
        if slice_requests and number % slice_requests == 0:
            meter.mark()

    if contender == "ours":
        sm, session = open_ours(job)
        exp = sm.Experiment.create(slug, session=session)
        experiment_id = exp.id
        counter = AttemptCounter(on_ingest=at_chunk)

        def run(events: list[Json]) -> None:
            outcome = exp.ingest(events, sync=True)
            if outcome.count != len(events):
                raise SystemExit(f"ours: ingest() reported {outcome}")

        def requests_made() -> int:
            return counter.count
    elif contender == "peer":
        client, calls = open_peer(job)
        experiment_id = client.create_experiment(slug).experiment.id

        def run(events: list[Json]) -> None:
            for number, start in enumerate(range(0, len(events), CHUNK), 1):
                client.ingest_metrics(experiment_id, events[start : start + CHUNK], sync=True)
                at_chunk(number)

        def requests_made() -> int:
            return calls[0]
    else:
        raw = Raw(job["url"], job["api_key"])
        experiment_id = raw.create_experiment(slug)

        def run(events: list[Json]) -> None:
            raw.ingest(experiment_id, raw.mint_token(experiment_id), events, after_chunk=at_chunk)

        def requests_made() -> int:
            return raw.requests

    start_requests = requests_made()
    events = series_events(slug, count)
    gc.collect()
    rss_input = status_mb("VmRSS")
    peak_reset = reset_peak_rss()
    ready_then_wait()
    with meter.timed():
        run(events)
    emit(
        meter.result(
            experiment_id=experiment_id,
            requests=requests_made() - start_requests,
            rss_input_mb=rss_input,
            peak_reset=peak_reset,
            slices=meter.slices() if slice_requests else [],
        )
    )


def worker_page_cost(job: Json) -> None:
    """``limit=1000`` reads at the first and the last page, by ours and the floor."""
    experiment_id, rows, repeat = job["experiment_id"], job["expected_rows"], job["repeat"]
    sm, session = open_ours(job)
    exp = sm.Experiment.get(experiment_id, session=session)
    raw = Raw(job["url"], job["api_key"])
    positions = {"first": 0, "last": rows - PAGE}
    readers: dict[str, Callable[[int], list[int]]] = {
        "floor": lambda s: [int(row["step"]) for row in raw.page(experiment_id, s)],
        "ours": lambda s: exp.metrics(METRIC, metadata=TRAIN, from_step=s, limit=PAGE).steps,
    }
    combos = [(who, where) for who in readers for where in positions]
    walls: dict[str, list[float]] = {f"{w}/{p}": [] for w, p in combos}
    server: dict[str, float] = dict.fromkeys(walls, 0.0)
    ready_then_wait()
    for round_no in range(repeat + 1):  # round 0 warms up
        shift = round_no % len(combos)
        for who, where in combos[shift:] + combos[:shift]:
            server0 = process_cpu(job["server_pid"])
            start = time.perf_counter()
            steps = readers[who](positions[where])
            elapsed = time.perf_counter() - start
            spent = process_cpu(job["server_pid"]) - server0
            if len(steps) != PAGE or steps[0] != positions[where]:
                raise SystemExit(f"{who} read {len(steps)} rows from {steps[:1]} at {where}")
            if round_no:
                walls[f"{who}/{where}"].append(elapsed)
                server[f"{who}/{where}"] += spent
    emit(
        {
            "event": "result",
            "median": {k: statistics.median(v) for k, v in walls.items()},
            "server_cpu_per_read": {k: v / repeat for k, v in server.items()},
        }
    )


def run_worker_process(kind: str, job: Json) -> None:
    {"read": worker_read, "ingest": worker_ingest, "page-cost": worker_page_cost}[kind](job)


# -- processes driven by the parent -----------------------------------------------------------------


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message} ...", file=sys.stderr, flush=True)


def read_line(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or ``""`` after ``timeout`` seconds or at EOF."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server code base: the current tree, or a git ref's worktree."""

    label: str
    command: tuple[str, ...]
    env: dict[str, str]
    cwd: Path | None = None
    baseline: bool = False


SERVER_URL = re.compile(r"(http://127\.0\.0\.1:\d+)")


class Server:
    """A server process on 127.0.0.1 with its own database file, stopped on exit."""

    def __init__(self, spec: ServerSpec, db: Path) -> None:
        self.db = db
        self.log = db.with_suffix(".log")
        command = [*spec.command, "--host", "127.0.0.1", "--port", "0", "--db", str(db)]
        command += ["--api-key", API_KEY]
        with self.log.open("w") as stderr:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=spec.env,
                cwd=spec.cwd,
            )
        assert self.process.stdout is not None
        found = SERVER_URL.search(read_line(self.process.stdout, 60.0))
        if found is None:
            self.stop()
            raise SystemExit(f"the server did not start: {self.log.read_text().strip()}")
        self.url = found.group(1)
        self.pid = self.process.pid

    def cpu(self) -> float:
        return process_cpu(self.pid)

    def stop(self) -> None:
        """SIGTERM (the server closes its store cleanly), then wait; kill if it hangs."""
        stop_process(self.process, grace=120)

    def remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Worker:
    """A worker process (this file, ``--worker KIND``); its JSON lines read by a thread."""

    def __init__(self, python: Path, kind: str, job: Json) -> None:
        self.label = f"{kind} {job.get('contender', '')}".strip()
        command = [str(python), str(Path(__file__).resolve()), "--worker", kind]
        command += ["--job", json.dumps(job)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env()
        )
        self._lines: queue.Queue[Json | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                sys.stderr.write(f"[{self.label}] {line}")
        self._lines.put(None)

    def expect(self, event: str, timeout: float = WORKER_TIMEOUT) -> Json:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise SystemExit(
                    f"the {self.label} worker sent no {event!r} in {timeout:g} s"
                ) from None
            if message is None:
                code = self.process.wait()
                raise SystemExit(f"the {self.label} worker failed (exit {code}); see above")
            if message.get("event") == event:
                return message

    def go(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it may have answered already
            self.process.stdin.write("go\n")
            self.process.stdin.flush()

    def result(self) -> Json:
        message = self.expect("result")
        if self.process.wait(timeout=120) != 0:
            raise SystemExit(f"the {self.label} worker failed; see above")
        return message

    def kill(self) -> None:
        kill_process(self.process)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_worker(python: Path, kind: str, job: Json) -> Json:
    with Worker(python, kind, job) as worker:
        worker.expect("ready", 300)
        worker.go()
        return worker.result()


# -- report helpers --------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], first_width: int = 0) -> None:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    widths[0] = max(widths[0], first_width)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("-" * len(line(headers)))
    for row in rows:
        print(line(row))


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def median_of(runs: list[Json], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def machine_lines() -> list[str]:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GB"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        f"machine: {cpus} cores ({usable} usable), {model}, {memory} RAM, load average {load}",
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.platform()}",
    ]


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "?"


# -- the benchmark --------------------------------------------------------------------------------


@dataclass
class Dataset:
    experiment_id: str
    rows: int
    checksum: Checksum


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    peer_python: Path | None
    current: ServerSpec
    problems: list[str] = field(default_factory=list)

    def python(self, contender: str) -> Path:
        if contender == "peer":
            assert self.peer_python is not None
            return self.peer_python
        return Path(sys.executable)

    def job(self, server: Server, **extra: Any) -> Json:
        return {
            "url": server.url,
            "api_key": API_KEY,
            "server_pid": server.pid,
            "peer_page_size": self.args.peer_page_size,
            **extra,
        }

    def fail_if_problems(self) -> None:
        if self.problems:
            raise SystemExit("benchmark sanity checks failed: " + "; ".join(self.problems))

    # -- set-up ------------------------------------------------------------------------------

    def load(self, raw: Raw, label: str, events: list[Json]) -> str:
        progress(f"set-up: ingesting {len(events):,} events ({label}) with the floor")
        experiment_id = raw.create_experiment(f"scale-{label}-{uuid.uuid4().hex[:8]}")
        raw.ingest(experiment_id, raw.mint_token(experiment_id), events)
        return experiment_id

    # -- phases 1 and 2: reads ---------------------------------------------------------------

    def read_contenders(self, include_ours_variants: bool) -> list[str]:
        names = ["ours-default"]
        if include_ours_variants:
            names += ["ours-limit", "ours-stream"]
        if self.peer_python is not None:
            names.append("peer")
        return [*names, "floor"]

    def measure_reads(
        self, server: Server, dataset: Dataset, contenders: list[str], label: str
    ) -> dict[str, list[Json]]:
        job = self.job(server, experiment_id=dataset.experiment_id, expected_rows=dataset.rows)
        progress(f"{label}: warm-up read (floor, untimed)")
        run_worker(Path(sys.executable), "read", {**job, "contender": "floor"})
        runs: dict[str, list[Json]] = {c: [] for c in contenders}
        unavailable: set[str] = set()
        for round_no in range(self.args.repeat):
            shift = round_no % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                if contender in unavailable:
                    continue
                progress(f"{label}: round {round_no + 1}/{self.args.repeat}, {contender}")
                got = run_worker(self.python(contender), "read", {**job, "contender": contender})
                if not got["available"]:
                    unavailable.add(contender)
                    continue
                problem = dataset.checksum.problem(f"{label}: {contender}", got)
                if problem:
                    self.problems.append(problem)
                runs[contender].append(got)
        self.fail_if_problems()
        return runs

    def print_reads(self, title: str, runs: dict[str, list[Json]]) -> dict[str, Json]:
        medians: dict[str, Json] = {}
        for contender, done in runs.items():
            if done:
                medians[contender] = {
                    k: median_of(done, k)
                    for k in ("wall", "cpu", "peak_mb", "rss_before_mb", "requests", "server_cpu")
                }
        peer, floor = medians.get("peer"), medians.get("floor")
        rows = []
        for contender, done in runs.items():
            label = self.read_label(contender)
            m = medians.get(contender)
            if m is None:
                rows.append([label, "not available", *[""] * 8])
                continue
            rows.append(
                [
                    label,
                    f"{m['wall']:.3f}",
                    ratio(m["wall"], peer["wall"] if peer else None),
                    ratio(m["wall"], floor["wall"] if floor else None),
                    f"{m['cpu']:.3f}",
                    f"{m['peak_mb']:.0f}",
                    f"{m['peak_mb'] - m['rss_before_mb']:+.0f}",
                    f"{m['requests']:.0f}",
                    f"{m['server_cpu']:.2f}",
                    str(len(done)),
                ]
            )
        print(f"\n{title}\n")
        headers = ["contender", "wall s", "/peer", "/floor", "cpu s", "peak MB", "+MB"]
        table([*headers, "requests", "server cpu s", "runs"], rows, 26)
        return medians

    def read_label(self, contender: str) -> str:
        return {
            "ours-default": "ours metrics()",
            "ours-limit": "ours metrics(limit=N)",
            "ours-stream": "ours iter_metrics()",
            "peer": f"peer (pages of {self.args.peer_page_size:,})",
            "floor": f"floor (pages of {MAX_LIMIT:,})",
        }[contender]

    # -- phase 5: first vs last page ------------------------------------------------------------

    def page_cost(self, server: Server, dataset: Dataset) -> None:
        progress(f"phase 5: first vs last page of {dataset.rows:,} rows")
        job = self.job(
            server,
            experiment_id=dataset.experiment_id,
            expected_rows=dataset.rows,
            repeat=self.args.page_repeat,
        )
        started = time.monotonic()
        got = run_worker(Path(sys.executable), "page-cost", job)
        print(
            f"\n5. First vs last page of {dataset.rows:,} rows: limit={PAGE:,} at from_step=0 "
            f"and at from_step={dataset.rows - PAGE:,} (median of {self.args.page_repeat}, "
            "interleaved)\n"
        )
        rows = []
        for who in ("ours", "floor"):
            first, last = got["median"][f"{who}/first"], got["median"][f"{who}/last"]
            s_first = got["server_cpu_per_read"][f"{who}/first"]
            s_last = got["server_cpu_per_read"][f"{who}/last"]
            rows.append(
                [
                    who,
                    f"{first * 1e3:.1f}",
                    f"{last * 1e3:.1f}",
                    ratio(last, first),
                    f"{s_first * 1e3:.1f}",
                    f"{s_last * 1e3:.1f}",
                    f"{verdict(last <= 1.2 * first)} (<=1.2x)",
                ]
            )
        headers = ["reader", "first ms", "last ms", "last/first", "srv cpu first ms"]
        table([*headers, "srv cpu last ms", "target"], rows, 8)
        print(f"   [{time.monotonic() - started:.0f} s]")

    # -- phase 3: ingest ----------------------------------------------------------------------

    def ingest_contenders(self) -> list[str]:
        return ["ours", *(["peer"] if self.peer_python is not None else []), "floor"]

    def ingest_once(self, spec: ServerSpec, contender: str, count: int) -> Json:
        db = self.tmp / f"ingest-{uuid.uuid4().hex[:8]}.sqlite"
        progress(f"phase 3 [{spec.label}]: {contender} ingests {count:,} events")
        with Server(spec, db) as server:
            before = disk_bytes(db)
            slice_requests = max(1, count // SLICES // CHUNK)
            job = self.job(server, contender=contender, events=count, slice_requests=slice_requests)
            got = run_worker(self.python(contender), "ingest", job)
            got["live_bytes"] = disk_bytes(db) - before
            stored = Raw(server.url).stored(got["experiment_id"])
            if stored != count:
                self.problems.append(f"{spec.label}: {contender} stored {stored:,} of {count:,}")
            server.stop()
            got["closed_bytes"] = disk_bytes(db) - before
            server.remove_files()
        self.fail_if_problems()
        return got

    def print_ingest(self, count: int, results: dict[tuple[str, str], Json]) -> None:
        print(
            f"\n3. Ingest {count:,} events into a fresh experiment (fresh server and database "
            "each; sync=true)\n"
        )
        rows = []
        for (server_label, contender), r in results.items():
            rows.append(
                [
                    f"{contender} @ {server_label}",
                    f"{r['wall']:.2f}",
                    f"{count / r['wall']:,.0f}",
                    f"{r['server_cpu']:.2f}",
                    f"{r['server_cpu'] / count * 1e5:.2f}",
                    f"{r['live_bytes'] / count:.0f}",
                    f"{r['closed_bytes'] / count:.0f}",
                    f"{r['cpu']:.2f}",
                    f"{r['rss_input_mb']:.0f}",
                    f"{r['peak_mb'] - r['rss_input_mb']:+.0f}" + ("" if r["peak_reset"] else "*"),
                    f"{r['requests']:,}",
                ]
            )
        headers = ["contender @ server", "wall s", "events/s", "srv cpu s", "srv s/100k"]
        headers += ["B/ev live", "B/ev closed", "cpu s", "RSS input MB", "peak +MB", "requests"]
        table(headers, rows, 26)
        if any(not r["peak_reset"] for r in results.values()):
            print("* the peak could not be reset: it is the process's peak since it started")

    def print_slices(self, count: int, results: dict[tuple[str, str], Json]) -> None:
        share = count // SLICES
        print(
            f"\n3b. Server CPU per {share:,} events over the {count:,}-event ingest "
            f"(flat target: last tenth <= 1.2x the first)\n"
        )
        rows = []
        for (server_label, contender), r in results.items():
            slices = r["slices"]
            if len(slices) < SLICES:
                rows.append([f"{contender} @ {server_label}", "-", "-", "-", "-", "-"])
                continue
            first, last = slices[0], slices[SLICES - 1]
            rows.append(
                [
                    f"{contender} @ {server_label}",
                    f"{first:.2f}",
                    f"{last:.2f}",
                    ratio(last, first),
                    verdict(last <= 1.2 * first),
                    " ".join(f"{s:.2f}" for s in slices[:SLICES]),
                ]
            )
        table(
            ["contender @ server", "first s", "last s", "last/first", "target", "every tenth, s"],
            rows,
            26,
        )

    # -- phase 4: concurrent ingest ----------------------------------------------------------

    def concurrent(self, spec: ServerSpec, clients: int) -> Json:
        count = self.args.concurrent_events
        db = self.tmp / f"concurrent-{uuid.uuid4().hex[:8]}.sqlite"
        progress(f"phase 4 [{spec.label}]: {clients} x ours ingesting {count:,} events")
        with Server(spec, db) as server:
            job = self.job(server, contender="ours", events=count, slice_requests=0)
            workers = [Worker(Path(sys.executable), "ingest", job) for _ in range(clients)]
            try:
                for worker in workers:
                    worker.expect("ready", 300)
                server0 = server.cpu()
                for worker in workers:
                    worker.go()
                results = [worker.result() for worker in workers]
                server_cpu = server.cpu() - server0
            finally:
                for worker in workers:
                    worker.kill()
            raw = Raw(server.url)
            for r in results:
                stored = raw.stored(r["experiment_id"])
                if stored != count:
                    self.problems.append(f"{spec.label}: concurrent client stored {stored:,}")
            server.stop()
            server.remove_files()
        self.fail_if_problems()
        span = max(r["end_mono"] for r in results) - min(r["start_mono"] for r in results)
        return {
            "clients": clients,
            "events": clients * count,
            "span": span,
            "rate": clients * count / span,
            "server_cpu": server_cpu,
            "slowest": max(r["wall"] for r in results),
            "peak_mb": max(r["peak_mb"] for r in results),
        }

    def print_concurrent(self, results: dict[str, tuple[Json, Json]]) -> None:
        print(
            f"\n4. Concurrent ingest with ours: {self.args.concurrent_clients} processes, each "
            f"its own experiment, {self.args.concurrent_events:,} events each, vs one alone "
            "(fresh server each)\n"
        )
        rounds = self.args.concurrent_repeat
        if rounds > 1:
            print(
                f"   medians of {rounds} rounds; each round runs alone then together, so the "
                "ratio is taken per round (the machine's speed drifts) and its median judged\n"
            )
        rows = []
        for server_label, (alone, together) in results.items():
            middle = statistics.median(together["ratios"])
            for name, r in (("alone", alone), ("together", together)):
                rows.append(
                    [
                        f"{name} @ {server_label}",
                        str(r["clients"]),
                        f"{r['events']:,}",
                        f"{r['span']:.2f}",
                        f"{r['rate']:,.0f}",
                        f"{r['server_cpu']:.2f}",
                        f"{r['peak_mb']:.0f}",
                        f"{middle:.2f}x" if name == "together" else "",
                        f"{verdict(middle >= 1.5)} (>=1.5x)" if name == "together" else "",
                        " ".join(f"{x:.2f}" for x in together["ratios"])
                        if name == "together"
                        else "",
                    ]
                )
        headers = ["run @ server", "clients", "events", "wall s", "events/s", "srv cpu s"]
        table([*headers, "max peak MB", "vs alone", "target", "per round"], rows, 31)


def phase_reads(bench: Bench, sizes: list[int]) -> None:
    args = bench.args
    db = bench.tmp / "reads.sqlite"
    with Server(bench.current, db) as server:
        started = time.monotonic()
        raw = Raw(server.url)
        datasets = {
            n: Dataset(
                bench.load(raw, f"read-{n}", series_events(f"read-{n}", n)), n, Checksum.expected(n)
            )
            for n in sizes
        }
        multi_steps = args.multi_steps
        multi = Dataset(
            bench.load(raw, "multi", multi_series_events("multi", multi_steps)),
            multi_steps,
            Checksum.expected(multi_steps),
        )
        if raw.stored(multi.experiment_id) != multi_steps * len(MULTI_SPLITS):
            raise SystemExit("set-up: the multi-series experiment is incomplete")
        print(
            f"\nread data sets on one server, database {db.name}: "
            + ", ".join(f"{n:,} rows" for n in sizes)
            + f", multi-series {multi_steps * len(MULTI_METRICS) * len(MULTI_SPLITS):,} rows"
            + f" (set up with the floor in {time.monotonic() - started:.0f} s)"
        )

        all_medians: dict[int, dict[str, Json]] = {}
        for n in sizes:
            started = time.monotonic()
            runs = bench.measure_reads(
                server, datasets[n], bench.read_contenders(True), f"phase 1, {n:,}"
            )
            all_medians[n] = bench.print_reads(
                f"1. Read {n:,} rows of loss{{split=train}} (medians of {args.repeat} fresh "
                f"processes each; +MB: peak minus the RSS before the read) "
                f"[{time.monotonic() - started:.0f} s]",
                runs,
            )
        print_read_targets(all_medians, sizes)

        total = multi_steps * len(MULTI_METRICS) * len(MULTI_SPLITS)
        started = time.monotonic()
        runs = bench.measure_reads(server, multi, bench.read_contenders(False), "phase 2")
        medians = bench.print_reads(
            f"2. Multi-series: {multi_steps:,} rows of loss{{split=train}} among {total:,} "
            f"({len(MULTI_METRICS)} metrics x {len(MULTI_SPLITS)} splits; medians of {args.repeat})",
            runs,
        )
        if "peer" in medians:
            ours, peer = medians["ours-default"]["wall"], medians["peer"]["wall"]
            print(f"   ours / peer wall: {ratio(ours, peer)}")
        print(f"   [{time.monotonic() - started:.0f} s]")

        bench.page_cost(server, datasets[max(sizes)])
    server.remove_files()


def print_read_targets(medians: dict[int, dict[str, Json]], sizes: list[int]) -> None:
    print("\n1. Read targets")
    largest = max(sizes)
    lines: list[tuple[str, str]] = []
    for n in sizes:
        m = medians[n]
        ours, limited = m.get("ours-default"), m.get("ours-limit")
        if ours and limited:
            ok = ours["wall"] <= 1.1 * limited["wall"]
            lines.append(
                (
                    f"{n:,}: ours no-limit <= 1.1x limit=N wall",
                    f"{verdict(ok)} {ratio(ours['wall'], limited['wall'])}",
                )
            )
        peer = m.get("peer")
        if ours and peer:
            ok = ours["wall"] <= 0.6 * peer["wall"]
            lines.append(
                (
                    f"{n:,}: ours wall <= 0.6x peer",
                    f"{verdict(ok)} {ratio(ours['wall'], peer['wall'])}",
                )
            )
            stream = m.get("ours-stream")
            if stream:
                lines.append(
                    (
                        f"{n:,}: ours iter_metrics() wall vs peer",
                        ratio(stream["wall"], peer["wall"]),
                    )
                )
    m = medians[largest]
    ours, peer, stream = m.get("ours-default"), m.get("peer"), m.get("ours-stream")
    if ours and peer:
        ok = ours["peak_mb"] <= 0.3 * peer["peak_mb"]
        lines.append(
            (
                f"{largest:,}: ours peak RSS <= 0.3x peer",
                f"{verdict(ok)} {ratio(ours['peak_mb'], peer['peak_mb'])}",
            )
        )
    if stream:
        ok = stream["peak_mb"] <= 300
        lines.append(
            (
                f"{largest:,}: iter_metrics() peak RSS <= 300 MB",
                f"{verdict(ok)} {stream['peak_mb']:.0f} MB",
            )
        )
    else:
        lines.append((f"{largest:,}: iter_metrics() peak RSS <= 300 MB", "not available"))
    if stream and peer:
        lines.append(
            (
                f"{largest:,}: iter_metrics() peak RSS vs peer",
                ratio(stream["peak_mb"], peer["peak_mb"]),
            )
        )
    width = max(len(label) for label, _ in lines)
    for label, shown in lines:
        print(f"   {label:<{width}}  {shown}")


def phase_ingest(bench: Bench, specs: list[ServerSpec], sizes: list[int]) -> None:
    for n in sizes:
        started = time.monotonic()
        results: dict[tuple[str, str], Json] = {}
        for spec in specs:
            for contender in bench.ingest_contenders():
                results[spec.label, contender] = bench.ingest_once(spec, contender, n)
        bench.print_ingest(n, results)
        print(f"   [{time.monotonic() - started:.0f} s]")
        if n == max(sizes):
            bench.print_slices(n, results)
            targets(bench, n, results, specs)


def targets(
    bench: Bench, n: int, results: dict[tuple[str, str], Json], specs: list[ServerSpec]
) -> None:
    lines: list[tuple[str, str]] = []
    current = bench.current.label
    ours = results.get((current, "ours"))
    if ours:
        grown = ours["peak_mb"] - ours["rss_input_mb"]
        lines.append(
            (
                f"{n:,}: ours ingest peak <= +50 MB over the input",
                f"{verdict(grown <= 50)} {grown:+.0f} MB",
            )
        )
    for spec in specs[1:]:
        for contender in bench.ingest_contenders():
            mine, base = results.get((current, contender)), results.get((spec.label, contender))
            if mine and base:
                ok = base["wall"] >= 2.5 * mine["wall"]
                lines.append(
                    (
                        f"{n:,}: {contender}, events/s {current} >= 2.5x {spec.label}",
                        f"{verdict(ok)} {ratio(base['wall'], mine['wall'])}",
                    )
                )
    if lines:
        print("\n3. Ingest targets")
        width = max(len(label) for label, _ in lines)
        for label, shown in lines:
            print(f"   {label:<{width}}  {shown}")


def _median_run(runs: list[Json]) -> Json:
    """One run's figures from several: the median of each, the counts as they are."""
    merged = dict(runs[0])
    for key in ("span", "rate", "server_cpu", "slowest", "peak_mb"):
        merged[key] = statistics.median(r[key] for r in runs)
    return merged


def phase_concurrent(bench: Bench, specs: list[ServerSpec]) -> None:
    started = time.monotonic()
    runs: dict[str, tuple[list[Json], list[Json]]] = {spec.label: ([], []) for spec in specs}
    for _ in range(bench.args.concurrent_repeat):
        for spec in specs:
            alone, together = runs[spec.label]
            alone.append(bench.concurrent(spec, 1))
            together.append(bench.concurrent(spec, bench.args.concurrent_clients))
    results: dict[str, tuple[Json, Json]] = {}
    for label, (alone_runs, together_runs) in runs.items():
        together = _median_run(together_runs)
        together["ratios"] = [
            t["rate"] / a["rate"] for a, t in zip(alone_runs, together_runs, strict=True)
        ]
        results[label] = (_median_run(alone_runs), together)
    bench.print_concurrent(results)
    print(f"   [{time.monotonic() - started:.0f} s]")
    if len(specs) > 1:
        current = results[specs[0].label][1]["rate"]
        for spec in (s for s in specs if s.baseline):
            base = results[spec.label][1]["rate"]
            ok = current >= 2.5 * base
            print(
                f"   together, events/s {specs[0].label} vs {spec.label}: "
                f"{verdict(ok)} {ratio(current, base)} (>=2.5x)"
            )


def baseline_spec(ref: str, tmp: Path) -> tuple[ServerSpec, Path]:
    """A worktree of ``ref`` served from this venv, its code first on ``PYTHONPATH``."""
    worktree = tmp / f"baseline-{re.sub(r'[^A-Za-z0-9_.-]', '_', ref)}"
    done = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), ref],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"git worktree add {ref} failed: {done.stderr.strip()}")
    env = {**child_env(), "PYTHONPATH": str(worktree)}
    probe = subprocess.run(
        [sys.executable, "-c", "import syvain_metrics.server as s; print(s.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=worktree,
    )
    where = Path(probe.stdout.strip() or "?").resolve()
    if probe.returncode != 0 or worktree.resolve() not in where.parents:
        raise SystemExit(
            f"the baseline server imports from {where}, not {worktree}: {probe.stderr}"
        )
    short = git("rev-parse", "--short", ref)
    spec = ServerSpec(
        f"base {short}", (sys.executable, "-m", "syvain_metrics.server"), env, worktree, True
    )
    return spec, worktree


def remove_worktree(worktree: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
        capture_output=True,
        check=False,
    )


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or any(n < SLICES * CHUNK or n % (SLICES * CHUNK) for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be multiples of {SLICES * CHUNK:,}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, help="rows / events (100000,1000000)")
    parser.add_argument(
        "--quick", action="store_true", help="20k / 100k sizes, smaller phases 2 and 4"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of reads (default 3)")
    parser.add_argument(
        "--page-repeat", type=int, default=15, help="phase 5 reads per position (15)"
    )
    parser.add_argument("--multi-steps", type=int, help="phase 2 steps per series (10,000)")
    parser.add_argument("--concurrent-clients", type=int, default=4, help="phase 4 processes (4)")
    parser.add_argument("--concurrent-events", type=int, help="phase 4 events each (250,000)")
    parser.add_argument(
        "--server-processes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[2, 4],
        help="phase 4 also on serve --processes N, for each N listed (default 2,4; 1: not)",
    )
    parser.add_argument(
        "--concurrent-repeat", type=int, default=3, help="phase 4 rounds (default 3)"
    )
    parser.add_argument(
        "--peer-page-size", type=int, default=MAX_LIMIT, help="the peer's limit= per page (100,000)"
    )
    parser.add_argument("--baseline-ref", help="also run phases 3 and 4 on this git ref's server")
    parser.add_argument("--skip-peer", action="store_true", help="no published client")
    parser.add_argument("--skip-reads", action="store_true", help="only phases 3, 4 (and 6)")
    parser.add_argument("--skip-ingest", action="store_true", help="only phases 1, 2 and 5")
    parser.add_argument(
        "--published-python",
        type=Path,
        help="an interpreter that has the published client (default: create/reuse --venv)",
    )
    parser.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help="the published client's venv"
    )
    parser.add_argument(
        "--db-dir", type=Path, help="where the database files go (default: a temp dir)"
    )
    parser.add_argument("--worker", choices=["read", "ingest", "page-cost"], help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker_process(args.worker, json.loads(args.job))
        return
    if args.sizes is None:
        args.sizes = [20_000, 100_000] if args.quick else [100_000, 1_000_000]
    if args.multi_steps is None:
        args.multi_steps = 2_000 if args.quick else 10_000
    if args.concurrent_events is None:
        args.concurrent_events = 25_000 if args.quick else 250_000
    counts = (args.repeat, args.page_repeat, args.multi_steps, args.concurrent_clients)
    if min(*counts, args.concurrent_repeat, *args.server_processes) < 1:
        parser.error("counts must be at least 1")
    if args.concurrent_events < 1 or not 1 <= args.peer_page_size <= MAX_LIMIT:
        parser.error("--concurrent-events >= 1; --peer-page-size 1..100000")
    if sys.platform != "linux":
        parser.error("this benchmark reads /proc: Linux only")

    began = time.monotonic()
    peer_python: Path | None = None
    if not args.skip_peer:
        peer_python = args.published_python or ensure_peer_env(
            args.venv, PEER_PACKAGE, PEER_VERSION
        )
    import syvain_metrics as sm

    for line in machine_lines():
        print(line)
    dirty = git("status", "--porcelain", "--", "syvain_metrics")
    changed = len(dirty.splitlines()) if dirty and dirty != "?" else 0
    print(
        f"syvain-metrics {sm.__version__} at {git('rev-parse', '--short', 'HEAD')}"
        f" ({changed} uncommitted file(s) under syvain_metrics/); peer "
        + (f"{PEER_PACKAGE} {PEER_VERSION} ({peer_python})" if peer_python else "skipped")
    )
    print(
        f"sizes {', '.join(f'{n:,}' for n in args.sizes)}; reads: medians of {args.repeat}; "
        f"peer pages of {args.peer_page_size:,}"
    )

    current = ServerSpec(
        "current", (sys.executable, "-m", "syvain_metrics.cli", "serve"), child_env()
    )
    if args.db_dir:
        args.db_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale-bench-", dir=args.db_dir) as tmp_name:
        tmp = Path(tmp_name)
        bench = Bench(args, tmp, peer_python, current)
        specs = [current]
        worktree: Path | None = None
        try:
            if args.baseline_ref and not args.skip_ingest:
                spec, worktree = baseline_spec(args.baseline_ref, tmp)
                specs.append(spec)
                print(f"baseline server: {args.baseline_ref} in {worktree}")
            sys.stdout.flush()
            if not args.skip_reads:
                phase_reads(bench, args.sizes)
            if not args.skip_ingest:
                phase_ingest(bench, specs, args.sizes)
                several = [
                    ServerSpec(
                        f"current, {n} processes",
                        (*current.command, "--processes", str(n)),
                        current.env,
                    )
                    for n in args.server_processes
                    if n > 1
                ]
                specs = [specs[0], *several, *specs[1:]]
                phase_concurrent(bench, specs)
        finally:
            if worktree is not None:
                remove_worktree(worktree)
    print(f"\ntotal time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
