"""Serving from several processes: ``syvain-metrics serve --db FILE --processes N``.

One process answers requests under one interpreter lock: clients writing at once share one
core's worth of Python, and the thread that holds the write lock waits for that lock between
its calls into SQLite. With ``--processes N`` the first process only accepts connections and
passes each, in turn, to one of N worker processes (over a Unix socket); each worker answers
its connections with its own threads and its own
:class:`~syvain_metrics.server.store.Store` (``shared=True``) on the same database file.
Write transactions take turns across the processes and stay atomic; readers never wait (WAL);
what one request must know of others still running is where every worker sees it: an
``Idempotency-Key`` in progress in :class:`~syvain_metrics.server.idempotency.RunningElsewhere`,
dashboard logins in the database.

A worker that ends unexpectedly is started again at the next connection; the connections it
held are closed, so their clients retry as after any dropped connection. A worker that stops
answering (stopped, or stuck) is passed no new connections until it answers again.

Example:
    >>> socket_pair_supported()  # passing connections needs Unix sockets
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from syvain_metrics.signal_guard import SignalGuard, Stopped, held, stage

WORKER_START_TIMEOUT_S = 60.0
"""How long the server waits for a worker to open the database and say it is ready."""
WORKER_STOP_GRACE_S = 10.0
"""How long a stopping worker may take to finish the requests it is answering."""
HANDOVER_ACK_TIMEOUT_S = 2.0
"""How long the dealer waits for a worker to confirm it took a connection. A connection
passed to a worker that is ending is not confirmed (the worker's socket closes instead) and
goes to the next worker. One not confirmed in time is closed (passing it on would give one
connection two readers), so its client sees a closed connection and may retry; the worker,
stopped or stuck, is passed no more connections until it has confirmed every one it was
passed."""


def socket_pair_supported() -> bool:
    """Whether this platform can pass an accepted connection to another process."""
    return hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to answer like the server that started it (sent on the
    worker's stdin as one JSON line).

    Example:
        >>> settings = WorkerSettings("metrics.sqlite", ("ak_local_demo",), 8, 5)
        >>> WorkerSettings.from_json(settings.to_json()) == settings
        True
    """

    db: str
    api_keys: tuple[str, ...] = field(repr=False)  # secrets stay out of reprs and logs
    threads: int = 8
    fd: int = -1
    connections: int | None = None
    """Connections the worker holds at most (``None``: :func:`~.runner.connection_limit`)."""
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies whose ``X-Forwarded-*`` headers are believed."""

    def to_json(self) -> str:
        """The settings as one line of JSON."""
        return json.dumps({**dataclasses.asdict(self), "api_keys": list(self.api_keys)})

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        """The settings :meth:`to_json` wrote."""
        raw = json.loads(text)
        return cls(
            **{
                **raw,
                "api_keys": tuple(raw["api_keys"]),
                "trusted_proxies": tuple(raw.get("trusted_proxies", ())),
            }
        )


class Worker:
    """One worker process and the Unix socket its connections are passed over.

    Example:
        >>> worker = Worker("metrics.sqlite", ["ak_local_demo"], threads=8)  # doctest: +SKIP
        >>> worker.wait_ready(); worker.hand_over(connection)  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        db: str,
        api_keys: Sequence[str],
        threads: int,
        connections: int | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        settings = WorkerSettings(
            db, tuple(api_keys), threads, theirs.fileno(), connections, tuple(trusted_proxies)
        )
        self.channel = ours
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syvain_metrics.server.processes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(theirs.fileno(),),
            text=True,
            # Out of the terminal's process group: Ctrl-C reaches the server alone, which
            # stops its workers (one interrupted while importing would print a traceback).
            start_new_session=True,
        )
        theirs.close()
        self.unconfirmed = 0
        """Connections passed to the worker and not confirmed in time."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        # The keys travel on a pipe, never on a command line other users can read.
        self.process.stdin.write(settings.to_json() + "\n")
        self.process.stdin.close()
        self._stdout: IO[str] = self.process.stdout

    def wait_ready(self) -> None:
        """Block until the worker has opened its store; raise if it ended instead."""
        line = _read_line(self._stdout, WORKER_START_TIMEOUT_S)
        if line.strip() != "ready":
            self.stop()
            raise OSError(f"a server worker did not start: {line.strip() or 'no answer'}")

    @property
    def alive(self) -> bool:
        """Whether the worker process is still running."""
        return self.process.poll() is None

    def answering(self) -> bool:
        """Whether the worker has confirmed every connection passed to it (confirmations
        that came late are read here, without waiting)."""
        while self.unconfirmed:
            try:
                self.channel.setblocking(False)
                late = self.channel.recv(self.unconfirmed)
            except OSError:  # none yet (BlockingIOError), or the worker is gone
                return False
            if not late:
                return False
            self.unconfirmed -= len(late)
        return True

    def hand_over(self, connection: socket.socket) -> bool:
        """Pass an accepted connection to the worker; ``False`` if it did not take it (it is
        gone, has not answered since :data:`HANDOVER_ACK_TIMEOUT_S` passed, or has no room).
        ``True`` also when it did not confirm in time: the connection is then closed."""
        if not self.answering():
            return False
        try:
            self.channel.settimeout(HANDOVER_ACK_TIMEOUT_S)
            socket.send_fds(self.channel, [b"c"], [connection.fileno()])
        except OSError:  # not sent (gone, or so far behind that its socket is full)
            return False
        try:
            return self.channel.recv(1) == b"k"
        except TimeoutError:
            self.unconfirmed += 1
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)  # its client sees the end, not a hang
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """Ask the worker to finish (SIGTERM), then wait; kill it if it does not."""
        self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WORKER_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stdout.close()


def _read_line(stream: IO[str], timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


class Dealer:
    """Listens on ``host:port`` (port 0: any free one) and passes each connection to the next
    of ``count`` worker processes, started on the database file ``db``.

    Call :meth:`run` to serve, :meth:`stop` to end (it stops the workers too). Each worker holds
    ``connections`` at most (default :func:`~.runner.connection_limit`) and makes room for a new
    one as :mod:`~syvain_metrics.server.connections` says; a connection no worker can take
    (every connection of each is answering a request, or the worker stopped answering) is
    closed at once.

    Example:
        >>> dealer = Dealer("127.0.0.1", 0, "metrics.sqlite", ["ak_local_demo"], 8, 2)  # doctest: +SKIP
        >>> try:  # doctest: +SKIP
        ...     dealer.run()  # until Ctrl-C
        ... finally:
        ...     dealer.stop()
    """

    def __init__(
        self,
        host: str,
        port: int,
        db: str,
        api_keys: Sequence[str],
        threads: int,
        count: int,
        *,
        connections: int | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        if not socket_pair_supported():
            raise ValueError("Serving from several processes needs a POSIX system.")
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self.listener = socket.create_server(address, family=family, backlog=1024)
        self.effective_host, self.effective_port = self.listener.getsockname()[:2]
        self._start = (db, tuple(api_keys), threads, connections, tuple(trusted_proxies))
        self.workers: list[Worker] = []
        self._next = 0
        self._stopping = False
        try:
            for _ in range(count):
                with held():  # a started worker is always in the list that stop() stops
                    self.workers.append(Worker(*self._start))
                stage("worker-started")
            for worker in self.workers:
                worker.wait_ready()
        except BaseException:
            self.stop()
            raise

    def _worker(self) -> Worker:
        index = self._next % len(self.workers)
        self._next += 1
        worker = self.workers[index]
        if not worker.alive:
            print(
                f"syvain-metrics serve: worker {worker.process.pid} ended "
                f"(status {worker.process.returncode}); starting another",
                file=sys.stderr,
                flush=True,
            )
            worker.stop()
            with held():  # a started worker is always in the list that stop() stops
                worker = self.workers[index] = Worker(*self._start)
            worker.wait_ready()
        return worker

    def run(self) -> None:
        """Deal connections until :meth:`stop` (or Ctrl-C)."""
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                if self._stopping:
                    return
                time.sleep(0.05)  # out of descriptors, say: do not spin
                continue
            with connection:  # closed here once a worker has its own copy, or none took it
                try:
                    for _ in range(len(self.workers)):
                        if self._worker().hand_over(connection):
                            break
                except OSError as error:  # a worker could not be started again
                    print(f"syvain-metrics serve: {error}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Stop accepting, then stop every worker (each finishes its requests first)."""
        with held():  # a signal while stopping does not leave a worker running
            self._stopping = True
            self.listener.close()
            for worker in self.workers:
                worker.stop()


# -- the worker side ------------------------------------------------------------------------


def run_worker(settings: WorkerSettings) -> None:
    """Answer the connections passed over ``settings.fd`` until the server stops (SIGTERM, or
    the dealer's end of the socket closing). Runs as ``python -m
    syvain_metrics.server.processes`` with the settings on stdin, under a
    :class:`~syvain_metrics.signal_guard.SignalGuard` (a signal before "ready" ends it
    cleanly too).

    Example:
        >>> run_worker(WorkerSettings.from_json(sys.stdin.readline()))  # doctest: +SKIP
    """
    from waitress import wasyncore

    from syvain_metrics.server.app import MetricsApp
    from syvain_metrics.server.runner import SERVE_SWITCH_INTERVAL_S, make_server, stop_server
    from syvain_metrics.server.store import Store

    store = Store(settings.db, shared=True)
    store.use_api_keys(settings.api_keys)
    app = MetricsApp(store, trusted_proxies=settings.trusted_proxies)
    # Its own listening socket stays unused: connections come from the dealer.
    server = make_server(
        app, "127.0.0.1", 0, threads=settings.threads, connections=settings.connections
    )
    server.accepting = False
    channel = socket.socket(fileno=settings.fd)

    class Handoff(wasyncore.dispatcher):  # type: ignore[misc]
        def handle_read(self) -> None:
            try:
                _, fds, _, _ = socket.recv_fds(channel, 16, 16)
            except BlockingIOError:
                return
            if not fds:  # the dealer is gone
                self.close()
                raise KeyboardInterrupt
            for fd in fds:
                connection = socket.socket(fileno=fd)
                try:
                    peer = connection.getpeername()
                    server.set_socket_options(connection)
                except OSError:
                    connection.close()  # the client left before the connection was passed
                    channel.sendall(b"k")
                    continue
                # Taken: the dealer may close its copy. Else (every connection of this worker
                # is answering a request) the dealer offers it to the next worker.
                taken = server.take(connection, server.fix_addr(peer))
                channel.sendall(b"k" if taken else b"f")

        def writable(self) -> bool:
            return False

    Handoff(channel, map=server._map)

    sys.setswitchinterval(SERVE_SWITCH_INTERVAL_S)
    try:
        stage("worker-ready")
        print("ready", flush=True)
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        # The dealer's end closing and its SIGTERM both stop us: the second must not cut
        # the first's clean stop short.
        with held():
            stop_server(server, None, app.faults)
            store.close()


def _worker_main() -> int:
    guard = SignalGuard().install()
    try:
        stage("worker-begin")
        run_worker(WorkerSettings.from_json(sys.stdin.readline()))
    except Stopped:
        pass
    return guard.exit_status


if __name__ == "__main__":
    os._exit(_worker_main())
