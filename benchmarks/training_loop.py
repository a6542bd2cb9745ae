"""What metric logging costs a training loop: syvain-metrics vs the published collector.

A loop of ``--steps`` steps (20,000 by default), each doing about 1 ms of CPU work (a busy
loop of pure-Python arithmetic, calibrated once on this machine and identical for every
contender) and three ``log()`` calls (``loss`` with metadata ``{"split": "train"}``, ``lr``,
``grad_norm``), runs:

* baseline: the same loop without logging;
* ours: ``syvain_metrics``: ``sm.Session(api_key, host=url, spool_dir=<temp dir>)``,
  ``sm.Experiment.create(slug, session=session)``, ``exp.log(name, value, step=step,
  metadata=...)`` in the loop, then ``exp.flush(timeout=120)`` and ``session.close()``, both
  timed apart from the loop;
* collector: the published ``syvain-metrics-collector==0.0.71``: ``Collector(api_key,
  host=url)``, ``collector.experiment(slug)``, ``experiment.metric(name, value, step=step,
  metadata=...)`` in the loop, then ``experiment.flush_or_raise()`` and a wait for its timer
  threads (a batch a timer thread took before the flush is still in flight after it), timed
  apart from the loop. It queues in memory (at most 100,000 items per experiment, dropping
  the oldest beyond that) and sends batches of 500 from ``threading.Timer`` threads 0.25 s
  after the first queued item; it has no ``close()``.

Values (``--values``): ``float`` (the default) logs Python floats and int steps, as above;
``numpy`` logs what a numpy training loop has (``np.float64`` loss and grad_norm, what
``np.mean()`` returns, an ``np.float32`` lr and ``np.int64`` steps; the scalars are made
outside the timed ``log()`` call); ``dict`` logs the three values of a step in one call,
``log({"loss": ..., "lr": ..., "grad_norm": ...}, step=step, metadata={"split": "train"})``
(all three with that metadata), and each value is counted as a third of the call's time so
the ``log()`` figures stay per value. The collector has no mapping form (a loop of
``metric()`` calls stands in for it) and its environment has no numpy (it logs the same
numbers as Python floats); the report says what each contender logged.

Steady state: every worker, the baseline's included, calls ``gc.collect()`` right before its
timed loop. A real training script has long run full collections during its set-up (imports,
data loading, model building); without this, the first full collection of the worker process
would land in the timed loop of whichever contender allocates.

Rounds: the machine's own noise (baseline runs on 2 shared CPUs differ by 10-15%) is as large
as some of what is measured, so the main scenario runs ``--rounds`` rounds (3), each running
the baseline, ours and the collector once, in an order rotated by one every round. Every run
is printed on a line of its own, so the spread shows; the summary reports per contender the
median over the rounds of each timing, and the slowdown against the median baseline.

Reported per run: loop wall time and the slowdown against the baseline (per step, so runs of
any length compare), the median / p99 / max of each ``log()`` call (``time.perf_counter_ns``
around it), the p99 / max step time and the worst step minus the baseline's (median) worst
step, the final flush time, and what the server stored, read back through a fresh
``sm.Session``: lost = expected - distinct (name, step, metadata), duplicated = rows -
distinct. Every ``log()`` call sits in a ``try``/``except`` that counts the exceptions raised
into the loop. Over the main rounds, stored / lost / duplicated / exceptions are totals.

Fault scenarios, for ours and for the collector, one run each:

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
--port 0 --db <file> --api-key <key>`` process per run (fresh database file each); for the
slow server, the ``LocalServer`` in this parent process, which otherwise only waits. So no
server thread competes for the GIL with a training loop, as it would not in production (the
service is remote), and every contender meets the same kind of server. The client's own
background threads, if it has any, do share the loop's GIL: that is part of what logging
costs. On a machine with few CPUs a server busy ingesting still takes CPU time that the loop
and the client's threads could have used (the baseline has no server to compete with).

Ours and the baseline run in the current interpreter, so the SDK must be importable
(``pip install -e .``). The published collector cannot share this environment, so it runs in
``benchmarks/.venv-collector``, created with ``python -m venv`` (plus a ``.gitignore`` of
``*`` inside, as ``venv`` itself writes from Python 3.13 on) and ``pip install
syvain-metrics-collector==0.0.71`` when missing, and reused afterwards; pip picks the
collector's dependencies (``syvain-metrics-api-client>=0.0.62``, ``niquests``), whose versions
are printed with the results.

Run (from the repository root)::

    python benchmarks/training_loop.py                            # about 6 minutes
    python benchmarks/training_loop.py --steps 2000 --rounds 1 --outage-seconds 5 \\
        --outage-steps 8000 --slow-steps 300                      # a quick check
    python benchmarks/training_loop.py --skip-faults --skip-collector
    python benchmarks/training_loop.py --skip-faults --skip-collector --system-metrics 1
        # ours with the system metrics sampler on (every 1 s; its series are not counted)
    python benchmarks/training_loop.py --values numpy      # or --values dict
    python benchmarks/training_loop.py --collector-python /path/to/venv/bin/python

Targets (ours): slowdown <= 5%; median ``log()`` <= 5 us; no stall over 10 ms (worst step
minus the baseline's worst step); 0 exceptions raised into the loop, 0 events lost, 0
duplicated, in every scenario. The exit status is 0 whether a target passes or misses (this
is a measurement, not a test); it is non-zero only when the set-up or the sanity checks fail.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import logging
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from peer_env import ensure_peer_env  # benchmarks/ is on sys.path when run as a script
from processes import kill_process, stop_process

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

# Targets (ours) on the main scenario's medians: figure, limit, label, how to show the figure
TARGETS = (
    ("slowdown", 0.05, "slowdown <= 5%", "{:+.1%}"),
    ("log_p50", 5.0, "log() median <= 5 us", "{:,.1f} us"),
    ("stall_ms", 10.0, "max step - baseline <= 10 ms", "{:+,.1f} ms"),
)

Json = dict[str, Any]

VALUES = {
    "float": "Python floats, int steps, three log() calls a step",
    "numpy": "numpy scalars (np.float64, np.float32), np.int64 steps, three log() calls a step",
    "dict": "one log(mapping) call of three Python floats a step",
}
"""What each ``--values`` kind logs, as the report says it."""


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


LogCall = Callable[..., object]


def training_loop(
    steps: int,
    iterations: int,
    log: LogCall | None,
    on_start: Callable[[], None],
    values: str = "float",
) -> Json:
    """The loop: work, then three ``log(name, value, step=..., metadata=...)`` calls a step
    (one ``log(mapping, step=..., metadata=...)`` call for ``values="dict"``), each timed
    and guarded by its own ``try``/``except``."""
    clock = time.perf_counter_ns
    step_ns = [0] * steps
    log_ns: list[int] = []
    record = log_ns.append
    exceptions = 0
    first_exception: str | None = None
    numpy = importlib.import_module("numpy") if values == "numpy" else None
    gc.collect()  # steady state: see the module docstring
    on_start()
    start = time.perf_counter()
    for step in range(steps):
        began = clock()
        x = busy_work(iterations, step)
        if log is not None:
            loss = 2.5 / (1.0 + 0.001 * step) + 1e-6 * x
            lr = 3e-4 * 0.5 ** (step // 5_000)
            grad_norm = 1.0 + x % 1.0
            at: Any = step
            if numpy is not None:  # what a numpy loop has; made outside the timed calls
                loss, lr, grad_norm = (
                    numpy.float64(loss),
                    numpy.float32(lr),
                    numpy.float64(grad_norm),
                )
                at = numpy.int64(step)
            logged = (("loss", loss, TRAIN), ("lr", lr, None), ("grad_norm", grad_norm, None))
            if values == "dict":
                mapping = {name: value for name, value, _ in logged}
                called = clock()
                try:
                    log(mapping, step=at, metadata=TRAIN)
                except Exception as error:
                    exceptions += 1
                    if first_exception is None:
                        first_exception = describe(error)
                share = (clock() - called) // LOGS_PER_STEP  # per value, as in the other modes
                log_ns.extend([share] * LOGS_PER_STEP)
            else:
                for name, value, metadata in logged:
                    called = clock()
                    try:
                        log(name, value, step=at, metadata=metadata)
                    except Exception as error:
                        exceptions += 1
                        if first_exception is None:
                            first_exception = describe(error)
                    record(clock() - called)
        step_ns[step] = clock() - began
    return {
        "loop_s": time.perf_counter() - start,
        "steps": steps,
        "step_ns": distribution(step_ns),
        "log_ns": distribution(log_ns),
        "exceptions": exceptions,
        "first_exception": first_exception,
    }


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

    def __init__(self, logger_name: str) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.dropped = 0
        self.first: str | None = None
        logger = logging.getLogger(logger_name)
        logger.addHandler(self)
        logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.count += 1
        if self.first is None:
            self.first = message[:300]
        found = re.search(r"dropped (\d+) metrics", message)
        if found:
            self.dropped += int(found.group(1))


@dataclass
class Client:
    """One contender's logging client, opened in a worker."""

    log: LogCall
    experiment_id: str
    finish: Callable[[float], Json]  # flush (with a timeout) and close; returns timings
    info: Json
    warnings: LogRecordCounter


def open_ours(
    host: str, api_key: str, slug: str, spool_dir: str, system_metrics: float | None = None
) -> Client:
    import syvain_metrics as sm

    warnings = LogRecordCounter("syvain_metrics")
    session = sm.Session(api_key, host=host, spool_dir=spool_dir)
    exp = sm.Experiment.create(slug, session=session)
    sampler = None if system_metrics is None else exp.start_system_metrics(system_metrics)

    def finish(timeout: float) -> Json:
        out: Json = {}
        if sampler is not None:
            sampler.stop()
            out["system_samples"] = sampler.samples
        for key, action in (
            ("flush", lambda: exp.flush(timeout=timeout)),
            ("close", session.close),
        ):
            start = time.perf_counter()
            try:
                action()
            except Exception as error:
                out[f"{key}_error"] = describe(error)
            out[f"{key}_s"] = time.perf_counter() - start
        return out

    info = {"client": f"syvain-metrics {sm.__version__}"}
    return Client(exp.log, exp.id, finish, info, warnings)


def open_collector(host: str, api_key: str, slug: str) -> Client:
    from importlib.metadata import version

    from syvain_metrics_collector import (  # type: ignore[import-not-found, unused-ignore]
        Collector,
    )

    warnings = LogRecordCounter("syvain.metrics")
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
        return out

    info = {
        "client": f"{COLLECTOR_PACKAGE} {version(COLLECTOR_PACKAGE)}",
        "details": f"syvain-metrics-api-client {version('syvain-metrics-api-client')}, "
        f"niquests {version('niquests')}; flush_delay_seconds="
        f"{collector.flush_delay_seconds}, max_batch_items={collector.max_batch_items}, "
        f"max_queue_items={collector.max_queue_items}, max_retries={collector.max_retries}",
    }

    def log(first: Any, *args: Any, **options: Any) -> object:
        if isinstance(first, dict):  # no mapping form: one metric() call per value
            for name, value in first.items():
                experiment.metric(name, value, **options)
            return None
        return experiment.metric(first, *args, **options)

    return Client(log, experiment.id, finish, info, warnings)


def emit(message: Json) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_worker(args: argparse.Namespace) -> None:
    """One contender's loop; one JSON line per event on stdout."""
    client: Client | None = None
    if args.worker == "ours":
        client = open_ours(args.host, args.api_key, args.slug, args.spool_dir, args.system_metrics)
    elif args.worker == "collector":
        client = open_collector(args.host, args.api_key, args.slug)
    values = args.values
    if values == "numpy" and importlib.util.find_spec("numpy") is None:
        values = "float"  # the collector's environment: the same numbers, as Python floats
    emit(
        {
            "event": "ready",
            "experiment_id": client.experiment_id if client else None,
            "values": values,
            **(client.info if client else {"client": "none"}),
        }
    )
    result = training_loop(
        args.steps,
        args.work_iterations,
        client.log if client else None,
        on_start=lambda: emit({"event": "loop_started"}),
        values=values,
    )
    emit({"event": "loop_ended"})
    if client is not None:
        result.update(client.finish(args.flush_timeout))
        result["warnings"] = client.warnings.count
        result["first_warning"] = client.warnings.first
        result["dropped_by_client"] = client.warnings.dropped
    emit({"event": "result", **result})


# -- processes driven by the parent -----------------------------------------------------------


def child_env(python: Path | None = None) -> dict[str, str]:
    """The environment of a child process. A child of another interpreter (the collector's)
    gets no ``PYTHONPATH``; one of this interpreter keeps it, so that it imports the same
    SDK as this process (a checkout on ``PYTHONPATH`` rather than the installed one)."""
    same = python is None or Path(python) == Path(sys.executable)
    dropped = ("PYTHONHOME",) if same else ("PYTHONPATH", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if k not in dropped}


def read_line(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or ``""`` after ``timeout`` seconds or at EOF."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


SERVER_LINE = re.compile(r"local server at (http://\S+) \(API key")


class ServerStartError(RuntimeError):
    pass


class ServerProcess:
    """``python -m syvain_metrics.cli serve`` in a process of its own, stopped on exit."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = 0
        self._start()

    def _start(self) -> None:
        log = self.db.with_suffix(f".{time.monotonic_ns()}.log")
        command = [sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", str(self.port)]
        command += ["--db", str(self.db), "--api-key", API_KEY]
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env()
            )
        assert self.process.stdout is not None
        found = SERVER_LINE.search(read_line(self.process.stdout, 30.0))
        if found is None:
            self.stop()
            raise ServerStartError(f"the server did not start: {log.read_text().strip()}")
        self.url: str = found.group(1)
        self.port = urlsplit(self.url).port or 0

    def restart(self, within: float = 15.0) -> None:
        """A new server on the same port and database (retried while the port is busy)."""
        deadline = time.monotonic() + within
        while True:
            try:
                return self._start()
            except ServerStartError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM (the server stops cleanly), then wait; kill if it hangs."""
        stop_process(self.process, grace=15)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerProcess:
    """A worker, killed on exit; its stdout events are read by a thread and time-stamped on
    arrival."""

    def __init__(self, python: Path, kind: str, options: list[str]) -> None:
        self.kind = kind
        command = [str(python), str(Path(__file__).resolve()), "--worker", kind, *options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=child_env(python)
        )
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
        kill_process(self.process)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def count_stored(url: str, experiment_id: str, spool_dir: Path) -> tuple[int, int]:
    """Rows stored for the experiment, and distinct (name, step, metadata), read back through a
    fresh session."""
    import syvain_metrics as sm

    with sm.Session(API_KEY, host=url, spool_dir=spool_dir, page_size=100_000) as session:
        rows = sm.Experiment.get(experiment_id, session=session).metrics()
        keys = [
            key
            for key in zip(rows.names, rows.steps, rows.column("event_metadata_json"), strict=True)
            if not key[0].startswith("system/")  # the sampler's series (--system-metrics)
        ]
        return len(keys), len(set(keys))


# -- the scenarios -------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    contender: str
    steps: int
    ready: Json
    result: Json
    timeline: str = ""
    round: int = 0  # main scenario only: 1, 2, ...
    stored: int | None = None
    distinct: int | None = None

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


def progress(message: str) -> None:
    print(f"{message} ...", file=sys.stderr, flush=True)


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    iterations: int
    pythons: dict[str, Path]
    outage_steps: int = 0  # set once the baseline's step time is known

    def hang_guard(self, steps: int, flush_timeout: float) -> float:
        """How long to wait for a worker's result before calling it hung."""
        return 300.0 + 0.05 * steps + float(self.args.outage_seconds) + flush_timeout

    def measure(
        self,
        scenario: str,
        kind: str,
        name: str,
        url: str,
        steps: int,
        flush_timeout: float = FLUSH_TIMEOUT,
        during: Callable[[WorkerProcess], str] | None = None,
    ) -> Run:
        """One worker's run against the server at ``url``, and what that server stored;
        ``during(worker)`` runs once the worker is ready and returns a timeline."""
        spool = self.tmp / f"spool-{name}"
        spool.mkdir()
        options = ["--host", url, "--api-key", API_KEY, "--slug", f"bench-{name}-{os.getpid()}"]
        options += ["--steps", str(steps), "--work-iterations", str(self.iterations)]
        options += ["--spool-dir", str(spool), "--flush-timeout", str(flush_timeout)]
        if kind == "ours" and self.args.system_metrics is not None:
            options += ["--system-metrics", str(self.args.system_metrics)]
        options += ["--values", self.args.values]
        with WorkerProcess(self.pythons[kind], kind, options) as worker:
            _, ready = worker.expect("ready", 120)
            timeline = during(worker) if during else ""
            result = worker.result(self.hang_guard(steps, flush_timeout))
        done = Run(scenario, kind, steps, ready, result, timeline)
        if kind != "baseline":
            done.stored, done.distinct = count_stored(
                url, ready["experiment_id"], self.tmp / "spool-reader"
            )
        return done

    def run_main(self, kind: str, round_no: int) -> Run:
        progress(f"main, round {round_no}: {kind} ({self.args.steps:,} steps)")
        name, steps = f"main-{kind}-{round_no}", self.args.steps
        if kind == "baseline":
            run = self.measure("main", kind, name, UNUSED_HOST, steps)
        else:
            with ServerProcess(self.tmp / f"{name}.sqlite") as server:
                run = self.measure("main", kind, name, server.url, steps)
        run.round = round_no
        return run

    def run_outage(self, kind: str) -> Run:
        steps, outage = self.outage_steps, self.args.outage_seconds
        progress(f"outage: {kind} ({steps:,} steps, server down {outage:g} s)")

        def during(worker: WorkerProcess) -> str:
            started, _ = worker.expect("loop_started", 60)
            time.sleep(max(0.0, started + OUTAGE_AFTER_SECONDS - time.monotonic()))
            server.stop()
            down = time.monotonic()
            time.sleep(max(0.0, down + outage - time.monotonic()))
            server.restart()
            up = time.monotonic()
            ended, _ = worker.expect("loop_ended", self.hang_guard(steps, 0))
            timeline = (
                f"server stopped at +{down - started:.1f} s of the loop, back at "
                f"+{up - started:.1f} s; the loop ended at +{ended - started:.1f} s"
            )
            if ended < up:
                timeline += " (before the server came back: raise --outage-steps)"
            return timeline

        with ServerProcess(self.tmp / f"outage-{kind}.sqlite") as server:
            return self.measure("outage", kind, f"outage-{kind}", server.url, steps, during=during)

    def run_slow(self, kind: str, server: Any) -> Run:
        steps = self.args.slow_steps
        progress(f"slow server: {kind} ({steps:,} steps, ingest answers after 2 s)")
        # Enough for every event to go through in requests of 500, one at a time.
        flush_timeout = max(FLUSH_TIMEOUT, 2 * SLOW_INGEST_SECONDS * LOGS_PER_STEP * steps / 500)
        server.faults.clear()
        server.faults.delay("ingest_metrics", seconds=SLOW_INGEST_SECONDS, times=10**6)
        try:
            return self.measure("slow", kind, f"slow-{kind}", server.url, steps, flush_timeout)
        finally:
            server.faults.clear()


def run_all(bench: Bench, contenders: list[str], *, rounds: int, faults: bool) -> list[Run]:
    """``rounds`` rounds of the baseline and each contender, in an order rotated by one every
    round; then the outage and the slow server."""
    kinds = ["baseline", *contenders]
    runs = []
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % len(kinds)
        runs += [bench.run_main(kind, round_no) for kind in kinds[shift:] + kinds[:shift]]
    if faults:
        # The loop must outlast the outage; the machine's speed varies, so size it from the
        # baseline's step time just measured, with some to spare.
        outage_loop_s = OUTAGE_AFTER_SECONDS + bench.args.outage_seconds + OUTAGE_MARGIN_SECONDS
        bench.outage_steps = bench.args.outage_steps or round(
            outage_loop_s / Reference.of(runs).step_s * OUTAGE_SPEED_ALLOWANCE
        )
        runs += [bench.run_outage(kind) for kind in contenders]
        from syvain_metrics.testing import LocalServer

        # waitress warns whenever the delayed requests keep all its threads busy: expected here.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        with LocalServer(db=str(bench.tmp / "slow.sqlite"), api_key=API_KEY) as server:
            runs += [bench.run_slow(kind, server) for kind in contenders]
    return runs


# -- the collector's environment ------------------------------------------------------------------


# -- report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The baseline: the medians over the rounds of its mean step and of its worst step."""

    step_s: float
    max_step_ns: float

    @classmethod
    def of(cls, runs: list[Run]) -> Reference:
        baselines = [run for run in runs if run.contender == "baseline"]
        return cls(
            statistics.median(run.result["loop_s"] / run.steps for run in baselines),
            statistics.median(run.result["step_ns"]["max"] for run in baselines),
        )


Figures = dict[str, float | None]

# key, header, width, format (log() in us, steps in ms); the last four are counts
COLUMNS = (
    ("loop_s", "loop s", 8, ".2f"),
    ("slowdown", "slowdown", 9, "+.1%"),
    ("log_p50", "log p50", 8, ",.1f"),
    ("log_p99", "log p99", 9, ",.1f"),
    ("step_p99", "step p99", 9, ",.2f"),
    ("step_max", "step max", 9, ",.2f"),
    ("stall_ms", "max-base", 9, "+,.2f"),
    ("flush_s", "flush s", 8, ".2f"),
    ("stored", "stored", 8, ","),
    ("lost", "lost", 7, ","),
    ("dup", "dup", 5, ","),
    ("exc", "exc", 5, ","),
)
COUNTS = ("stored", "lost", "dup", "exc")


def figures(run: Run, ref: Reference) -> Figures:
    r, logs = run.result, run.contender != "baseline"
    return {
        "loop_s": r["loop_s"],
        "slowdown": r["loop_s"] / run.steps / ref.step_s - 1.0,
        "log_p50": r["log_ns"]["p50"] / 1e3 if logs else None,
        "log_p99": r["log_ns"]["p99"] / 1e3 if logs else None,
        "step_p99": r["step_ns"]["p99"] / 1e6,
        "step_max": r["step_ns"]["max"] / 1e6,
        "stall_ms": (r["step_ns"]["max"] - ref.max_step_ns) / 1e6 if logs else None,
        "flush_s": r.get("flush_s") if logs else None,
        "stored": run.stored,
        "lost": run.lost,
        "dup": run.duplicated,
        "exc": r["exceptions"] if logs else None,
    }


def combine(rows: list[Figures]) -> Figures:
    """The median over rounds of each timing; the total of each count."""
    out: Figures = {}
    for key in rows[0]:
        values = [row[key] for row in rows if row[key] is not None]
        if len(values) < len(rows):
            out[key] = None
        elif key in COUNTS:
            out[key] = sum(values)
        else:
            out[key] = statistics.median(values)
    return out


def table_line(first: str, contender: str, values: Figures | None = None) -> str:
    """A row of the tables (the header without ``values``)."""
    cells = [f"{first:<8}", f"{contender:<10}"]
    for key, header, width, spec in COLUMNS:
        if values is None:
            shown = header
        elif values[key] is None:
            shown = "-"
        else:
            shown = format(values[key], spec)
        cells.append(f"{shown:>{width}}")
    return " ".join(cells)


def notes(run: Run) -> list[str]:
    """What a table row cannot show: errors, warnings, the outage's timeline."""
    r = run.result
    errors = ("flush_error", "close_error")
    lines = [f"{key.replace('_', ' ')}: {r[key]}" for key in errors if r.get(key)]
    if r.get("system_samples"):
        lines.append(f"system metrics samples: {r['system_samples']}")
    if r["first_exception"]:
        lines.append(f"first exception raised into the loop: {r['first_exception']}")
    if r.get("warnings"):
        lines.append(
            f"client warnings: {r['warnings']:,} (metrics it says it dropped: "
            f"{r['dropped_by_client']:,}); first: {r['first_warning']}"
        )
    return [*lines, run.timeline] if run.timeline else lines


def print_report(runs: list[Run], rounds: int, iterations: int, work_s: float) -> None:
    ref = Reference.of(runs)
    print(
        f"\nTraining loop with {LOGS_PER_STEP} log() calls a step and CPU work calibrated to "
        f"{work_s * 1e3:.2f} ms a step at start ({iterations:,} iterations; python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs).\nBaseline (no logging): "
        f"{ref.step_s * 1e3:.3f} ms a step, worst step {ref.max_step_ns / 1e6:.2f} ms (medians "
        f"over {rounds} round(s); every slowdown is per step against that)."
    )
    for kind in ("ours", "collector"):
        ready = next((run.ready for run in runs if run.contender == kind), None)
        if ready is not None:
            details = f"; {ready['details']}" if ready.get("details") else ""
            values = ready.get("values", "float")
            if values != "float" or any(r.ready.get("values", "float") != "float" for r in runs):
                logged = VALUES[values]
                if kind == "collector" and values == "dict":
                    logged += " (three metric() calls: it has no mapping form)"
                details += f"; logs {logged}"  # the default run's lines stay as they were
            print(f"{kind}: {ready['client']}{details}")

    print("\nRuns, in the order run (log() in us, steps in ms):\n")
    header = table_line("run", "contender")
    print(f"{header}\n{'-' * len(header)}")
    for run in runs:
        print(
            table_line(
                f"main #{run.round}" if run.round else run.scenario,
                run.contender,
                figures(run, ref),
            )
        )
        for line in notes(run):
            print(f"   {line}")

    summary: dict[tuple[str, str], Figures] = {}
    for scenario in ("main", "outage", "slow"):
        for kind in ("baseline", "ours", "collector"):
            found = [
                figures(run, ref)
                for run in runs
                if (run.scenario, run.contender) == (scenario, kind)
            ]
            if found:
                summary[scenario, kind] = combine(found)
    print(
        f"\nSummary (main: medians over {rounds} round(s), stored/lost/dup/exc totals; "
        "log() in us, steps in ms)\n"
    )
    header = table_line("scenario", "contender")
    print(f"{header}\n{'-' * len(header)}")
    for (scenario, kind), values in summary.items():
        print(table_line(scenario, kind, values))

    ours, theirs = summary.get(("main", "ours")), summary.get(("main", "collector"))
    if ours is not None and theirs is not None:
        print("\nRatios, main (ours / collector; below 1 is better for ours):")
        for key, label in (
            ("slowdown", "time logging adds to the loop"),
            ("log_p50", "log() median"),
            ("log_p99", "log() p99"),
            ("step_max", "worst step"),
            ("flush_s", "final flush"),
        ):
            a, b = ours[key] or 0.0, theirs[key] or 0.0
            shown = f"{a / b:.2f}x" if b > 0 and a >= 0 else "n/a (a value at or below 0)"
            print(f"   {label:<32} {shown}")

    contenders = [kind for kind in ("ours", "collector") if ("main", kind) in summary]
    print(f"\nTargets{'':<38}" + "".join(f"{kind:>22}" for kind in contenders))
    for key, limit, label, shown in TARGETS:
        values = [summary["main", kind][key] or 0.0 for kind in contenders]
        cells = [f"{verdict(v <= limit)} {shown.format(v)}" for v in values]
        print(f"{'main: ' + label:<45}" + "".join(f"{cell:>22}" for cell in cells))
    for scenario in ("main", "outage", "slow"):
        cells = []
        for kind in contenders:
            found = summary.get((scenario, kind))
            counts = None if found is None else (found["exc"], found["lost"], found["dup"])
            ok = counts == (0, 0, 0)
            cells.append("-" if counts is None else f"{verdict(ok)} {'/'.join(map(str, counts))}")
        if any(cell != "-" for cell in cells):
            label = f"{scenario}: 0 exceptions, 0 lost, 0 dup"
            print(f"{label:<45}" + "".join(f"{cell:>22}" for cell in cells))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def sanity_check(runs: list[Run]) -> None:
    problems = []
    for run in runs:
        r, name = run.result, f"{run.scenario}/{run.contender}"
        if r["steps"] != run.steps:
            problems.append(f"{name} ran {r['steps']} steps")
        wanted = 0 if run.contender == "baseline" else LOGS_PER_STEP * run.steps
        if r["log_ns"]["count"] != wanted:
            problems.append(f"{name} made {r['log_ns']['count']} log() calls")
        if run.distinct is not None and run.distinct > run.expected:
            problems.append(f"{name} stored unexpected events")
    if problems:
        raise SystemExit("benchmark sanity checks failed: " + "; ".join(problems))


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="loop steps (default 20,000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the main scenario (default 3)"
    )
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
    parser.add_argument(
        "--values",
        choices=sorted(VALUES),
        default="float",
        help="what the loop logs: Python floats (default), numpy scalars, or one mapping a step",
    )
    parser.add_argument("--skip-collector", action="store_true", help="only ours")
    parser.add_argument(
        "--system-metrics",
        type=float,
        nargs="?",
        const=10.0,
        help="ours samples system metrics every SECONDS (10 when given alone) during its runs",
    )
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
    parser.add_argument("--flush-timeout", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        run_worker(args)
        return
    if min(args.steps, args.rounds, args.slow_steps, args.outage_steps or 1) < 1:
        parser.error("step and round counts must be at least 1")
    if args.outage_seconds < 0:
        parser.error("--outage-seconds must not be negative")

    pythons = {"baseline": Path(sys.executable), "ours": Path(sys.executable)}
    if not args.skip_collector:
        pythons["collector"] = args.collector_python or ensure_peer_env(
            args.venv, COLLECTOR_PACKAGE, COLLECTOR_VERSION
        )
    contenders = ["ours"] + ([] if args.skip_collector else ["collector"])
    iterations, work_s = calibrate()
    with tempfile.TemporaryDirectory(prefix="training-loop-bench-") as tmp:
        bench = Bench(args, Path(tmp), iterations, pythons)
        try:
            runs = run_all(bench, contenders, rounds=args.rounds, faults=not args.skip_faults)
        except ServerStartError as error:
            raise SystemExit(str(error)) from error
    sanity_check(runs)
    print_report(runs, args.rounds, iterations, work_s)


if __name__ == "__main__":
    main()
