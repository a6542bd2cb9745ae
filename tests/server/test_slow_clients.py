"""Slow clients cannot hold the local server: deadlines for a request's head and body, a
limit of connections per client address, and workers that stopped answering skipped.

Shown against real servers on 127.0.0.1, with the limits scaled down: a head or a body sent
a byte at a time is cut at its deadline (a 408 in the envelope, then the connection ends),
blank lines do not hold a connection either, a kept-alive connection still waits for the
idle timeout; a client at its limit loses its connection that waited longest, not its new
one; a slowloris of 150 connections leaves another address's requests answered first time
and the SDK's calls from its own address served, in one process, and normal requests served
with two gunicorn worker processes (whose heads are gathered by each worker's poller); a
stopped worker is passed no new connections, and a client at its limit in a worker loses
its connection that waited longest.

Timings only bound how long a test may wait (a hang detector); what is asserted is what the
server does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import syvain_metrics as sm
from syvain_metrics.server import MetricsApp, Store
from syvain_metrics.server.runner import make_server, stop_server

API_KEY = "ak_local_slow_clients"
STATUS_HEAD = f"GET /api/v1/auth/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
HANG = 15.0
"""Longest wait for anything the server should do at once or within a deadline of ~1-2 s."""


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[tuple[str, int]]:
    store = Store()
    store.use_api_keys([API_KEY])
    app = MetricsApp(store)
    server = make_server(app, "127.0.0.1", 0, threads=4, **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(server.effective_port)
    finally:
        stop_server(server, thread, app.faults)
        store.close()


def answered(address: tuple[str, int]) -> int:
    """The status of one auth-status request on a fresh connection."""
    url = f"http://{address[0]}:{address[1]}/api/v1/auth/status"
    headers = {"Authorization": f"Bearer {API_KEY}", "Connection": "close"}
    return requests.get(url, headers=headers, timeout=HANG).status_code


def ended(connection: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before ending the connection (``None``: still open)."""
    connection.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data
    except TimeoutError:
        return None


def trickle(connection: socket.socket, data: bytes, every: float) -> tuple[int, bytes | None]:
    """Send ``data`` one byte every ``every`` seconds until the server answers or ends the
    connection: how many bytes went out, and what came back (``None``: all sent, no answer)."""
    for sent in range(len(data)):
        readable, _, _ = select.select([connection], [], [], every)
        if readable:
            return sent, ended(connection, HANG)
        try:
            connection.send(data[sent : sent + 1])
        except OSError:
            return sent, ended(connection, HANG)
    return len(data), None


def status_over(connection: socket.socket) -> bytes:
    """Ask for the auth status on a kept-alive connection: the whole answer."""
    connection.sendall(STATUS_HEAD.encode() + b"\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def check_timed_out(answer: bytes | None) -> None:
    assert answer is not None, "the whole request went out and was never cut"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    envelope = json.loads(body)
    assert envelope["data"] is None
    assert envelope["error"]["details"] == "code=request_timeout"


def test_a_head_sent_a_byte_at_a_time_is_cut_at_its_deadline() -> None:
    head = (STATUS_HEAD + "X-Padding: " + "a" * 60 + "\r\n\r\n").encode()
    with (
        serving(head_timeout=1, idle_timeout=30) as address,
        socket.create_connection(address, timeout=HANG) as connection,
    ):
        opened = time.monotonic()
        sent, answer = trickle(connection, head, every=0.1)  # 10 bytes a second
        lived = time.monotonic() - opened
    check_timed_out(answer)
    assert sent < len(head)
    assert lived >= 1.0  # not before its deadline


def test_blank_lines_do_not_hold_a_connection() -> None:
    with (
        serving(head_timeout=1, idle_timeout=30) as address,
        socket.create_connection(address, timeout=HANG) as connection,
    ):
        sent, answer = trickle(connection, b"\r\n" * 100, every=0.1)
    check_timed_out(answer)
    assert sent < 200


def test_a_silent_new_connection_is_cut_at_the_head_deadline() -> None:
    with (
        serving(head_timeout=1, idle_timeout=30) as address,
        socket.create_connection(address, timeout=HANG) as connection,
    ):
        check_timed_out(ended(connection, HANG))


def test_a_body_sent_a_byte_at_a_time_is_cut_at_its_deadline() -> None:
    body = b'{"name": "' + b"b" * 80 + b'"}'
    head = (
        f"POST /api/v1/folders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with (
        serving(head_timeout=5, body_timeout=1, idle_timeout=30) as address,
        socket.create_connection(address, timeout=HANG) as connection,
    ):
        connection.sendall(head)
        sent, answer = trickle(connection, body, every=0.1)
    check_timed_out(answer)
    assert sent < len(body)


def test_a_kept_alive_connection_waits_for_the_idle_timeout_not_the_head_deadline() -> None:
    request = (STATUS_HEAD + "\r\n").encode()
    with (
        serving(head_timeout=1, idle_timeout=30) as address,
        socket.create_connection(address, timeout=HANG) as connection,
    ):
        connection.sendall(request)
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert ended(connection, 3.0) is None  # past the head deadline: still open
        connection.sendall(request)
        assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_a_client_at_its_limit_loses_its_connection_that_waited_longest() -> None:
    with serving(per_client=3, idle_timeout=30) as address:
        waiting = [socket.create_connection(address, timeout=HANG) for _ in range(3)]
        try:
            for connection in waiting:  # each has begun a request it does not finish
                connection.sendall(b"GET / HTTP/1.1\r\n")
                time.sleep(0.05)  # accepted one after the other
            assert answered(address) == 200  # the new connection is served...
            assert ended(waiting[0], HANG) == b""  # ...in the place of the oldest
            assert ended(waiting[1], 0.5) is None
            assert ended(waiting[2], 0.5) is None
        finally:
            for connection in waiting:
                connection.close()


def test_a_client_whose_connections_are_all_being_answered_gets_no_more() -> None:
    store = Store()
    store.use_api_keys([API_KEY])
    app = MetricsApp(store)
    server = make_server(app, "127.0.0.1", 0, threads=4, per_client=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    address = ("127.0.0.1", int(server.effective_port))
    app.faults.delay("/api/v1/auth/status", seconds=30, times=2)
    busy = [socket.create_connection(address, timeout=HANG) for _ in range(2)]
    try:
        for connection in busy:
            connection.sendall((STATUS_HEAD + "\r\n").encode())
        assert app.faults.wait_fired(2, timeout=HANG)
        with socket.create_connection(address, timeout=HANG) as extra:
            assert ended(extra, HANG) == b""  # closed at once, before any request
    finally:
        for connection in busy:
            connection.close()
        stop_server(server, thread, app.faults)
        store.close()


@contextlib.contextmanager
def unserved(trusted_proxies: tuple[str, ...] = (), **options: Any) -> Iterator[Any]:
    """A server that does not run its loop: connections are handed to it by the test."""
    store = Store()
    app = MetricsApp(store, trusted_proxies=trusted_proxies)
    server = make_server(app, "127.0.0.1", 0, threads=1, **options)
    try:
        yield server
    finally:
        stop_server(server, None, app.faults)
        store.close()


def handed(server: Any, client: str, kept: list[socket.socket]) -> Any:
    """A new connection from ``client`` handed to ``server``: its channel, or ``None`` if the
    server closed it. (The address is given by hand: only 127.0.0.1 is at hand to connect
    from, and these connections are socket pairs, never on any network.)"""
    ours, theirs = socket.socketpair()
    kept.append(theirs)
    before = set(server.active_channels.values())
    if not server.take(ours, (client, 1)):
        return None
    [channel] = set(server.active_channels.values()) - before
    return channel


def test_a_client_at_its_limit_pushes_out_its_own_connections_only() -> None:
    kept: list[socket.socket] = []
    with unserved(connections=10, per_client=2) as server:
        other = handed(server, "10.0.0.1", kept)  # the oldest of all
        first = handed(server, "10.0.0.2", kept)
        second = handed(server, "10.0.0.2", kept)
        third = handed(server, "10.0.0.2", kept)
        assert third is not None
        assert first.will_close
        assert [other.will_close, second.will_close, third.will_close] == [False] * 3
    for connection in kept:
        connection.close()


def test_a_trusted_proxy_is_held_to_the_overall_limit_only() -> None:
    # Behind a proxy every user's connection comes from the proxy's address: a limit per
    # address would cap them all together.
    kept: list[socket.socket] = []
    with unserved(trusted_proxies=("10.0.0.9",), connections=10, per_client=2) as server:
        proxied = [handed(server, "10.0.0.9", kept) for _ in range(5)]
        assert all(channel is not None for channel in proxied)
        assert [channel.will_close for channel in proxied] == [False] * 5
        direct = [handed(server, "10.0.0.2", kept) for _ in range(3)]
        assert [channel.will_close for channel in direct] == [True, False, False]
        assert [channel.will_close for channel in proxied] == [False] * 5
    for connection in kept:
        connection.close()


def test_a_trusted_proxy_still_makes_room_past_the_overall_limit() -> None:
    kept: list[socket.socket] = []
    with unserved(trusted_proxies=("10.0.0.0/24",), connections=3, per_client=1) as server:
        proxied = [handed(server, "10.0.0.9", kept) for _ in range(3)]
        assert handed(server, "10.0.0.9", kept) is not None
        assert [channel.will_close for channel in proxied] == [True, False, False]
    for connection in kept:
        connection.close()


def test_a_full_server_pushes_out_the_connection_that_waited_longest() -> None:
    kept: list[socket.socket] = []
    with unserved(connections=3, per_client=3) as server:
        idle = handed(server, "10.0.0.1", kept)
        idle.fresh = False  # it has been answered: idle between requests, the last to go
        heads = [handed(server, f"10.0.0.{n}", kept) for n in (2, 3)]
        assert handed(server, "10.0.0.4", kept) is not None
        assert heads[0].will_close  # the oldest still owing its head
        assert [idle.will_close, heads[1].will_close] == [False, False]
    for connection in kept:
        connection.close()


class Slowloris:
    """``count`` connections from this address, each sending one more header byte every
    ``every`` seconds; one the server ends is opened again, as the attack tool would."""

    def __init__(
        self, address: tuple[str, int], count: int, every: float, source: str = "127.0.0.1"
    ) -> None:
        self.address, self.count, self.every, self.source = address, count, every, source
        self.cut = 0
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(HANG)

    def _open(self) -> socket.socket | None:
        try:
            connection = socket.create_connection(
                self.address, timeout=HANG, source_address=(self.source, 0)
            )
            connection.sendall(b"GET /api/v1/auth/status HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            return None
        connection.setblocking(False)
        self.opened += 1
        return connection

    def _run(self) -> None:
        connections = [self._open() for _ in range(self.count)]
        try:
            while not self._stop.wait(self.every):
                for index, connection in enumerate(connections):
                    if connection is not None and self._alive(connection):
                        continue
                    if connection is not None:
                        connection.close()
                        self.cut += 1
                    connections[index] = self._open()
        finally:
            for connection in connections:
                if connection is not None:
                    connection.close()

    @staticmethod
    def _alive(connection: socket.socket) -> bool:
        try:
            if connection.recv(1024, socket.MSG_PEEK) is not None:
                return False  # answered (408) or ended by the server
        except BlockingIOError:
            pass
        except OSError:
            return False
        try:
            connection.send(b"a")
        except BlockingIOError:
            pass
        except OSError:
            return False
        return True


def statuses_under_attack(address: tuple[str, int], source: str) -> tuple[list[int], int]:
    """The statuses of 20 plain requests from 127.0.0.1 while 150 slow connections from
    ``source`` are open, and how many of those the server cut."""
    with Slowloris(address, count=150, every=0.5, source=source) as attack:
        while attack.opened < 150:
            time.sleep(0.05)
        statuses = []
        for _ in range(20):
            statuses.append(answered(address))
            time.sleep(0.2)
    return statuses, attack.cut


def sdk_calls_under_attack(address: tuple[str, int], source: str) -> tuple[list[str], int]:
    """What 20 ``whoami()`` calls of the SDK gave while 150 slow connections from ``source``
    are open, and how many of those the server cut."""
    host = f"http://{address[0]}:{address[1]}"
    with Slowloris(address, count=150, every=0.5, source=source) as attack:
        while attack.opened < 150:
            time.sleep(0.05)
        with sm.Session(API_KEY, host=host, spool_dir=None, timeout=5) as session:
            kinds = []
            for _ in range(20):
                kinds.append(sm.whoami(session=session).kind)
                time.sleep(0.2)
    return kinds, attack.cut


def test_a_slowloris_from_another_address_leaves_this_one_served_at_once() -> None:
    # Scaled down from 2,000 slow connections against 1,000 slots: 150 against 60, at most 30
    # per client address, heads due within 2 s. The attack comes from 127.0.0.2 (loopback
    # too): its connections only ever push out its own, so every plain request from
    # 127.0.0.1 is answered, first time.
    with serving(connections=60, per_client=30, head_timeout=2, idle_timeout=30) as address:
        statuses, cut = statuses_under_attack(address, source="127.0.0.2")
    assert statuses == [200] * 20
    assert cut > 0  # the server ends slow connections


def test_a_slowloris_from_the_same_address_leaves_the_sdks_calls_served() -> None:
    # The harshest case: attack and client share an address, so a fresh connection of the
    # client's may be pushed out before its head is read (when the server's thread runs
    # first); the SDK then calls again on a new connection, and every call succeeds.
    with serving(connections=60, per_client=30, head_timeout=2, idle_timeout=30) as address:
        kinds, cut = sdk_calls_under_attack(address, source="127.0.0.1")
    assert kinds == ["api_key"] * 20
    assert cut > 0


# -- with worker processes ----------------------------------------------------------------

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX system")


@dataclasses.dataclass
class Workers:
    """``prefork.serve_processes`` run in a process of its own, with scaled-down limits."""

    process: subprocess.Popen[str]
    address: tuple[str, int]

    def pids(self) -> list[int]:
        """The worker processes (the arbiter's children)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        found.append(int(entry))
        return sorted(found)


def gunicorn_workers(directory: Path, processes: int, per_client: int, threads: int = 4) -> Workers:
    db = str(directory / "metrics.sqlite")
    store = Store(db, shared=True)
    store.use_api_keys([API_KEY])
    store.close()
    code = textwrap.dedent(
        f"""
        import sys
        from syvain_metrics.server import prefork
        from syvain_metrics.server.guarded_worker import GuardedThreadWorker
        from syvain_metrics.signal_guard import SignalGuard
        GuardedThreadWorker.per_client = {per_client}
        listener = prefork.bind("127.0.0.1", 0)
        port = listener.getsockname()[1]
        prefork.serve_processes(
            listener, {db!r}, [{API_KEY!r}], threads={threads}, processes={processes},
            trusted_proxies=(), announce=lambda: print(port, flush=True),
            guard=SignalGuard().install(),
        )
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return Workers(process, ("127.0.0.1", port))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    # 20 slots per client address in each of the two workers: few enough to fill in a test.
    served = gunicorn_workers(tmp_path, processes=2, per_client=20)
    try:
        yield served
    finally:
        for pid in served.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        served.process.terminate()
        served.process.wait(60)


@posix_only
def test_a_whole_request_waiting_for_a_thread_is_never_pushed_out(tmp_path: Path) -> None:
    # One worker, one thread, 4 places per address. The thread is held by a body that
    # arrives slowly; a whole request waits for it; then the same address opens more
    # connections than it has places. Room is made by closing heads still arriving, never
    # the request that only waits for a thread.
    served = gunicorn_workers(tmp_path, processes=1, per_client=4, threads=1)
    try:
        holder = socket.create_connection(served.address, timeout=HANG)
        holder.sendall(
            b"POST /api/v1/folders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 20\r\n\r\n{"
        )
        time.sleep(0.5)
        waiting = socket.create_connection(served.address, timeout=HANG)
        waiting.sendall(b"GET /api/v1/auth/status HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        extra = [socket.create_connection(served.address, timeout=HANG) for _ in range(6)]
        time.sleep(0.5)
        holder.sendall(b"}" + b" " * 18)  # the body is whole: the thread is free
        answer = waiting.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
        for connection in [holder, waiting, *extra]:
            connection.close()
    finally:
        served.process.terminate()
        served.process.wait(60)


@posix_only
def test_a_slowloris_leaves_normal_requests_served_by_worker_processes(workers: Workers) -> None:
    # From another loopback address, as in one process: its connections push out its own;
    # heads are gathered by each worker's poller, so slow ones hold no thread.
    kinds, cut = sdk_calls_under_attack(workers.address, source="127.0.0.2")  # vs 2 x 20 slots
    assert kinds == ["api_key"] * 20
    assert cut > 0


def _statuses(address: tuple[str, int], count: int) -> list[int | None]:
    """Each request's status; ``None`` for a connection closed without an answer."""
    statuses: list[int | None] = []
    for _ in range(count):
        try:
            statuses.append(answered(address))
        except requests.ConnectionError:
            statuses.append(None)
    return statuses


@posix_only
def test_a_stopped_worker_is_passed_no_new_connections(workers: Workers) -> None:
    address = workers.address
    first, second = workers.pids()
    os.kill(first, signal.SIGSTOP)
    # Never a hang (requests' timeout would raise): a stopped worker accepts nothing, and
    # every connection goes to the worker that answers.
    statuses = _statuses(address, 8)
    assert statuses.count(200) >= 7, statuses
    assert set(statuses) <= {200, None}
    # Once it answers again it is dealt connections again: stop the other one instead.
    os.kill(first, signal.SIGCONT)
    os.kill(second, signal.SIGSTOP)
    statuses = _statuses(address, 8)
    assert statuses.count(200) >= 7, statuses
    assert set(statuses) <= {200, None}


@posix_only
def test_a_client_at_its_limit_in_a_worker_loses_its_connection_that_waited_longest(
    tmp_path: Path,
) -> None:
    served = gunicorn_workers(tmp_path, processes=1, per_client=2)
    try:
        held = [socket.create_connection(served.address, timeout=HANG) for _ in range(2)]
        for connection in held:
            assert status_over(connection).startswith(b"HTTP/1.1 200")
        # An answer is out before its thread reports the connection idle: a moment for both
        # to be idle in the worker's view too.
        time.sleep(0.5)
        # Both idle now: the one idle longest makes room, the new one is answered.
        assert answered(served.address) == 200
        assert ended(held[0], HANG) == b""
        assert status_over(held[1]).startswith(b"HTTP/1.1 200")
        for connection in held:
            connection.close()
    finally:
        served.process.terminate()
        served.process.wait(60)
