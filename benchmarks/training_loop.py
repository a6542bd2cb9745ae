"""What metric logging costs a training loop: syvain-metrics vs the published collector.

A loop of ``--steps`` steps (20,000 by default), each doing about 1 ms of CPU work (a busy
loop of pure-Python arithmetic, calibrated once on this machine and identical for every
contender) and three ``log()`` calls (``loss`` with metadata ``{"split": "train"}``, ``lr``,
``grad_norm``), runs:

* baseline: the same loop without logging (run before and after the others);
* ours: ``syvain_metrics``: ``sm.Session(api_key, host=url, spool_dir=<temp dir>)`` (without
  ``spool_dir=`` when this version's ``Session`` does not take it yet),
  ``sm.Experiment.create(slug, session=session)``, ``exp.log(name, value, step=step,
  metadata=...)`` in the loop, then ``exp.flush()`` (``exp.flush(timeout=120)`` when the
  version takes a timeout) and ``session.close()``, both timed apart from the loop;
* collector: the published ``syvain-metrics-collector==0.0.71``: ``Collector(api_key,
  host=url)``, ``collector.experiment(slug)``, ``experiment.metric(name, value, step=step,
  metadata=...)`` in the loop, then ``experiment.flush_or_raise()`` and a wait for its timer
  threads (a batch a timer thread took before the flush is still in flight after it), timed
  apart from the loop. It queues in memory (at most 100,000 items per experiment, dropping
  the oldest beyond that) and sends batches of 500 from ``threading.Timer`` threads 0.25 s
  after the first queued item; it has no ``close()``.

Reported per contender: loop wall time and the slowdown against the baseline (per step, so
runs of any length compare), the median / p99 / max of each ``log()`` call
(``time.perf_counter_ns`` around it), the median / p99 / max step time and the worst step
minus the baseline's worst step, the final flush time, and what the server stored, read back
through a fresh ``sm.Session``: lost = expected - distinct (name, step, metadata), duplicated
= rows - distinct. Every ``log()`` call sits in a ``try``/``except`` that counts the
exceptions raised into the loop.

Fault scenarios, for ours and for the collector:

* outage: the server process gets SIGTERM 2 s into the loop, stays down ``--outage-seconds``
  (30 s; connections are refused), then a new one starts on the same port, database file and
  API key; the loop (``--outage-steps``; by default sized from the baseline's step time to
  outlast the outage by 5 s, with 25% to spare) keeps running through it; then the final
  flush (120 s timeout) and the count;
* slow server: every ingest request takes 2 s (``faults.delay("ingest_metrics", seconds=2)``
  on an in-process ``LocalServer``, since the ``serve`` command has no fault switches), over
  ``--slow-steps`` steps (3,000).

Processes. Every contender, the baseline and ours included, runs its loop in a worker process
of its own (this same file, ``--worker baseline|ours|collector``) that prints one JSON line
per event on stdout (ready, loop started, loop ended, results). The servers run outside the
loop's process: for the main runs and the outage, a ``python -m syvain_metrics.cli serve
--port 0 --db <file> --api-key <key>`` process per contender and scenario (fresh database
file each); for the slow server, the ``LocalServer`` in this parent process, which otherwise
only waits. So no server thread competes for the GIL with a training loop, as it would not in
production (the service is remote), and every contender meets the same kind of server. The
client's own background threads, if it has any, do share the loop's GIL: that is part of
what logging costs. On a machine with few CPUs a server busy ingesting still takes CPU time
that the loop and the client's threads could have used (the baseline has no server to
compete with); the two baseline runs show how much the machine itself varies between runs.

Ours and the baseline run in the current interpreter, so the SDK must be importable
(``pip install -e .``). The published collector cannot share this environment, so it runs in
``benchmarks/.venv-collector``, created with ``python -m venv`` (plus a ``.gitignore`` of
``*`` inside, as ``venv`` itself writes from Python 3.13 on) and ``pip install
syvain-metrics-collector==0.0.71`` when missing, and reused afterwards; pip picks the
collector's dependencies (``syvain-metrics-api-client>=0.0.62``, ``niquests``), whose versions
are printed with the results.

Run (from the repository root)::

    python benchmarks/training_loop.py                            # about 5 minutes
    python benchmarks/training_loop.py --steps 2000 --outage-seconds 5 --outage-steps 8000 \\
        --slow-steps 300                                          # a quick check
    python benchmarks/training_loop.py --skip-faults --skip-collector
    python benchmarks/training_loop.py --collector-python /path/to/venv/bin/python

Targets (ours): slowdown <= 5%; median ``log()`` <= 5 us; no stall over 10 ms (worst step
minus the baseline's worst step); 0 exceptions raised into the loop, 0 events lost, 0
duplicated, in every scenario. The exit status is 0 whether a target passes or misses (this
is a measurement, not a test); it is non-zero only when the set-up or the sanity checks fail.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

COLLECTOR_PACKAGE = "syvain-metrics-collector"
COLLECTOR_VERSION = "0.0.71"
DEFAULT_VENV = Path(__file__).resolve().parent / ".venv-collector"

API_KEY = "ak_local_training_loop_bench"
UNUSED_HOST = "http://127.0.0.1:9"  # the baseline worker never connects
TRAIN = {"split": "train"}
LOGS_PER_STEP = 3

WORK_SECONDS = 0.001  # CPU work per step
OUTAGE_AFTER_SECONDS = 2.0  # into the loop
OUTAGE_MARGIN_SECONDS = 5.0  # the default --outage-steps outlasts the outage by this much
OUTAGE_SPEED_ALLOWANCE = 1.25  # ... even if steps run this much faster than the baseline's
SLOW_INGEST_SECONDS = 2.0
FLUSH_TIMEOUT = 120.0
STALL_NS = 10_000_000  # a step this much slower than the baseline's worst is a stall

TARGET_SLOWDOWN = 0.05
TARGET_LOG_MEDIAN_US = 5.0
TARGET_STALL_MS = 10.0

Json = dict[str, Any]


# -- the workload (the same in every worker) -------------------------------------------------


def busy_work(iterations: int, seed: int) -> float:
    """Pure-Python arithmetic standing in for a training step's compute."""
    x = 1.0 + seed % 97
    for i in range(iterations):
        x = (x * 1.000_001 + i) % 1_000.0
    return x


def calibrate(target_seconds: float = WORK_SECONDS) -> tuple[int, float]:
    """Iterations of ``busy_work`` that take ``target_seconds`` here, and the median time they
    took (rescaled over a few rounds of 100 timed calls: one probe is easily off on a busy
    machine)."""
    iterations = 10_000
    busy_work(iterations, 0)  # warm-up
    taken = target_seconds
    for _round in range(4):
        times = []
        for seed in range(100):
            start = time.perf_counter()
            busy_work(iterations, seed)
            times.append(time.perf_counter() - start)
        taken = statistics.median(times)
        if abs(taken / target_seconds - 1.0) < 0.02:
            break
        iterations = max(1, round(iterations * target_seconds / taken))
    return iterations, taken


@dataclass
class LoopStats:
    loop_s: float
    step_ns: list[int]
    log_ns: list[int]
    exceptions: int
    first_exception: str | None


LogCall = Callable[..., object]


def training_loop(
    steps: int, iterations: int, log: LogCall | None, on_start: Callable[[], None]
) -> LoopStats:
    """The loop: work, then three ``log(name, value, step=..., metadata=...)`` calls a step,
    each timed and guarded by its own ``try``/``except``."""
    clock = time.perf_counter_ns
    step_ns = [0] * steps
    log_ns: list[int] = []
    record = log_ns.append
    exceptions = 0
    first_exception: str | None = None
    on_start()
    start = time.perf_counter()
    for step in range(steps):
        began = clock()
        x = busy_work(iterations, step)
        if log is not None:
            for name, value, metadata in (
                ("loss", 2.5 / (1.0 + 0.001 * step) + 1e-6 * x, TRAIN),
                ("lr", 3e-4 * 0.5 ** (step // 5_000), None),
                ("grad_norm", 1.0 + x % 1.0, None),
            ):
                called = clock()
                try:
                    log(name, value, step=step, metadata=metadata)
                except Exception as error:
                    exceptions += 1
                    if first_exception is None:
                        first_exception = describe(error)
                record(clock() - called)
        step_ns[step] = clock() - began
    loop_s = time.perf_counter() - start
    return LoopStats(loop_s, step_ns, log_ns, exceptions, first_exception)


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:297] + "..."


def distribution(values_ns: list[int]) -> Json:
    """Median, p99 and max (nearest rank), in ns."""
    if not values_ns:
        return {"count": 0, "p50": 0, "p99": 0, "max": 0}
    ordered = sorted(values_ns)
    n = len(ordered)
    return {
        "count": n,
        "p50": ordered[(n - 1) // 2],
        "p99": ordered[min(n - 1, -(-99 * n // 100) - 1)],
        "max": ordered[-1],
    }


# -- the workers (one process each) -------------------------------------------------------------


class LogRecordCounter(logging.Handler):
    """Counts a client's warnings (and the metrics they say were dropped) instead of printing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.dropped = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.count += 1
        if self.first is None:
            self.first = message[:300]
        found = re.search(r"dropped (\d+) metrics", message)
        if found:
            self.dropped += int(found.group(1))


def count_log_records(logger_name: str) -> LogRecordCounter:
    counter = LogRecordCounter()
    logger = logging.getLogger(logger_name)
    logger.addHandler(counter)
    logger.propagate = False
    return counter


@dataclass
class Client:
    """One contender's logging client, opened in a worker."""

    log: LogCall
    experiment_id: str
    finish: Callable[[float], Json]  # flush (with a timeout) and close; returns timings
    info: Json
    warnings: LogRecordCounter


def open_session(api_key: str, host: str, spool_dir: str | None, **kwargs: Any) -> tuple[Any, bool]:
    """An ``sm.Session``, with ``spool_dir=`` when this version of the SDK takes it."""
    import syvain_metrics as sm

    session_class: Any = sm.Session  # spool_dir= is not in every version's signature
    if spool_dir is not None:
        try:
            return session_class(api_key, host=host, spool_dir=spool_dir, **kwargs), True
        except TypeError:  # a version without spool_dir=
            pass
    return session_class(api_key, host=host, **kwargs), False


def open_ours(host: str, api_key: str, slug: str, spool_dir: str) -> Client:
    import syvain_metrics as sm

    warnings = count_log_records("syvain_metrics")
    session, spooled = open_session(api_key, host, spool_dir)
    exp = sm.Experiment.create(slug, session=session)
    flush: Any = exp.flush  # timeout= is not in every version's signature
    flush_takes_timeout = "timeout" in inspect.signature(flush).parameters

    def finish(timeout: float) -> Json:
        out: Json = {}
        start = time.perf_counter()
        try:
            if flush_takes_timeout:
                flush(timeout=timeout)
            else:
                flush()
        except Exception as error:
            out["flush_error"] = describe(error)
        out["flush_s"] = time.perf_counter() - start
        start = time.perf_counter()
        try:
            session.close()
        except Exception as error:
            out["close_error"] = describe(error)
        out["close_s"] = time.perf_counter() - start
        return out

    info = {
        "client": f"syvain-metrics {sm.__version__}",
        "details": f"spool_dir= {'taken' if spooled else 'not taken yet'}, "
        f"flush(timeout=) {'taken' if flush_takes_timeout else 'not taken yet'}",
    }
    return Client(exp.log, exp.id, finish, info, warnings)


def open_collector(host: str, api_key: str, slug: str) -> Client:
    from importlib.metadata import version

    from syvain_metrics_collector import (  # type: ignore[import-not-found, unused-ignore]
        Collector,
    )

    warnings = count_log_records("syvain.metrics")
    collector = Collector(api_key, host=host)
    experiment = collector.experiment(slug)

    def finish(timeout: float) -> Json:
        out: Json = {}
        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        try:
            experiment.flush_or_raise()
        except Exception as error:
            out["flush_error"] = describe(error)
        # A batch a timer thread took off the queue before flush_or_raise() may still be in
        # flight (or be put back after a failure): wait for those threads, flush again.
        while True:
            timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
            for timer in timers:
                timer.join(max(0.0, deadline - time.monotonic()))
            result = experiment.flush()
            idle = not any(isinstance(t, threading.Timer) for t in threading.enumerate())
            if result.ok and idle:
                break
            if time.monotonic() >= deadline:
                out["flush_error"] = (
                    f"still {result.pending_metrics} metrics queued after {timeout:g} s"
                )
                break
            time.sleep(0.05)
        out["flush_s"] = time.perf_counter() - start
        out["close_s"] = 0.0  # the collector has nothing to close
        return out

    info = {
        "client": f"{COLLECTOR_PACKAGE} {version(COLLECTOR_PACKAGE)}",
        "details": f"syvain-metrics-api-client {version('syvain-metrics-api-client')}, "
        f"niquests {version('niquests')}; flush_delay_seconds="
        f"{collector.flush_delay_seconds}, max_batch_items={collector.max_batch_items}, "
        f"max_queue_items={collector.max_queue_items}, max_retries={collector.max_retries}",
    }
    return Client(experiment.metric, experiment.id, finish, info, warnings)


def emit(message: Json) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_worker(args: argparse.Namespace) -> None:
    """One contender's loop; one JSON line per event on stdout."""
    client: Client | None = None
    if args.worker == "ours":
        client = open_ours(args.host, args.api_key, args.slug, args.spool_dir)
    elif args.worker == "collector":
        client = open_collector(args.host, args.api_key, args.slug)
    emit(
        {
            "event": "ready",
            "experiment_id": client.experiment_id if client else None,
            "python": sys.version.split()[0],
            **(client.info if client else {"client": "none"}),
        }
    )
    stats = training_loop(
        args.steps,
        args.work_iterations,
        client.log if client else None,
        on_start=lambda: emit({"event": "loop_started"}),
    )
    emit({"event": "loop_ended"})
    finished = client.finish(args.flush_timeout) if client else {}
    emit(
        {
            "event": "result",
            "steps": len(stats.step_ns),
            "loop_s": stats.loop_s,
            "step_ns": distribution(stats.step_ns),
            "log_ns": distribution(stats.log_ns),
            "exceptions": stats.exceptions,
            "first_exception": stats.first_exception,
            "warnings": client.warnings.count if client else 0,
            "first_warning": client.warnings.first if client else None,
            "dropped_by_client": client.warnings.dropped if client else 0,
            **finished,
        }
    )


# -- processes driven by the parent -----------------------------------------------------------


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def read_line(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or ``""`` after ``timeout`` seconds or at EOF."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


SERVER_LINE = re.compile(r"local server at (http://\S+) \(API key")


class ServerProcess:
    """``python -m syvain_metrics.cli serve`` in a process of its own."""

    def __init__(self, db: Path, port: int = 0) -> None:
        self.log = db.with_suffix(f".{port or 'any'}.{time.monotonic_ns()}.log")
        command = [
            sys.executable,
            "-m",
            "syvain_metrics.cli",
            "serve",
            "--port",
            str(port),
            "--db",
            str(db),
            "--api-key",
            API_KEY,
        ]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, env=child_env()
            )
        assert self.process.stdout is not None
        found = SERVER_LINE.search(read_line(self.process.stdout, 30.0))
        if found is None:
            self.stop()
            raise ServerStartError(f"the server did not start: {self.log.read_text().strip()}")
        self.url: str = found.group(1)
        self.port: int = urlsplit(self.url).port or 0

    @classmethod
    def restart(cls, db: Path, port: int, within: float = 15.0) -> ServerProcess:
        """A new server on the same port and database (retried while the port is busy)."""
        deadline = time.monotonic() + within
        while True:
            try:
                return cls(db, port)
            except ServerStartError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (the server stops cleanly), then wait; kill if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class ServerStartError(RuntimeError):
    pass


class WorkerProcess:
    """A worker; its stdout events are read by a thread and time-stamped on arrival."""

    def __init__(self, python: Path, kind: str, options: list[str]) -> None:
        self.kind = kind
        command = [str(python), str(Path(__file__).resolve()), "--worker", kind, *options]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=child_env())
        self._events: queue.Queue[tuple[float, Json | None]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                sys.stderr.write(f"[{self.kind} worker] {line}")
                continue
            self._events.put((time.monotonic(), message))
        self._events.put((time.monotonic(), None))

    def expect(self, event: str, timeout: float) -> tuple[float, Json]:
        """The next ``event`` (and when it arrived); exits if the worker died or hung."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, message = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise SystemExit(
                    f"the {self.kind} worker sent no {event!r} in {timeout:g} s"
                ) from None
            if message is None:
                code = self.process.wait()
                raise SystemExit(f"the {self.kind} worker failed (exit {code}); see above")
            if message.get("event") == event:
                return at, message

    def result(self, timeout: float) -> Json:
        _, message = self.expect("result", timeout)
        code = self.process.wait(timeout=60)
        if code != 0:
            raise SystemExit(f"the {self.kind} worker failed (exit {code}); see above")
        return message

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def worker_process(python: Path, kind: str, options: list[str]) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(python, kind, options)
    try:
        yield worker
    finally:
        worker.kill()


def count_stored(url: str, experiment_id: str, spool_dir: Path) -> tuple[int, int]:
    """Rows stored for the experiment, and distinct (name, step, metadata), read back through a
    fresh session."""
    import syvain_metrics as sm

    session, _ = open_session(API_KEY, url, str(spool_dir), page_size=100_000)
    try:
        rows = sm.Experiment.get(experiment_id, session=session).metrics()
        keys = set(zip(rows.names, rows.steps, rows.column("event_metadata_json"), strict=True))
        return len(rows), len(keys)
    finally:
        session.close()


# -- the scenarios -------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    contender: str
    steps: int
    ready: Json
    result: Json
    stored: int | None = None
    distinct: int | None = None
    timeline: str = ""

    @property
    def expected(self) -> int:
        return LOGS_PER_STEP * self.steps

    @property
    def lost(self) -> int | None:
        return None if self.distinct is None else self.expected - self.distinct

    @property
    def duplicated(self) -> int | None:
        if self.stored is None or self.distinct is None:
            return None
        return self.stored - self.distinct


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    iterations: int
    pythons: dict[str, Path]
    outage_steps: int = 0  # set once the baseline's step time is known

    def options(
        self, kind: str, name: str, host: str, steps: int, flush_timeout: float
    ) -> list[str]:
        spool = self.tmp / f"spool-{name}"
        spool.mkdir(exist_ok=True)
        return [
            "--host",
            host,
            "--api-key",
            API_KEY,
            "--slug",
            f"bench-{name}-{os.getpid()}",
            "--steps",
            str(steps),
            "--work-iterations",
            str(self.iterations),
            "--spool-dir",
            str(spool),
            "--flush-timeout",
            str(flush_timeout),
        ]

    def hang_guard(self, steps: int, flush_timeout: float) -> float:
        """How long to wait for a worker's result before calling it hung."""
        return 300.0 + 0.05 * steps + float(self.args.outage_seconds) + flush_timeout

    def run_main(self, kind: str, label: str) -> Run:
        steps = self.args.steps
        print(f"main: {label} ({steps:,} steps) ...", file=sys.stderr, flush=True)
        if kind == "baseline":
            options = self.options(kind, label, UNUSED_HOST, steps, FLUSH_TIMEOUT)
            with worker_process(self.pythons[kind], kind, options) as worker:
                _, ready = worker.expect("ready", 60)
                result = worker.result(self.hang_guard(steps, FLUSH_TIMEOUT))
            return Run("main", label, steps, ready, result)
        server = ServerProcess(self.tmp / f"main-{kind}.sqlite")
        try:
            options = self.options(kind, f"main-{kind}", server.url, steps, FLUSH_TIMEOUT)
            with worker_process(self.pythons[kind], kind, options) as worker:
                _, ready = worker.expect("ready", 120)
                result = worker.result(self.hang_guard(steps, FLUSH_TIMEOUT))
            run = Run("main", kind, steps, ready, result)
            run.stored, run.distinct = count_stored(
                server.url, ready["experiment_id"], self.tmp / "spool-reader"
            )
        finally:
            server.stop()
        return run

    def run_outage(self, kind: str) -> Run:
        steps, outage = self.outage_steps, self.args.outage_seconds
        print(
            f"outage: {kind} ({steps:,} steps, server down {outage:g} s) ...",
            file=sys.stderr,
            flush=True,
        )
        db = self.tmp / f"outage-{kind}.sqlite"
        server = ServerProcess(db)
        try:
            options = self.options(kind, f"outage-{kind}", server.url, steps, FLUSH_TIMEOUT)
            with worker_process(self.pythons[kind], kind, options) as worker:
                _, ready = worker.expect("ready", 120)
                started, _ = worker.expect("loop_started", 60)
                time.sleep(max(0.0, started + OUTAGE_AFTER_SECONDS - time.monotonic()))
                server.stop()
                down = time.monotonic()
                time.sleep(max(0.0, down + outage - time.monotonic()))
                server = ServerProcess.restart(db, server.port)
                up = time.monotonic()
                ended, _ = worker.expect("loop_ended", self.hang_guard(steps, 0))
                result = worker.result(self.hang_guard(0, FLUSH_TIMEOUT))
            timeline = (
                f"server stopped at +{down - started:.1f} s of the loop, back at "
                f"+{up - started:.1f} s; the loop ended at +{ended - started:.1f} s"
            )
            if ended < up:
                timeline += " (before the server came back: raise --outage-steps)"
            run = Run("outage", kind, steps, ready, result, timeline=timeline)
            run.stored, run.distinct = count_stored(
                server.url, ready["experiment_id"], self.tmp / "spool-reader"
            )
        finally:
            server.stop()
        return run

    def run_slow(self, kind: str, server: Any) -> Run:
        steps = self.args.slow_steps
        print(
            f"slow server: {kind} ({steps:,} steps, ingest answers after "
            f"{SLOW_INGEST_SECONDS:g} s) ...",
            file=sys.stderr,
            flush=True,
        )
        # Enough for every event to go through in requests of 500, one at a time.
        flush_timeout = max(FLUSH_TIMEOUT, 2 * SLOW_INGEST_SECONDS * LOGS_PER_STEP * steps / 500)
        server.faults.clear()
        server.faults.delay("ingest_metrics", seconds=SLOW_INGEST_SECONDS, times=10**6)
        try:
            options = self.options(kind, f"slow-{kind}", server.url, steps, flush_timeout)
            with worker_process(self.pythons[kind], kind, options) as worker:
                _, ready = worker.expect("ready", 120)
                result = worker.result(self.hang_guard(steps, flush_timeout))
        finally:
            server.faults.clear()
        run = Run("slow", kind, steps, ready, result)
        run.stored, run.distinct = count_stored(
            server.url, ready["experiment_id"], self.tmp / "spool-reader"
        )
        return run


# -- the collector's environment ------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def installed_version(python: Path) -> str | None:
    probe = subprocess.run(
        [
            str(python),
            "-c",
            f"import importlib.metadata as m; print(m.version({COLLECTOR_PACKAGE!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_collector_env(venv: Path) -> Path:
    """Create (or reuse) ``venv`` holding exactly the published collector's pinned version."""
    python = venv_python(venv)
    if not python.exists():
        print(f"creating {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / ".gitignore").write_text("*\n")  # what `python -m venv` writes from 3.13 on
    if installed_version(python) != COLLECTOR_VERSION:
        print(
            f"installing {COLLECTOR_PACKAGE}=={COLLECTOR_VERSION} into {venv} ...",
            file=sys.stderr,
            flush=True,
        )
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"{COLLECTOR_PACKAGE}=={COLLECTOR_VERSION}",
            ],
            check=True,
        )
    return python


# -- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The baseline: its fastest mean step, and its worst single step."""

    step_s: float
    max_step_ns: int

    @classmethod
    def of(cls, runs: list[Run]) -> Reference:
        return cls(
            min(r.result["loop_s"] / r.steps for r in runs),
            max(r.result["step_ns"]["max"] for r in runs),
        )

    def slowdown(self, run: Run) -> float:
        return float(run.result["loop_s"]) / run.steps / self.step_s - 1.0

    def stall_ms(self, run: Run) -> float:
        return (int(run.result["step_ns"]["max"]) - self.max_step_ns) / 1e6


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def us(ns: float) -> str:
    return f"{ns / 1e3:,.1f}"


def ms(ns: float) -> str:
    return f"{ns / 1e6:,.2f}"


def print_run(run: Run, ref: Reference) -> None:
    r = run.result
    print(f"\n== {run.scenario}: {run.contender} ({run.ready['client']}) ==")
    if run.ready.get("details"):
        print(f"   {run.ready['details']}")
    print(
        f"   loop {r['loop_s']:.2f} s for {run.steps:,} steps "
        f"({r['loop_s'] / run.steps * 1e3:.3f} ms/step); slowdown vs no logging "
        f"{ref.slowdown(run):+.1%}"
    )
    if run.contender.startswith("baseline"):
        step = r["step_ns"]
        print(
            f"   step: median {ms(step['p50'])} ms, p99 {ms(step['p99'])} ms, "
            f"max {ms(step['max'])} ms"
        )
        return
    log, step = r["log_ns"], r["step_ns"]
    print(
        f"   log(): median {us(log['p50'])} us, p99 {us(log['p99'])} us, "
        f"max {us(log['max'])} us over {log['count']:,} calls"
    )
    print(
        f"   step: median {ms(step['p50'])} ms, p99 {ms(step['p99'])} ms, "
        f"max {ms(step['max'])} ms; "
        f"max - baseline max {ref.stall_ms(run):+,.2f} ms"
    )
    print(f"   final flush {r.get('flush_s', 0.0):.2f} s; close {r.get('close_s', 0.0):.2f} s")
    for key in ("flush_error", "close_error"):
        if r.get(key):
            print(f"   {key.replace('_', ' ')}: {r[key]}")
    print(
        f"   stored {run.stored:,} rows, {run.distinct:,} distinct of {run.expected:,} "
        f"expected: lost {run.lost:,}, duplicated {run.duplicated:,}"
    )
    print(f"   exceptions raised into the loop: {r['exceptions']:,}")
    if r["first_exception"]:
        print(f"   first: {r['first_exception']}")
    if r["warnings"]:
        print(
            f"   client warnings: {r['warnings']:,} (metrics it says it dropped: "
            f"{r['dropped_by_client']:,}); first: {r['first_warning']}"
        )
    if run.timeline:
        print(f"   {run.timeline}")


def print_summary(runs: list[Run], ref: Reference) -> None:
    header = (
        f"{'scenario':<8} {'contender':<11} {'loop s':>8} {'slowdown':>9} {'log p50':>8} "
        f"{'log p99':>9} {'step p99':>9} {'step max':>10} {'max-base':>10} {'flush s':>8} "
        f"{'stored':>8} {'lost':>7} {'dup':>5} {'exc':>5}"
    )
    print("\nSummary (log() in us, steps in ms)\n")
    print(header)
    print("-" * len(header))
    for run in runs:
        r = run.result
        baseline = run.contender.startswith("baseline")
        dash = "-"
        cells = (
            f"{run.scenario:<8}",
            f"{run.contender:<11}",
            f"{r['loop_s']:>8.2f}",
            f"{ref.slowdown(run):>+9.1%}",
            f"{dash if baseline else us(r['log_ns']['p50']):>8}",
            f"{dash if baseline else us(r['log_ns']['p99']):>9}",
            f"{ms(r['step_ns']['p99']):>9}",
            f"{ms(r['step_ns']['max']):>10}",
            f"{dash if baseline else format(ref.stall_ms(run), '+,.2f'):>10}",
            f"{dash if baseline else format(r.get('flush_s', 0.0), '.2f'):>8}",
            f"{dash if run.stored is None else format(run.stored, ','):>8}",
            f"{dash if run.lost is None else format(run.lost, ','):>7}",
            f"{dash if run.duplicated is None else format(run.duplicated, ','):>5}",
            f"{dash if baseline else r['exceptions']:>5}",
        )
        print(" ".join(cells))

    by_key = {(run.scenario, run.contender): run for run in runs}
    ours, theirs = by_key.get(("main", "ours")), by_key.get(("main", "collector"))
    if ours is not None and theirs is not None:
        print("\nRatios, main run (ours / collector; below 1 is better for ours):")
        pairs = (
            ("time logging adds to the loop", ref.slowdown(ours), ref.slowdown(theirs)),
            ("log() median", ours.result["log_ns"]["p50"], theirs.result["log_ns"]["p50"]),
            ("log() p99", ours.result["log_ns"]["p99"], theirs.result["log_ns"]["p99"]),
            ("worst step", ours.result["step_ns"]["max"], theirs.result["step_ns"]["max"]),
            ("final flush", ours.result.get("flush_s", 0.0), theirs.result.get("flush_s", 0.0)),
        )
        for label, a, b in pairs:
            shown = f"{a / b:.2f}x" if b > 0 and a >= 0 else "n/a (a value at or below 0)"
            print(f"   {label:<32} {shown}")

    contenders = [c for c in ("ours", "collector") if ("main", c) in by_key]
    print(f"\nTargets{'':<38}" + "".join(f"{c:>22}" for c in contenders))
    rows: list[tuple[str, Callable[[Run], tuple[bool, str]], str]] = [
        (
            f"main: slowdown <= {TARGET_SLOWDOWN:.0%}",
            lambda run: (
                ref.slowdown(run) <= TARGET_SLOWDOWN,
                f"{ref.slowdown(run):+.1%}",
            ),
            "main",
        ),
        (
            f"main: log() median <= {TARGET_LOG_MEDIAN_US:g} us",
            lambda run: (
                run.result["log_ns"]["p50"] <= TARGET_LOG_MEDIAN_US * 1e3,
                f"{us(run.result['log_ns']['p50'])} us",
            ),
            "main",
        ),
        (
            f"main: max step - baseline <= {TARGET_STALL_MS:g} ms",
            lambda run: (ref.stall_ms(run) <= TARGET_STALL_MS, f"{ref.stall_ms(run):+,.1f} ms"),
            "main",
        ),
    ]
    for scenario in ("main", "outage", "slow"):
        rows.append(
            (
                f"{scenario}: 0 exceptions, 0 lost, 0 dup",
                lambda run: (
                    (run.result["exceptions"], run.lost, run.duplicated) == (0, 0, 0),
                    f"{run.result['exceptions']}/{run.lost}/{run.duplicated}",
                ),
                scenario,
            )
        )
    for label, check, scenario in rows:
        verdicts: list[str] = []
        for contender in contenders:
            found = by_key.get((scenario, contender))
            if found is None:
                verdicts.append(f"{'-':>22}")
                continue
            ok, shown = check(found)
            verdicts.append(f"{verdict(ok) + ' ' + shown:>22}")
        if any(cell.strip() != "-" for cell in verdicts):
            print(f"{label:<45}" + "".join(verdicts))


def sanity_check(runs: list[Run]) -> None:
    problems = []
    for run in runs:
        r = run.result
        if r["steps"] != run.steps:
            problems.append(f"{run.scenario}/{run.contender} ran {r['steps']} steps")
        calls = r["log_ns"]["count"]
        wanted = 0 if run.contender.startswith("baseline") else LOGS_PER_STEP * run.steps
        if calls != wanted:
            problems.append(f"{run.scenario}/{run.contender} made {calls} log() calls")
        if run.distinct is not None and run.distinct > run.expected:
            problems.append(f"{run.scenario}/{run.contender} stored unexpected events")
    if problems:
        raise SystemExit("benchmark sanity checks failed: " + "; ".join(problems))


def run_all(bench: Bench, contenders: list[str], *, faults: bool) -> list[Run]:
    """Baseline, each contender, baseline again; then the outage and the slow server."""
    runs = [bench.run_main("baseline", "baseline")]
    runs += [bench.run_main(kind, kind) for kind in contenders]
    runs.append(bench.run_main("baseline", "baseline2"))
    if faults:
        # The loop must outlast the outage; the machine's speed varies, so size it from the
        # baseline's step time just measured, with some to spare.
        step_s = Reference.of([runs[0], runs[-1]]).step_s
        outage_loop_s = OUTAGE_AFTER_SECONDS + bench.args.outage_seconds + OUTAGE_MARGIN_SECONDS
        bench.outage_steps = bench.args.outage_steps or round(
            outage_loop_s / step_s * OUTAGE_SPEED_ALLOWANCE
        )
        runs += [bench.run_outage(kind) for kind in contenders]
        from syvain_metrics.testing import LocalServer

        # waitress warns whenever the delayed requests keep all its threads busy: expected here.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        with LocalServer(db=str(bench.tmp / "slow.sqlite"), api_key=API_KEY) as server:
            runs += [bench.run_slow(kind, server) for kind in contenders]
    return runs


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="loop steps (default 20,000)")
    parser.add_argument(
        "--outage-seconds", type=float, default=30.0, help="server downtime (default 30)"
    )
    parser.add_argument(
        "--outage-steps",
        type=int,
        help="steps of the outage loop (default: outlast the outage by 5 s, with 25%% to spare)",
    )
    parser.add_argument(
        "--slow-steps", type=int, default=3_000, help="steps of the slow-server loop (3,000)"
    )
    parser.add_argument("--skip-collector", action="store_true", help="only ours")
    parser.add_argument("--skip-faults", action="store_true", help="only the main runs")
    parser.add_argument(
        "--collector-python",
        type=Path,
        help="an interpreter that has the published collector (default: create/reuse --venv)",
    )
    parser.add_argument(
        "--venv", type=Path, default=DEFAULT_VENV, help="where to keep the published collector"
    )
    parser.add_argument(
        "--worker", choices=["baseline", "ours", "collector"], help=argparse.SUPPRESS
    )
    for hidden in ("--host", "--api-key", "--slug", "--spool-dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--work-iterations", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--flush-timeout", type=float, default=FLUSH_TIMEOUT, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker is not None:
        run_worker(args)
        return
    if min(args.steps, args.slow_steps, args.outage_steps or 1) < 1 or args.outage_seconds < 0:
        parser.error("step counts must be at least 1 and --outage-seconds not negative")

    pythons = {"baseline": Path(sys.executable), "ours": Path(sys.executable)}
    if not args.skip_collector:
        pythons["collector"] = args.collector_python or ensure_collector_env(args.venv)
    contenders = ["ours"] + ([] if args.skip_collector else ["collector"])

    iterations, work_s = calibrate()
    print(
        f"work per step: {work_s * 1e3:.3f} ms ({iterations:,} iterations); python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs",
        file=sys.stderr,
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="training-loop-bench-") as tmp:
        bench = Bench(args, Path(tmp), iterations, pythons)
        try:
            runs = run_all(bench, contenders, faults=not args.skip_faults)
        except ServerStartError as error:
            raise SystemExit(str(error)) from error
    baselines = [run for run in runs if run.contender.startswith("baseline")]
    sanity_check(runs)
    ref = Reference.of(baselines)
    print(
        f"\nTraining loop with {LOGS_PER_STEP} log() calls a step and CPU work calibrated to "
        f"{work_s * 1e3:.2f} ms a step at start ({iterations:,} iterations; python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs).\n"
        f"Baseline (no logging): {ref.step_s * 1e3:.3f} ms a step (the faster of two runs), "
        f"worst step {ms(ref.max_step_ns)} ms (the worse of two runs); every slowdown is per "
        "step against that."
    )
    for run in runs:
        print_run(run, ref)
    print_summary(runs, ref)


if __name__ == "__main__":
    main()
