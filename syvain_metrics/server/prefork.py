"""Serving from several processes: ``syvain-metrics serve --db FILE --processes N`` on gunicorn.

One process answers requests under one interpreter lock: clients writing at once share one
core's worth of Python. With ``--processes N``, gunicorn's arbiter (this process) forks N
worker processes that accept connections from the one listening socket, each answering with
``--threads`` threads (:class:`~syvain_metrics.server.guarded_worker.GuardedThreadWorker`) and
its own :class:`~syvain_metrics.server.store.Store` (``shared=True``) on the same database
file. Write transactions take turns across the processes and stay atomic; readers never wait
(WAL); what one request must know of others still running is where every worker sees it: an
``Idempotency-Key`` in progress in :class:`~syvain_metrics.server.idempotency.RunningElsewhere`,
dashboard logins in the database. API keys reach the workers in the forked memory, never on
a command line.

gunicorn starts a worker in the place of one that ended, kills and replaces one that stopped
answering for :data:`WORKER_TIMEOUT_S`, and stops them gracefully. Ctrl-C and SIGTERM both
stop gracefully (each worker finishes its requests, up to :data:`WORKER_STOP_GRACE_S`); the
exit status is that of the first signal (0 after Ctrl-C, 143 after SIGTERM).

Example:
    >>> gunicorn_missing() is None  # gunicorn is installed here (the ``serve`` extra)
    True
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from syvain_metrics import signal_guard
from syvain_metrics.server.app import MetricsApp
from syvain_metrics.server.store import Store
from syvain_metrics.signal_guard import SignalGuard, Stopped, held, stage

WORKER_START_TIMEOUT_S = 60.0
"""How long the server waits for its workers to open the database before it prints its
address (the address is bound already: a connection made meanwhile waits in the queue)."""
WORKER_STOP_GRACE_S = 10
"""How long a stopping worker may take to finish the requests it is answering."""
WORKER_TIMEOUT_S = 30
"""A worker whose serving loop has not run for this long (stopped, or stuck) is killed and
replaced (gunicorn's ``timeout``); its connections end, and their clients retry."""
BACKLOG = 2048
"""Connections waiting to be accepted, past which the system refuses new ones."""


def gunicorn_missing() -> str | None:
    """Why ``--processes`` cannot run here (gunicorn not installed, or no ``fork``), or
    ``None``."""
    if not hasattr(os, "fork"):
        return "Serving from several processes needs a POSIX system (gunicorn)."
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return (
            "Serving from several processes needs gunicorn: "
            'pip install "syvain-metrics[serve]" (or serve with --processes 1)'
        )
    return None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: any free one); ``OSError`` if it cannot be bound."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return socket.create_server(address, family=family, backlog=BACKLOG)


def serve_processes(
    listener: socket.socket,
    db: str,
    api_keys: Sequence[str],
    *,
    threads: int,
    processes: int,
    trusted_proxies: Sequence[str],
    announce: Callable[[], None],
    guard: SignalGuard | None,
) -> None:
    """Run gunicorn's arbiter on ``listener`` until Ctrl-C or SIGTERM; ``announce`` is called
    once every worker is ready. Returns in this process only (a worker ends with ``os._exit``).
    """
    from gunicorn.app.base import BaseApplication

    from syvain_metrics.server.guarded_worker import Balance, GuardedThreadWorker
    from syvain_metrics.server.proxies import TrustedProxies
    from syvain_metrics.server.runner import SERVE_SWITCH_INTERVAL_S, connection_limit

    keys = tuple(api_keys)
    proxies = tuple(trusted_proxies)
    ready_read, ready_write = os.pipe()
    os.set_blocking(ready_read, False)
    os.set_blocking(ready_write, False)
    GuardedThreadWorker.trusted_proxies = TrustedProxies(proxies)
    balance = GuardedThreadWorker.balance = Balance(processes)

    def pre_fork(arbiter: Any, worker: Any) -> None:
        # The slot of a worker that ended is taken by the one started in its place.
        taken = {getattr(running, "slot", -1) for running in arbiter.WORKERS.values()}
        worker.slot = balance.free_slot(taken)

    def post_fork(_: Any, worker: Any) -> None:
        # Out of the terminal's process group: Ctrl-C reaches the arbiter alone, which
        # stops its workers gracefully.
        os.setpgid(0, 0)
        signal_guard.forget_after_fork()
        worker_guard = SignalGuard().install()
        try:
            stage("worker-begin")
        except Stopped:
            sys.stderr.flush()
            os._exit(0)
        worker_guard.hand_over()  # gunicorn's worker installs its own handlers next

    def post_worker_init(worker: Any) -> None:
        sys.setswitchinterval(SERVE_SWITCH_INTERVAL_S)  # see its text: this process serves
        stage("worker-ready")
        # The arbiter reads these at start-up, then drains them: a full pipe is fine.
        with contextlib.suppress(OSError):
            os.write(ready_write, b"r")

    def worker_exit(_: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        if isinstance(app, MetricsApp):
            app.close()

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = {
                "bind": [_bound_address(listener)],
                "workers": processes,
                "worker_class": "syvain_metrics.server.guarded_worker.GuardedThreadWorker",
                "threads": threads,
                "worker_connections": connection_limit(),
                "keepalive": _idle_timeout(),
                "timeout": WORKER_TIMEOUT_S,
                "graceful_timeout": WORKER_STOP_GRACE_S,
                "limit_request_line": 8190,  # gunicorn's largest, with a limit
                "limit_request_fields": 200,
                "limit_request_field_size": 65536,
                "loglevel": "warning",
                "errorlog": "-",
                "proc_name": "syvain-metrics",
                # The application believes X-Forwarded-* from its trusted proxies only.
                "forwarded_allow_ips": "",
                "forwarder_headers": "",
                "secure_scheme_headers": {},
                "pre_fork": pre_fork,
                "post_fork": post_fork,
                "post_worker_init": post_worker_init,
                "worker_exit": worker_exit,
            }
            for name, value in settings.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            store = Store(db, shared=True)
            store.use_api_keys(keys)
            return MetricsApp(store, trusted_proxies=proxies)

    arbiter = _arbiter_class()(Application())
    arbiter.guard = guard
    arbiter.ready_read = ready_read
    arbiter.announce = announce
    arbiter.LISTENERS = [_gunicorn_socket(listener, arbiter)]
    pid = os.getpid()
    try:
        arbiter.run()
    except SystemExit:  # the arbiter's halt(), or a worker's end
        if os.getpid() != pid:
            _end_worker(0)
    except BaseException:
        if os.getpid() != pid:
            _end_worker(1)
        raise
    finally:
        if os.getpid() == pid:
            os.close(ready_read)
            os.close(ready_write)


def _end_worker(status: int) -> None:
    # A worker leaving gunicorn's code: nothing of the arbiter's is its to clean up.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _idle_timeout() -> int:
    from syvain_metrics.server.limits import IDLE_TIMEOUT_S

    return IDLE_TIMEOUT_S


def _bound_address(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _gunicorn_socket(listener: socket.socket, arbiter: Any) -> Any:
    from gunicorn.sock import TCP6Socket, TCPSocket

    kind = TCP6Socket if listener.family == socket.AF_INET6 else TCPSocket
    gunicorn_socket = kind(listener.getsockname(), arbiter.cfg, arbiter.log, fd=listener.detach())
    return gunicorn_socket


def _arbiter_class() -> type:
    import signal

    from gunicorn.arbiter import Arbiter

    class ServeArbiter(Arbiter):  # type: ignore[misc]
        """gunicorn's arbiter with ``serve``'s stages, its signals recorded for the exit
        status, Ctrl-C stopping as gracefully as SIGTERM, and the address printed once every
        worker is ready."""

        guard: SignalGuard | None
        ready_read: int
        announce: Callable[[], None]
        announced = False

        def _stopping(self) -> bool:
            return self.guard is not None and self.guard.received is not None

        def init_signals(self) -> None:
            super().init_signals()
            if self.guard is not None:
                self.guard.hand_over()
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, self._stop_signal)

        def _stop_signal(self, signum: int, frame: Any) -> None:
            # Only the first one counts: a second one while stopping changes nothing.
            if self.guard is None or self.guard.note(signum):
                self.SIG_QUEUE.put_nowait(signum)

        def handle_int(self) -> None:
            raise StopIteration  # graceful, as after SIGTERM

        def spawn_worker(self) -> Any:
            if self._stopping():
                return None
            pid = super().spawn_worker()
            stage("worker-started")
            return pid

        def manage_workers(self) -> None:
            super().manage_workers()
            if not self.announced:
                self.announced = True
                if self._wait_ready() and not self._stopping():
                    stage("listening")
                    if not self._stopping():
                        with held():
                            self.announce()
                        stage("serving")
            _drain(self.ready_read)

        def _wait_ready(self) -> bool:
            ready = 0
            deadline = time.monotonic() + WORKER_START_TIMEOUT_S
            while ready < self.num_workers and not self._stopping():
                if time.monotonic() > deadline:
                    self.log.error("The workers did not start in time.")
                    return False
                select.select([self.ready_read], [], [], 0.1)
                ready += len(_drain(self.ready_read))
                self.reap_workers()  # a worker that failed to start stops the server
            return not self._stopping()

        def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
            with held():  # a second signal does not cut the clean-up short
                stage("stopping")
                super().halt(reason, exit_status)

    return ServeArbiter


def _drain(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""
