"""Normal requests against ``syvain-metrics serve`` while a slowloris holds N connections.

Each server is a real ``syvain-metrics serve --port 0 --db <file>`` on 127.0.0.1, in one
process and with ``--processes 2`` (``--modes``). For each:

1. Baseline: a normal client asks for ``GET /api/v1/auth/status`` on a fresh connection every
   0.1 s for ``--baseline`` seconds (timeout 10 s per request): latency p50 / p95 / max.
2. Attack: N connections (``--connections``, default 2,000) from this same address each send
   a request line, then one more header byte every ``--every`` seconds (5 s), never ending
   the head; a connection the server ends is opened again at once (``--reopen at-once``, the
   harshest: it keeps the listen queue full), or at its next byte's time (``on-pass``, as
   the original slowloris tool does on each pass).
   Once all N were opened, the normal client asks again for ``--duration`` seconds: requests,
   failures (no answer within 10 s, or the connection closed), latency p50 / p95 / max, the
   share answered within 1 s; and how many slow connections were open at the end, cut by the
   server, opened in all.

Loopback only. The soft limit of open files is raised to the hard one (the attack needs one
descriptor per connection). ``--server-path DIR`` serves the code of another checkout (its
``PYTHONPATH``), e.g. to compare with an earlier commit.

Example::

    python benchmarks/slowloris.py                       # 2,000 connections, both modes
    python benchmarks/slowloris.py --connections 200 --duration 10 --modes 1
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from processes import stop_process

API_KEY = "ak_local_slowloris"
HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 10.0
PAUSE_S = 0.1


@dataclass
class Latencies:
    """Normal requests' outcomes: seconds to the whole answer, and failures by kind."""

    seconds: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        total = len(self.seconds) + sum(self.failures.values())
        if not self.seconds:
            return f"{total} requests, none answered ({self.failures})"
        ordered = sorted(self.seconds)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        within = sum(1 for value in ordered if value <= 1.0)
        failed = ", ".join(f"{count} {kind}" for kind, count in self.failures.items()) or "none"
        return (
            f"{total} requests, failed: {failed}; answered within 1 s: {within}/{total}; "
            f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms"
        )


def ask(port: int, latencies: Latencies) -> None:
    """One normal request on a fresh connection."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        connection.request(
            "GET", "/api/v1/auth/status", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            kind = f"status {response.status}"
            latencies.failures[kind] = latencies.failures.get(kind, 0) + 1
            return
        latencies.seconds.append(time.monotonic() - started)
    except TimeoutError:
        latencies.failures["timeout"] = latencies.failures.get("timeout", 0) + 1
    except (OSError, http.client.HTTPException):
        latencies.failures["closed"] = latencies.failures.get("closed", 0) + 1
    finally:
        connection.close()


def ask_for(port: int, seconds: float) -> Latencies:
    latencies = Latencies()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ask(port, latencies)
        time.sleep(PAUSE_S)
    return latencies


class Slowloris(threading.Thread):
    """``count`` connections sending one header byte each every ``every`` seconds."""

    def __init__(self, port: int, count: int, every: float, *, at_once: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.every, self.at_once = port, count, every, at_once
        self.opened = self.cut = self.refused = 0
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.open_now = 0
        self._selector = selectors.DefaultSelector()  # epoll: past 1,024 descriptors

    def _open(self) -> socket.socket | None:
        try:
            connection = socket.create_connection((HOST, self.port), timeout=2)
            connection.sendall(b"GET /api/v1/auth/status HTTP/1.1\r\nHost: x\r\nX-a: ")
        except OSError:
            self.refused += 1
            return None
        connection.setblocking(False)
        self._selector.register(connection, selectors.EVENT_READ)
        self.opened += 1
        return connection

    def _drop(self, connection: socket.socket) -> None:
        self._selector.unregister(connection)
        connection.close()
        self.cut += 1

    def run(self) -> None:
        connections: list[socket.socket | None] = []
        due: list[float] = []
        for index in range(self.count):
            connections.append(self._open())
            due.append(time.monotonic() + self.every * index / self.count)  # spread the bytes
        self.ready.set()
        try:
            while not self.stopping.is_set():
                # A connection the server answered (408) or ended is readable: drop it.
                for key, _ in self._selector.select(timeout=0.05):
                    dropped = key.fileobj
                    assert isinstance(dropped, socket.socket)
                    index = connections.index(dropped)
                    self._drop(dropped)
                    connections[index] = None
                now = time.monotonic()
                for index, connection in enumerate(connections):
                    if connection is None:
                        if self.at_once or due[index] <= now:
                            due[index] = now + self.every
                            connections[index] = self._open()
                    elif due[index] <= now:
                        due[index] = now + self.every
                        try:
                            connection.send(b"a")
                        except BlockingIOError:
                            pass
                        except OSError:
                            self._drop(connection)
                            connections[index] = None
                self.open_now = sum(1 for connection in connections if connection is not None)
        finally:
            for connection in connections:
                if connection is not None:
                    connection.close()
            self._selector.close()


def start_server(
    directory: Path, processes: int, server_path: str | None
) -> tuple[subprocess.Popen[str], int]:
    environment = dict(os.environ)
    checkout = server_path or str(Path(__file__).resolve().parents[1])
    environment["PYTHONPATH"] = checkout
    command = [sys.executable, "-m", "syvain_metrics.cli", "serve", "--host", HOST, "--port"]
    command += ["0", "--db", str(directory / "metrics.sqlite"), "--api-key", API_KEY]
    if processes > 1:
        command += ["--processes", str(processes)]
    # Run from the checkout too: ``python -m`` puts the working directory first on sys.path.
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment,
        cwd=checkout,
    )
    assert server.stdout is not None
    found = re.search(r"at http://127\.0\.0\.1:(\d+)", server.stdout.readline())
    if found is None:
        stop_process(server, grace=15)
        raise SystemExit("the server did not start")
    threading.Thread(target=server.stdout.read, daemon=True).start()  # keep its pipe drained
    return server, int(found.group(1))


def run_mode(processes: int, options: argparse.Namespace) -> None:
    label = "one process" if processes == 1 else f"--processes {processes}"
    with tempfile.TemporaryDirectory() as directory:
        server, port = start_server(Path(directory), processes, options.server_path)
        try:
            print(f"\n== serve, {label}; slow connections reopened {options.reopen} ==", flush=True)
            print(
                f"baseline ({options.baseline:.0f} s): {ask_for(port, options.baseline).summary()}"
            )
            at_once = options.reopen == "at-once"
            attack = Slowloris(port, options.connections, options.every, at_once=at_once)
            started = time.monotonic()
            attack.start()
            attack.ready.wait()
            print(
                f"slowloris: {options.connections} connections opened in "
                f"{time.monotonic() - started:.1f} s ({attack.refused} refused)",
                flush=True,
            )
            during = ask_for(port, options.duration)
            print(f"under attack ({options.duration:.0f} s): {during.summary()}")
            print(
                f"slow connections: {attack.open_now} open at the end, {attack.cut} ended by "
                f"the server, {attack.opened} opened in all, {attack.refused} refused",
                flush=True,
            )
            attack.stopping.set()
            attack.join(30)
        finally:
            stop_process(server, grace=15)


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"open files: soft limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} (was {soft})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between header bytes")
    parser.add_argument("--baseline", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--modes", default="1,2", help="process counts to serve with")
    parser.add_argument("--reopen", choices=("at-once", "on-pass"), default="at-once")
    parser.add_argument("--server-path", default=None, help="PYTHONPATH of the served code")
    options = parser.parse_args()
    raise_open_files()
    for processes in (int(mode) for mode in options.modes.split(",")):
        run_mode(processes, options)


if __name__ == "__main__":
    main()
