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

import collections
import contextlib
import dataclasses
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from syvain_metrics.server.signal_guard import SignalGuard, Stopped, held, stage

WORKER_START_TIMEOUT_S = 60.0
"""How long the server waits for a worker to open the database and say it is ready."""
WORKER_STOP_GRACE_S = 10.0
"""How long a stopping worker may take to finish the requests it is answering."""
ACCEPTS_PER_TURN = 64
"""Connections the dealer accepts before it reads the workers' confirmations again."""
AWAITING_PER_WORKER = 64
"""Connections passed to a worker and not confirmed yet past which the dealer accepts no
more until one is: they wait in the listen queue rather than be closed for a full socket."""
HANDOVER_ACK_TIMEOUT_S = 2.0
"""How long a worker may take to confirm a connection passed to it. The dealer does not wait
for confirmations: it passes a connection and goes on. A connection passed to a worker that is
ending is not confirmed (the worker's socket closes instead) and goes to another worker. One
not confirmed in time is closed (passing it on would give one connection two readers), so its client sees a closed
connection and may retry; the worker, stopped or stuck, is passed no more connections until
it has confirmed every one it was passed."""


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


@dataclass
class Passed:
    """A connection passed to a worker and not confirmed yet.

    Example:
        >>> with socket.socket() as connection:
        ...     Passed(connection, sent=0.0).tried
        ()
    """

    connection: socket.socket
    sent: float
    """When it was passed (:func:`time.monotonic`)."""
    tried: tuple[Worker, ...] = ()
    """The workers it was passed to, the last one included."""


class Worker:
    """One worker process and the Unix socket its connections are passed over.

    Example:
        >>> worker = Worker("metrics.sqlite", ["ak_local_demo"], threads=8)  # doctest: +SKIP
        >>> worker.wait_ready(); worker.pass_on(Passed(connection, time.monotonic()))  # doctest: +SKIP
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
        self.channel.setblocking(False)  # the dealer never waits for one worker
        self.awaiting: collections.deque[Passed] = collections.deque()
        """Connections passed and not confirmed yet, oldest first (confirmations come in
        the order the connections were passed)."""
        self.missed = 0
        """Connections closed because the worker did not confirm them in time, and whose
        confirmations have not come yet."""
        self.ended = False
        """Its end of the socket closed: the worker is ending."""
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

    @property
    def answering(self) -> bool:
        """Whether the worker may be passed connections: running, and it confirmed in time
        every connection passed to it (or has confirmed, late, each one it missed)."""
        return not self.ended and self.missed == 0

    def pass_on(self, passed: Passed) -> bool:
        """Pass a connection to the worker without waiting for its confirmation; ``False``
        if it could not be sent (the worker is gone, or so far behind that its socket is
        full)."""
        try:
            socket.send_fds(self.channel, [b"c"], [passed.connection.fileno()])
        except OSError:
            return False
        passed.tried += (self,)
        self.awaiting.append(passed)
        return True

    def read_confirmations(self) -> list[Passed]:
        """Read the confirmations that came, without waiting; the dealer closes its copy of
        each connection taken. Returned: the connections the worker did not take, to be
        offered to another worker (it had no room for them, or it is ending)."""
        refused: list[Passed] = []
        while not self.ended:
            try:
                answers = self.channel.recv(4096)
            except BlockingIOError:
                break
            except OSError:  # gone with connections still on its socket (ECONNRESET)
                answers = b""
            if not answers:  # the worker is ending: it confirmed all it took
                self.ended = True
                refused += self.awaiting
                self.awaiting.clear()
            for answer in answers:
                if self.missed:  # already closed
                    self.missed -= 1
                elif self.awaiting:
                    passed = self.awaiting.popleft()
                    if answer == ord("k"):
                        passed.connection.close()
                    else:
                        refused.append(passed)
        return refused

    def close_unconfirmed(self, now: float) -> None:
        """Close the connections passed :data:`HANDOVER_ACK_TIMEOUT_S` or more before
        ``now`` and not confirmed, so their clients see them end rather than hang."""
        while self.awaiting and now - self.awaiting[0].sent >= HANDOVER_ACK_TIMEOUT_S:
            _cut(self.awaiting.popleft().connection)
            self.missed += 1

    def stop(self) -> None:
        """Ask the worker to finish (SIGTERM), then wait; kill it if it does not."""
        self.ended = True
        self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WORKER_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stdout.close()


def _cut(connection: socket.socket) -> None:
    """End a connection for every process holding it (a worker may have it, unread, on its
    socket), then close this copy."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def _read_line(stream: IO[str], timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


class Dealer:
    """Listens on ``host:port`` (port 0: any free one) and passes each connection to one of
    ``count`` worker processes, started on the database file ``db``: the one awaiting fewest
    confirmations, taking turns among equals. It never waits for a worker: confirmations are
    read as they come, between connections.

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
        self.listener.setblocking(False)
        self.effective_host, self.effective_port = self.listener.getsockname()[:2]
        self._start = (db, tuple(api_keys), threads, connections, tuple(trusted_proxies))
        self.workers: list[Worker] = []
        self._next = 0
        self._stopping = False
        self._selector = selectors.DefaultSelector()
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
        for worker in self.workers:
            self._selector.register(worker.channel, selectors.EVENT_READ, worker)
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._accepting = True

    def run(self) -> None:
        """Deal connections until :meth:`stop` (or Ctrl-C)."""
        try:
            while not self._stopping:
                self._turn()
        except (OSError, ValueError):
            if not self._stopping:
                raise
            # stop() from another thread closed what this loop was using.
        finally:
            for worker in self.workers:  # each took or will never take its copy
                for passed in worker.awaiting:
                    passed.connection.close()

    def _turn(self) -> None:
        """Read the confirmations that came, close the connections not confirmed in time,
        then deal the connections waiting to be accepted."""
        refused: list[Passed] = []
        for key, _ in self._selector.select(self._wait()):
            if isinstance(key.data, Worker):
                refused += key.data.read_confirmations()
                if key.data.ended:  # its socket stays readable: stop watching it
                    self._selector.unregister(key.fileobj)
        now = time.monotonic()
        for worker in self.workers:
            worker.close_unconfirmed(now)
        for passed in refused:
            self._deal(passed)
        if not self._accept_while(self._room()):
            return
        # A few at a time: confirmations are read in between, so none waits long.
        for _ in range(ACCEPTS_PER_TURN):
            if not self._room():
                return
            try:
                connection, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:
                if not self._stopping:
                    time.sleep(0.05)  # out of descriptors, say: do not spin
                return
            self._replace_ended()
            self._deal(Passed(connection, time.monotonic()))

    def _room(self) -> bool:
        """Whether a connection accepted now would be passed at once (or closed at once: no
        worker is answering)."""
        answering = [worker for worker in self.workers if worker.answering]
        return not answering or any(
            len(worker.awaiting) < AWAITING_PER_WORKER for worker in answering
        )

    def _accept_while(self, room: bool) -> bool:
        """Watch the listener only while there is room (it stays readable while full)."""
        if room != self._accepting:
            if room:
                self._selector.register(self.listener, selectors.EVENT_READ)
            else:
                self._selector.unregister(self.listener)
            self._accepting = room
        return room

    def _wait(self) -> float:
        """Seconds until a confirmation is due (at most 1, to see :meth:`stop` from another
        thread)."""
        due = [worker.awaiting[0].sent for worker in self.workers if worker.awaiting]
        if not due:
            return 1.0
        return max(0.0, min(1.0, min(due) + HANDOVER_ACK_TIMEOUT_S - time.monotonic()))

    def _deal(self, passed: Passed) -> None:
        """Pass a connection to the answering worker awaiting fewest confirmations that has
        not had it yet; close it if none takes it."""
        start = self._next % len(self.workers)
        self._next += 1
        turns = self.workers[start:] + self.workers[:start]
        for worker in sorted(turns, key=lambda worker: len(worker.awaiting)):  # stable
            if worker.answering and worker not in passed.tried:
                passed.sent = time.monotonic()
                if worker.pass_on(passed):
                    return
        passed.connection.close()

    def _replace_ended(self) -> None:
        """Start a worker in the place of each one that ended, and deal again the
        connections it did not take."""
        untaken: list[Passed] = []
        for index, worker in enumerate(self.workers):
            if worker.alive:
                continue
            print(
                f"syvain-metrics serve: worker {worker.process.pid} ended "
                f"(status {worker.process.returncode}); starting another",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(KeyError, ValueError):  # unwatched once its socket closed
                self._selector.unregister(worker.channel)
            untaken += worker.read_confirmations()  # up to its end
            worker.stop()
            try:
                with held():  # a started worker is always in the list that stop() stops
                    worker = self.workers[index] = Worker(*self._start)
                worker.wait_ready()
            except OSError as error:  # tried again at the next connection
                print(f"syvain-metrics serve: {error}", file=sys.stderr, flush=True)
                continue
            self._selector.register(worker.channel, selectors.EVENT_READ, worker)
        for passed in untaken:
            self._deal(passed)

    def stop(self) -> None:
        """Stop accepting, then stop every worker (each finishes its requests first)."""
        with held():  # a signal while stopping does not leave a worker running
            self._stopping = True
            self.listener.close()
            for worker in self.workers:
                worker.stop()
            self._selector.close()


# -- the worker side ------------------------------------------------------------------------


def run_worker(settings: WorkerSettings) -> None:
    """Answer the connections passed over ``settings.fd`` until the server stops (SIGTERM, or
    the dealer's end of the socket closing). Runs as ``python -m
    syvain_metrics.server.processes`` with the settings on stdin, under a
    :class:`~syvain_metrics.server.signal_guard.SignalGuard` (a signal before "ready" ends it
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
            # Several at a time, as the server takes connections from its own listener.
            for _ in range(server.accepts_per_pass):
                try:
                    _, fds, _, _ = socket.recv_fds(channel, 16, 16)
                except BlockingIOError:
                    return
                if not fds:  # the dealer is gone
                    self.close()
                    raise KeyboardInterrupt
                self.take(fds)

        def take(self, fds: list[int]) -> None:
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
