"""A run's end when the service is down or slow: seconds to exit, run() outcome, status.

Two scenarios, each a training job in a child process (the SDK it imports is whatever
``PYTHONPATH`` names, so the same script measures two checkouts), against the local server
served by this process on a database file:

(a) **Ctrl-C with the service down**: the run is created and started, the server is
    stopped, the job logs 100 events inside ``exp.run()`` and gets SIGINT (a real Ctrl-C). Measured: the
    seconds from the signal to the end of the process; then the server is started again on
    the same port and database, ``syvain-metrics sync`` is run, and the status is read.
(b) **A slow service**: every ingest request held ``--delay`` seconds; the job logs
    ``--steps`` steps of 3 metrics in ``exp.run()`` and exits cleanly. Measured: how
    ``run()`` ended (returned, or the exception), its seconds, the process's seconds, the
    status right after the process ended, and, after a ``sync`` with the delay lifted,
    the status and the events stored.

Run (from the repository root; the second line measures another checkout)::

    python benchmarks/lifecycle_outage.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/lifecycle_outage.py
    python benchmarks/lifecycle_outage.py --only ctrl-c   # or: --only slow --steps 2000

Talks only to 127.0.0.1. Prints one line per measure, then the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import syvain_metrics as sm
from syvain_metrics.client.sync import sync_spool
from syvain_metrics.testing import LocalServer

CTRL_C_JOB = """
import os, signal, sys, time
import syvain_metrics as sm
session = sm.Session(KEY, host=URL, spool_dir=SPOOL)
exp = sm.Experiment.create("ctrl-c", session=session)
with exp.run():
    print("ready", flush=True)
    sys.stdin.readline()  # the server is stopped now
    for step in range(100):
        exp.log("loss", 1.0 / (step + 1), step=step)
    print(time.time(), flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
"""

SLOW_JOB = """
import json, time
import syvain_metrics as sm
session = sm.Session(KEY, host=URL, spool_dir=SPOOL)
exp = sm.Experiment.create("slow-service", session=session)
start = time.monotonic()
try:
    with exp.run():
        for step in range(STEPS):
            exp.log("loss", 1.0 / (step + 1), step=step)
            exp.log("acc", step / STEPS, step=step)
            exp.log("lr", 0.001, step=step)
    outcome = "returned"
except Exception as error:
    outcome = f"{type(error).__name__}: {str(error)[:120]}"
print(json.dumps({"outcome": outcome, "run_seconds": round(time.monotonic() - start, 1)}),
      flush=True)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def job(code: str, **values: Any) -> list[str]:
    header = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return [sys.executable, "-c", header + textwrap.dedent(code)]


def read_status(server: LocalServer, slug: str) -> tuple[str, int]:
    with server.session(spool_dir=None) as reader:
        (found,) = sm.Experiment.list(slug=slug, session=reader)
        return found.status, len(found.metrics())


def ctrl_c(folder: Path) -> dict[str, Any]:
    db, spool, port = str(folder / "ctrl-c.sqlite"), str(folder / "spool-ctrl-c"), free_port()
    server = LocalServer(db, port=port)
    key, url = server.api_key, server.url
    child = subprocess.Popen(
        job(CTRL_C_JOB, KEY=key, URL=url, SPOOL=spool),
        cwd=folder,  # not the checkout: `python -c` puts the working directory first
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    server.close()
    child.stdin.write("go\n")
    child.stdin.flush()
    interrupted = float(child.stdout.readline())
    child.wait(timeout=300)
    exit_seconds = time.time() - interrupted
    server = LocalServer(db, api_key=key, port=port)
    try:
        before_sync = read_status(server, "ctrl-c")[0]
        report = sync_spool(Path(spool), api_key=key, host=url)
        status, stored = read_status(server, "ctrl-c")
    finally:
        server.close()
    return {
        "exit_seconds_after_ctrl_c": round(exit_seconds, 1),
        "returncode": child.returncode,
        "status_when_the_process_ended": before_sync,
        "status_after_sync": status,
        "events_stored": stored,
        "sync": report.summary(),
    }


def slow(folder: Path, steps: int, delay: float) -> dict[str, Any]:
    db, spool = str(folder / "slow.sqlite"), str(folder / "spool-slow")
    with LocalServer(db) as server:
        server.faults.delay("ingest_metrics", seconds=delay, times=10**9)
        start = time.monotonic()
        done = subprocess.run(
            job(SLOW_JOB, KEY=server.api_key, URL=server.url, SPOOL=spool, STEPS=steps),
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        process_seconds = time.monotonic() - start
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        status, stored = read_status(server, "slow-service")
        server.faults.clear()
        report = sync_spool(Path(spool), api_key=server.api_key, host=server.url)
        after_status, after_stored = read_status(server, "slow-service")
    return {
        **figures,
        "process_seconds": round(process_seconds, 1),
        "status_when_the_process_ended": status,
        "events_stored_when_the_process_ended": stored,
        "status_after_sync": after_status,
        "events_stored_after_sync": after_stored,
        "events_logged": 3 * steps,
        "sync": report.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["ctrl-c", "slow"])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--delay", type=float, default=2.0)
    args = parser.parse_args()
    print(f"SDK: {Path(sm.__file__).parent} (PYTHONPATH={os.environ.get('PYTHONPATH', '')})")
    # The jobs must import the same SDK: the working directory comes first for `python -c`.
    os.environ["PYTHONPATH"] = str(Path(sm.__file__).parent.parent)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "ctrl-c"):
            results["ctrl_c_service_down"] = ctrl_c(Path(folder))
            print("Ctrl-C, service down:", results["ctrl_c_service_down"])
        if args.only in (None, "slow"):
            results["slow_service"] = slow(Path(folder), args.steps, args.delay)
            print(f"slow service ({args.delay:g} s/request):", results["slow_service"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
