"""Client-side overhead: syvain-metrics vs the published client vs a raw ``json`` floor.

Measures, in one run on this machine, what the *client* costs with the HTTP transport
stubbed out (no sockets are opened at all):

(a) ingest: validating and serializing 100,000 metrics for ingest;
(b) read:   turning one 100,000-row metrics response body (bytes) into validated results
            and reading every row's ``value`` and ``step`` through the public API.

Three contenders, fed the same data (and, for (b), the very same response bytes):

* floor: ``json.dumps({"data": chunk})`` per 1,000-metric chunk; ``json.loads(body)``
  then ``row["metric_value"]`` / ``row["step"]`` for every row;
* published: ``syvain-metrics-api-client==0.0.71``, with its ``request=`` transport
  replaced by a fake that ``json.dumps`` the ``json=`` payload and answers canned bytes
  (``ingest_metrics`` 100 x 1,000, the most it accepts per call; ``list_metrics``);
* ours: ``syvain_metrics``, with a ``requests`` adapter mounted on the session that
  answers canned bytes (``exp.ingest`` of all 100,000, which chunks by 1,000 itself;
  ``exp.metrics("loss", limit=100_000)`` read row by row, and again as columns).

Each time is the best of ``--repeat`` runs after one warm-up (``time.perf_counter``,
garbage collector on as usual, ``gc.collect()`` before each run, results freed after the
clock stops). Runs are interleaved in rounds (floor, published, ours, ... in a rotating
order) so that a busy spell on a shared machine hits every contender alike. The first
ingest of an experiment mints an ingestion key; it happens once per run for each client,
in an untimed check run that also verifies that both clients sent the same metrics and
read the same values (the script stops if they did not).

The published client cannot share an environment with this SDK's dependencies, so its
half runs in a virtual environment of its own, as a subprocess of this same file
(``--worker published``) that reads one workload name per stdin line and prints one JSON
line of timings per run on stdout. By default that environment is
``benchmarks/.venv-published``, created with ``python -m venv`` and
``pip install syvain-metrics-api-client==0.0.71`` when missing and reused afterwards. Our
half and the floor run in the current interpreter, so the SDK must be importable
(``pip install -e .``).

Run (from the repository root)::

    python benchmarks/client_overhead.py                      # creates/reuses the venv
    python benchmarks/client_overhead.py --repeat 10
    python benchmarks/client_overhead.py --published-python /path/to/venv/bin/python
    python benchmarks/client_overhead.py --profile            # + cProfile of our half

Targets: (a) ours <= 0.8 x published; (b) ours <= 0.6 x published. The exit status is 0
whether a target passes or misses (this is a measurement, not a test); it is non-zero only
when the set-up or the sanity checks fail.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from peer_env import ensure_peer_env  # benchmarks/ is on sys.path when run as a script

PUBLISHED_PACKAGE = "syvain-metrics-api-client"
PUBLISHED_VERSION = "0.0.71"
DEFAULT_VENV = Path(__file__).resolve().parent / ".venv-published"

HOST = "http://127.0.0.1:9"  # never contacted: both transports are stubbed
API_KEY = "bench-key"
EXPERIMENT_ID = "exp-1"
METRIC_NAME = "loss"
CHUNK = 1_000  # the published client's per-call maximum; our SDK's request size
FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01: the ingestion key never needs renewing
BASE_TS_MS = 1_795_716_952_000

INGEST_OK = b'{"data":{"ok":true,"mode":"sync"},"error":null}'
INGESTION_KEY_BODY = json.dumps(
    {
        "data": {
            "key": {
                "id": "key-1",
                "experiment_id": EXPERIMENT_ID,
                "name": "SDK ingestion key",
                "created_at_ms": BASE_TS_MS,
                "expires_at_ms": FAR_FUTURE_MS,
                "revoked_at_ms": None,
                "last_used_at_ms": None,
            },
            "token": "ik-bench-token",
        },
        "error": None,
    },
    separators=(",", ":"),
).encode()
EXPERIMENT_WIRE: dict[str, Any] = {
    "id": EXPERIMENT_ID,
    "org_id": "org-1",
    "folder": None,
    "url": f"/dashboard/experiments/{EXPERIMENT_ID}",
    "slug": "run-1",
    "description": "",
    "metadata": {},
    "status": "running",
    "error_name": None,
    "error_detail": None,
    "created_at_ms": BASE_TS_MS,
    "updated_at_ms": BASE_TS_MS,
    "started_at_ms": BASE_TS_MS,
    "done_at_ms": None,
    "last_heartbeat_at_ms": None,
    "last_event_at_ms": None,
}

Timings = dict[str, float]


# -- the shared workload (built identically in both interpreters) ---------------------


def metric_value(i: int) -> float:
    """A loss-like curve with some wiggle: floats of varied length, all finite."""
    return 2.5 / (1.0 + 0.001 * i) + 0.01 * math.sin(i)


def make_metrics(count: int) -> list[dict[str, Any]]:
    """The metrics to ingest, as plain dicts (what a training loop would hand over)."""
    return [
        {
            "client_event_id": f"run/loss/{i}",
            "name": METRIC_NAME,
            "value": metric_value(i),
            "step": i,
            "metadata": {"split": "train"},
        }
        for i in range(count)
    ]


def make_rows(count: int) -> list[dict[str, Any]]:
    """Metric rows as the service returns them (the shape of tests/conftest.py row_wire)."""
    return [
        {
            "event_id": f"evt-{i:08d}",
            "org_id": "org-1",
            "experiment_id": EXPERIMENT_ID,
            "experiment_slug": "run-1",
            "experiment_description": None,
            "experiment_metadata_json": None,
            "metric_name": METRIC_NAME,
            "metric_value": metric_value(i),
            "step": float(i),
            "event_metadata_json": '{"split":"train"}',
            "client_timestamp_ms": BASE_TS_MS + 10 * i,
            "server_timestamp_ms": BASE_TS_MS + 10 * i + 5,
        }
        for i in range(count)
    ]


def rows_body(rows: list[dict[str, Any]]) -> bytes:
    """A metrics response body: the envelope around ``rows``, compact JSON."""
    return json.dumps({"data": {"rows": rows}, "error": None}, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def payload_digest(payload: Any) -> str:
    """A canonical digest of a decoded JSON value (to compare what each client sends)."""
    return digest(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Checksum:
    """What a read produced: row count, and exact sums of values and steps."""

    rows: int
    value_sum: float
    step_sum: float

    @classmethod
    def of(cls, values: list[float], steps: list[Any]) -> Checksum:
        return cls(len(values), math.fsum(values), math.fsum(float(s) for s in steps))


# -- timing -----------------------------------------------------------------------------


def timed(run: Callable[[], object]) -> float:
    """Wall time of one call; collected garbage first, the result freed off the clock."""
    gc.collect()
    start = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def best_of_interleaved(contenders: dict[str, Callable[[], float]], repeat: int) -> Timings:
    """One warm-up round, then ``repeat`` rounds each timing every contender once.

    Rounds interleave the contenders (in a rotating order) so that a busy spell on the
    machine hits them alike; each contender's best round is kept.
    """
    names = list(contenders)
    best = dict.fromkeys(names, math.inf)
    for round_no in range(repeat + 1):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = contenders[name]()
            if round_no > 0:  # round 0 is the warm-up
                best[name] = min(best[name], elapsed)
    return best


def chunks(items: list[dict[str, Any]], size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the floor ----------------------------------------------------------------------------


def floor_ingest(metrics: list[dict[str, Any]]) -> int:
    total = 0
    for chunk in chunks(metrics):
        total += len(json.dumps({"data": chunk}))
    return total


def floor_read(body: bytes) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(body)["data"]["rows"]
    for row in rows:
        _value, _step = row["metric_value"], row["step"]
    return rows


def floor_checksum(body: bytes) -> Checksum:
    rows = json.loads(body)["data"]["rows"]
    return Checksum.of([r["metric_value"] for r in rows], [r["step"] for r in rows])


# -- the published client (runs inside its own venv, driven over stdin/stdout) -------------

# ``json`` is a parameter name of the published transport; keep the module's functions at hand.
_dumps = json.dumps
_loads = json.loads


class _FakeResponse:
    """Just what the published client reads from a response."""

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self._body = body

    def json(self) -> Any:
        return _loads(self._body)

    @property
    def text(self) -> str:
        return self._body.decode()


class PublishedTransport:
    """The published client's ``request=``: serializes ``json=`` as a transport would."""

    def __init__(self, read_body: bytes) -> None:
        self.read_body = read_body
        self.ingest_calls = 0
        self.metrics_sent = 0
        self.keys_minted = 0
        self.first_chunk: Any = None

    def __call__(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        timeout: float,
        json: Any = None,
    ) -> _FakeResponse:
        path = urlsplit(url).path
        if method == "POST" and path.endswith("/ingest"):
            encoded = _dumps(json).encode()  # the bytes a real transport would send
            self.ingest_calls += 1
            self.metrics_sent += len(json["data"])
            if self.first_chunk is None:
                self.first_chunk = _loads(encoded)
            return _FakeResponse(INGEST_OK)
        if method == "POST" and path.endswith("/ingestion-keys"):
            _dumps(json)
            self.keys_minted += 1
            return _FakeResponse(INGESTION_KEY_BODY)
        if method == "GET" and path.endswith("/metrics"):
            return _FakeResponse(self.read_body)
        raise AssertionError(f"unexpected request {method} {url}")


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_published_worker(count: int) -> None:
    """The published half: report what was checked, then time one workload per stdin line.

    Each stdin line names a workload (``ingest``, ``read``, ``floor_ingest``,
    ``floor_read``); each answer is one JSON line ``{"name": ..., "seconds": ...}``.
    """
    from importlib.metadata import version

    from syvain_metrics_api_client import (  # type: ignore[import-not-found, unused-ignore]
        SyvainMetricsApiClient,
    )

    metrics = make_metrics(count)
    body = rows_body(make_rows(count))
    transport = PublishedTransport(body)
    client = SyvainMetricsApiClient(API_KEY, host=HOST, request=transport)

    def ingest() -> int:
        sent = 0
        for chunk in chunks(metrics):
            client.ingest_metrics(EXPERIMENT_ID, chunk, sync=True)
            sent += len(chunk)
        return sent

    def read() -> Any:
        rows = client.list_metrics(EXPERIMENT_ID, metric_name=METRIC_NAME, limit=count).rows
        for row in rows:
            _value, _step = row.metric_value, row.step
        return rows

    # Untimed checks first (this run also mints the ingestion key): what was sent and read.
    sent = ingest()
    calls, sent_seen = transport.ingest_calls, transport.metrics_sent
    rows = client.list_metrics(EXPERIMENT_ID, metric_name=METRIC_NAME, limit=count).rows
    checksum = Checksum.of([r.metric_value for r in rows], [r.step for r in rows])
    del rows
    _emit(
        {
            "package_version": version(PUBLISHED_PACKAGE),
            "pydantic_version": version("pydantic"),
            "python": sys.version.split()[0],
            "body_digest": digest(body),
            "ingest_calls": calls,
            "metrics_sent": [sent, sent_seen],
            "first_chunk_digest": payload_digest(transport.first_chunk),
            "checksum": [checksum.rows, checksum.value_sum, checksum.step_sum],
        }
    )
    workloads: dict[str, Callable[[], object]] = {
        "ingest": ingest,
        "read": read,
        "floor_ingest": lambda: floor_ingest(metrics),
        "floor_read": lambda: floor_read(body),
    }
    for line in sys.stdin:
        name = line.strip()
        _emit({"name": name, "seconds": timed(workloads[name])})
    if transport.keys_minted != 1:
        raise SystemExit(f"the published client minted {transport.keys_minted} ingestion keys")


class PublishedWorker:
    """The published-client worker process, one timed run per request."""

    def __init__(self, python: Path, count: int) -> None:
        command = [
            str(python),
            str(Path(__file__).resolve()),
            "--worker",
            "published",
            "--count",
            str(count),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.info = self._receive()

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise SystemExit(f"the published-client worker failed (exit {code}); see above")
        message: dict[str, Any] = json.loads(line)
        return message

    def time(self, name: str) -> float:
        assert self._process.stdin is not None
        self._process.stdin.write(name + "\n")
        self._process.stdin.flush()
        reply = self._receive()
        seconds: float = reply["seconds"]
        return seconds

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        code = self._process.wait()
        if code != 0:
            raise SystemExit(f"the published-client worker failed (exit {code}); see above")


# -- our SDK (runs in the current interpreter) ----------------------------------------------


def make_our_adapter(rows: list[dict[str, Any]], full_body: bytes) -> Any:
    """A ``requests`` adapter answering canned bytes (built here: the worker has no requests).

    Metric reads honour ``from_step`` and ``limit`` (rows are in step order, step == index)
    so that a paged read gets the pages a service would send; each page body is built once
    and cached by URL, and a read of everything gets ``full_body`` itself.
    """
    from requests.adapters import BaseAdapter
    from requests.models import PreparedRequest, Response
    from requests.structures import CaseInsensitiveDict

    class StubAdapter(BaseAdapter):
        def __init__(self) -> None:
            super().__init__()
            self.ingest_posts = 0
            self.keys_minted = 0
            self.reads = 0
            self.first_ingest_body: bytes | None = None
            self._pages: dict[str, bytes] = {}

        def send(
            self,
            request: PreparedRequest,
            stream: bool = False,
            timeout: Any = None,
            verify: Any = True,
            cert: Any = None,
            proxies: Any = None,
        ) -> Response:
            url = request.url or ""
            path = urlsplit(url).path
            if request.method == "POST" and path.endswith("/ingest"):
                self.ingest_posts += 1
                if self.first_ingest_body is None:
                    self.first_ingest_body = _as_bytes(request.body)
                content = INGEST_OK
            elif request.method == "POST" and path.endswith("/ingestion-keys"):
                self.keys_minted += 1
                content = INGESTION_KEY_BODY
            elif request.method == "GET" and path.endswith("/metrics"):
                self.reads += 1
                content = self._pages.get(url) or self._page(url)
            else:
                raise AssertionError(f"unexpected request {request.method} {url}")
            response = Response()
            response.status_code = 200
            response.reason = "OK"
            response._content = content
            response.headers = CaseInsensitiveDict(
                {"Content-Type": "application/json", "Content-Length": str(len(content))}
            )
            response.encoding = "utf-8"
            response.url = url
            response.request = request
            return response

        def _page(self, url: str) -> bytes:
            query = dict(parse_qsl(urlsplit(url).query))
            allowed = {"metric_name", "from_step", "sort_by", "sort_direction", "limit"}
            served = (
                set(query) <= allowed
                and query.get("metric_name") == METRIC_NAME
                and query.get("sort_by", "step") in ("step", "step,client_timestamp")
                and query.get("sort_direction", "asc") == "asc"
                and "limit" in query
            )
            if not served:
                raise AssertionError(f"the stub does not serve {url}")
            start = int(query.get("from_step", "0"))
            limit = int(query["limit"])
            if start == 0 and limit >= len(rows):
                page = full_body
            else:
                page = rows_body(rows[start : start + limit])
            self._pages[url] = page
            return page

        def close(self) -> None:
            pass

    return StubAdapter()


def _as_bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else str(body).encode()


@dataclass
class Ours:
    """Our SDK's workloads and what their untimed run sent and read."""

    workloads: dict[str, Callable[[], object]]
    checks: dict[str, Any]


def prepare_ours(metrics: list[dict[str, Any]], rows: list[dict[str, Any]], body: bytes) -> Ours:
    import syvain_metrics as sm

    count = len(metrics)
    # One response for the whole read, like the published client: the default page_size
    # (10,000) would split ``limit=100_000`` into pages; that is measured separately.
    session = sm.Session(API_KEY, host=HOST, page_size=count)
    adapter = make_our_adapter(rows, body)
    session._requestor._connect().mount("http://", adapter)
    exp = sm.Experiment(EXPERIMENT_WIRE, session=session)

    paged_session = sm.Session(API_KEY, host=HOST)  # default page_size
    paged_adapter = make_our_adapter(rows, body)
    paged_session._requestor._connect().mount("http://", paged_adapter)
    paged_exp = sm.Experiment(EXPERIMENT_WIRE, session=paged_session)

    def ingest() -> Any:
        return exp.ingest(metrics, sync=True)

    def read_rows() -> Any:
        result = exp.metrics(METRIC_NAME, limit=count)
        for m in result:
            _value, _step = m.value, m.step
        return result

    def read_columns() -> Any:
        result = exp.metrics(METRIC_NAME, limit=count)
        _values, _steps = result.values, result.steps
        return result

    def read_rows_paged() -> Any:
        result = paged_exp.metrics(METRIC_NAME, limit=count)
        for m in result:
            _value, _step = m.value, m.step
        return result

    # Untimed checks first (this run also mints the ingestion key): what was sent and read.
    outcome = exp.ingest(metrics, sync=True)
    first_body = adapter.first_ingest_body
    assert first_body is not None
    checks: dict[str, Any] = {
        "ingest_result": outcome,
        "ingest_posts": adapter.ingest_posts,
        "first_chunk_digest": payload_digest(json.loads(first_body)),
        "adapter": adapter,
    }
    result = exp.metrics(METRIC_NAME, limit=count)
    checks["reads_per_call"] = adapter.reads
    checks["checksum_rows"] = Checksum.of([m.value for m in result], [m.step for m in result])
    checks["checksum_columns"] = Checksum.of(result.values, result.steps)
    paged = paged_exp.metrics(METRIC_NAME, limit=count)
    checks["paged_reads_per_call"] = paged_adapter.reads
    checks["checksum_paged"] = Checksum.of(paged.values, paged.steps)
    workloads: dict[str, Callable[[], object]] = {
        "ingest": ingest,
        "read_rows": read_rows,
        "read_columns": read_columns,
        "read_paged": read_rows_paged,
    }
    return Ours(workloads, checks)


def profile_ours(workloads: dict[str, Callable[[], object]]) -> None:
    import cProfile
    import pstats

    for title, run in workloads.items():
        profiler = cProfile.Profile()
        profiler.enable()
        result = run()
        profiler.disable()
        del result
        print(f"\n== cProfile, ours, {title}: top functions by own time ==")
        stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
        stats.sort_stats("tottime").print_stats(15)


# -- report --------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


# (label, workload, which of our timings, target ours/published or None)
REPORT_ROWS: tuple[tuple[str, str, str, float | None], ...] = (
    ("(a) ingest: validate+serialize", "ingest", "ours_ingest", 0.8),
    ("(b) read: rows, m.value/m.step", "read", "ours_read_rows", 0.6),
    ("(b) read: columns .values/.steps", "read", "ours_read_columns", 0.6),
    ("(b) read: rows, default page_size", "read", "ours_read_paged", None),
)


def print_report(
    count: int, repeat: int, timings: Timings, info: dict[str, Any], checks: dict[str, Any]
) -> None:
    t = timings
    print(
        f"\nClient-side cost, {count:,} metrics / rows, best of {repeat} interleaved rounds "
        f"after 1 warm-up round\n(python {sys.version.split()[0]}; published client "
        f"{info['package_version']} with pydantic {info['pydantic_version']}, "
        f"python {info['python']})\n"
    )
    header = (
        f"{'workload':<36} {'floor s':>8} {'published s':>11} {'ours s':>8} "
        f"{'ours/pub':>8} {'ours/floor':>10} {'pub/floor':>9} {'target':>7}  result"
    )
    print(header)
    print("-" * len(header))
    for label, workload, ours_key, target in REPORT_ROWS:
        f, p, o = t[f"floor_{workload}"], t[f"pub_{workload}"], t[ours_key]
        verdict = "-" if target is None else ("PASS" if o <= target * p else "MISS")
        target_text = "-" if target is None else f"<={target:.1f}x"
        print(
            f"{label:<36} {f:>8.4f} {p:>11.4f} {o:>8.4f} {ratio(o, p):>8} "
            f"{ratio(o, f):>10} {ratio(p, f):>9} {target_text:>7}  {verdict}"
        )
    print(
        f"\nnotes: (a) ours: one ingest() of {count:,} = {checks['ingest_posts']} POSTs; "
        f"published: {info['ingest_calls']} ingest_metrics() calls of <= {CHUNK:,}.\n"
        f"       (b) ours: {checks['reads_per_call']} GET(s) with Session(page_size={count:,}); "
        f"the last row uses the default page_size: {checks['paged_reads_per_call']} GET(s)\n"
        "           of pages served by the stub (more bytes than the single body the "
        "others parse).\n"
        f"       floor timed in the published venv too: (a) {t['pubvenv_floor_ingest']:.4f} s, "
        f"(b) {t['pubvenv_floor_read']:.4f} s (same interpreter build as the floor column)."
    )


def verify(count: int, body: bytes, info: dict[str, Any], checks: dict[str, Any]) -> None:
    """Fail loudly if the contenders did not do the same work."""
    problems: list[str] = []
    if info["package_version"] != PUBLISHED_VERSION:
        problems.append(f"the published client is {info['package_version']}")
    if info["body_digest"] != digest(body):
        problems.append("the two interpreters built different response bodies")
    if checks["first_chunk_digest"] != info["first_chunk_digest"]:
        problems.append("the first ingest chunk differs between the clients")
    requests_needed = math.ceil(count / CHUNK)
    if info["ingest_calls"] != requests_needed or info["metrics_sent"] != [count, count]:
        problems.append(f"the published client sent {info['metrics_sent']}")
    outcome = checks["ingest_result"]
    if (outcome.count, outcome.requests, checks["ingest_posts"]) != (
        count,
        requests_needed,
        requests_needed,
    ):
        problems.append(f"our ingest did {outcome}")
    expected = floor_checksum(body)
    for name, got in (
        ("published", Checksum(*info["checksum"])),
        ("ours rows", checks["checksum_rows"]),
        ("ours columns", checks["checksum_columns"]),
        ("ours paged", checks["checksum_paged"]),
    ):
        if got != expected:
            problems.append(f"{name} read {got}, the floor read {expected}")
    if problems:
        raise SystemExit("benchmark sanity checks failed: " + "; ".join(problems))


# -- entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--count", type=int, default=100_000, help="metrics / rows")
    parser.add_argument(
        "--published-python",
        type=Path,
        help="an interpreter that has the published client (default: create/reuse --venv)",
    )
    parser.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help="where to keep the published client"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile our half afterwards")
    parser.add_argument("--worker", choices=["published"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.count < 1:
        parser.error("--repeat and --count must be at least 1")

    if args.worker == "published":
        run_published_worker(args.count)
        return

    python = args.published_python or ensure_peer_env(
        args.venv, PUBLISHED_PACKAGE, PUBLISHED_VERSION
    )
    print(f"starting the published-client worker ({python}) ...", file=sys.stderr, flush=True)
    worker = PublishedWorker(python, args.count)
    metrics = make_metrics(args.count)
    rows = make_rows(args.count)
    body = rows_body(rows)
    ours = prepare_ours(metrics, rows, body)
    verify(args.count, body, worker.info, ours.checks)

    print("timing (a) ingest ...", file=sys.stderr, flush=True)
    timings = best_of_interleaved(
        {
            "floor_ingest": lambda: timed(lambda: floor_ingest(metrics)),
            "pubvenv_floor_ingest": lambda: worker.time("floor_ingest"),
            "pub_ingest": lambda: worker.time("ingest"),
            "ours_ingest": lambda: timed(ours.workloads["ingest"]),
        },
        args.repeat,
    )
    print("timing (b) read ...", file=sys.stderr, flush=True)
    timings |= best_of_interleaved(
        {
            "floor_read": lambda: timed(lambda: floor_read(body)),
            "pubvenv_floor_read": lambda: worker.time("floor_read"),
            "pub_read": lambda: worker.time("read"),
            "ours_read_rows": lambda: timed(ours.workloads["read_rows"]),
            "ours_read_columns": lambda: timed(ours.workloads["read_columns"]),
            "ours_read_paged": lambda: timed(ours.workloads["read_paged"]),
        },
        args.repeat,
    )
    worker.close()
    if ours.checks["adapter"].keys_minted != 1:
        raise SystemExit("our SDK minted more than one ingestion key")
    print_report(args.count, args.repeat, timings, worker.info, ours.checks)
    if args.profile:
        profile_ours(
            {
                "(a) ingest": ours.workloads["ingest"],
                "(b) read, rows": ours.workloads["read_rows"],
            }
        )


if __name__ == "__main__":
    main()
