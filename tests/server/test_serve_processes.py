"""``syvain-metrics serve --processes N``: one database file answered by N worker processes.

Shown against real ``serve`` processes: clients writing at once from several connections
(each event stored once), a login link printed by the server opening in whichever worker the
next connection reaches, a restart forgetting every login, a killed worker replaced,
SIGTERM ending every process, keys on no command line, and without gunicorn a clear refusal.
The workers are gunicorn's (:mod:`syvain_metrics.server.prefork`); the
cross-process parts (write turns, requests in progress) are shown with a second process of
their own where one process cannot tell.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import syvain_metrics as sm
from syvain_metrics.server import Store
from syvain_metrics.server.idempotency import IdempotencyGate, Replay, RunningElsewhere, Ticket

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX system")

API_KEY = "ak_local_processes"


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    login_link: str

    def workers(self) -> list[int]:
        """The worker processes' ids (the server's children)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    found.append(int(entry))
        return sorted(found)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"),
            *("--db", str(tmp_path / "metrics.sqlite"), "--processes", "2", "--api-key", API_KEY),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first, second = process.stdout.readline(), process.stdout.readline()
    url = re.search(r"at (http://127\.0\.0\.1:\d+)", first)
    link = re.search(r"(http://\S+login\?token=\S+)", second)
    assert url is not None, first + process.stderr.read()  # type: ignore[union-attr]
    assert link is not None, second
    yield Served(process, url.group(1), link.group(1))
    process.terminate()
    process.communicate(timeout=30)


def _fresh_connection(url: str, **options: object) -> requests.Response:
    # A new connection each time, so that consecutive requests reach different workers.
    headers = {"Connection": "close", **options.pop("headers", {})}  # type: ignore[dict-item]
    return requests.get(url, headers=headers, timeout=30, **options)  # type: ignore[arg-type]


def test_concurrent_clients_each_store_every_event_once(served: Served) -> None:
    assert len(served.workers()) == 2
    failures: list[BaseException] = []
    experiments: list[sm.Experiment] = []

    def client(number: int) -> None:
        try:
            with sm.Session(API_KEY, host=served.url, spool_dir=None) as session:
                exp = sm.Experiment.create(f"writer-{number}", session=session)
                experiments.append(exp)
                events = [{"name": "loss", "value": i / 3, "step": i} for i in range(3000)]
                exp.ingest(events, sync=True)
                exp.ingest(events[:1000], sync=True)  # the same events again: stored once
        except BaseException as error:  # reported below, with the thread's failure
            failures.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    with sm.Session(API_KEY, host=served.url, spool_dir=None) as session:
        for exp in experiments:
            rows = sm.Experiment.get(exp.id, session=session).metrics("loss")
            assert list(rows.steps) == list(range(3000))


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/api/v1/" + "x" * 9000, {}, 414, "uri_too_long"),
        (
            "/api/v1/auth/status",
            {f"X-Field-{n}": "1" for n in range(250)},
            431,
            "headers_too_large",
        ),
    ],
    ids=["request-line", "too-many-fields"],
)
def test_a_head_the_workers_refuse_is_answered_in_the_envelope(
    served: Served, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    answer = _fresh_connection(served.url + path, headers=headers)
    assert answer.status_code == status
    body = answer.json()
    assert body["data"] is None
    assert body["error"]["details"] == f"code={code}"


def _opened(pid: int, path: Path) -> int:
    """How many of ``pid``'s file descriptors are ``path``."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == str(path)
        except OSError:  # closed meanwhile
            continue
    return count


def test_workers_inherit_no_database_connection_of_the_server_process(
    served: Served, tmp_path: Path
) -> None:
    database, inflight = tmp_path / "metrics.sqlite", tmp_path / "metrics.sqlite-inflight"
    assert _fresh_connection(served.url + "/api/v1/auth/status").status_code == 401
    assert _opened(served.process.pid, database) == 0
    assert _opened(served.process.pid, inflight) == 0
    workers = served.workers()
    assert len(workers) == 2
    # Each worker opens the record of requests in progress once, itself.
    assert [_opened(pid, inflight) for pid in workers] == [1, 1]


def _connections_per_worker(served: Served) -> list[int]:
    """How many established connections to the server each worker holds."""
    port = int(served.url.rsplit(":", 1)[1])
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                established.add(fields[9])
    counts = []
    for pid in served.workers():
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        counts.append(sum(f"socket:[{inode}]" in inodes for inode in established))
    return counts


def test_clients_connecting_at_once_land_in_different_workers(served: Served) -> None:
    # gunicorn's workers share one listening socket; left alone, the first to wake takes
    # most connections, and clients writing at once would share one process.
    sessions = [sm.Session(API_KEY, host=served.url, spool_dir=None) for _ in range(2)]
    try:
        for session in sessions:
            assert sm.whoami(session=session).kind == "api_key"  # its connection kept alive
        assert sorted(_connections_per_worker(served)) == [1, 1]
    finally:
        for session in sessions:
            session.close()


def test_a_printed_login_link_opens_in_any_worker_and_only_once(served: Served) -> None:
    signed_in = _fresh_connection(served.login_link, allow_redirects=False)
    assert signed_in.status_code in (200, 303)
    cookies = signed_in.cookies
    # Two more connections: one of them reaches the other worker.
    for _ in range(2):
        page = _fresh_connection(f"{served.url}/dashboard/", cookies=cookies, allow_redirects=False)
        assert page.status_code == 200
    again = _fresh_connection(served.login_link, allow_redirects=False)
    assert again.status_code == 401


def test_a_restarted_server_forgets_its_logins(tmp_path: Path) -> None:
    def start() -> tuple[subprocess.Popen[str], str, str]:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"),
                *("--db", str(tmp_path / "m.sqlite"), "--processes", "2", "--api-key", API_KEY),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        url = re.search(r"at (http://127\.0\.0\.1:\d+)", process.stdout.readline())
        link = re.search(r"(http://\S+login\?token=\S+)", process.stdout.readline())
        assert url is not None
        assert link is not None
        return process, url.group(1), link.group(1)

    first, first_url, unspent_link = start()
    signed_in = requests.post(
        f"{first_url}/dashboard/login",
        data={"api_key": API_KEY},
        headers={"Connection": "close"},
        allow_redirects=False,
        timeout=30,
    )
    cookies = signed_in.cookies
    page = _fresh_connection(f"{first_url}/dashboard/", cookies=cookies, allow_redirects=False)
    assert page.status_code == 200  # signed in, in whichever worker
    first.terminate()
    first.wait(30)
    second, url, _ = start()
    try:
        # The link printed by the first run, never used, and the session it opened: both
        # forgotten.
        port = url.rsplit(":", 1)[1]
        link = re.sub(r":\d+/", f":{port}/", unspent_link)
        assert _fresh_connection(link, allow_redirects=False).status_code == 401
        page = _fresh_connection(f"{url}/dashboard/", cookies=cookies, allow_redirects=False)
        assert page.status_code != 200
    finally:
        second.terminate()
        second.wait(30)


def test_a_killed_worker_is_replaced(served: Served) -> None:
    before = served.workers()
    os.kill(before[0], signal.SIGKILL)
    statuses = []
    for _ in range(6):  # every connection is answered, by the survivor or the new worker
        answer = _fresh_connection(
            f"{served.url}/api/v1/auth/status", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        statuses.append(answer.status_code)
    assert statuses == [200] * 6
    # gunicorn's arbiter starts the new worker as soon as it reaps the old one (not at the
    # next connection): a bound on the wait, not a measure.
    deadline = time.monotonic() + 30
    while len(after := served.workers()) != 2 or before[0] in after:
        assert time.monotonic() < deadline, after
        time.sleep(0.05)
    assert before[0] not in after
    assert before[1] in after


def _started_at(pid: int) -> str | None:
    """A running process's start time (another process given the same pid has another)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` waits for a file lock (``->`` marks waiters in /proc/locks)."""
    return any(
        "->" in line and f" {pid} " in line for line in Path("/proc/locks").read_text().splitlines()
    )


def test_sigterm_ends_the_server_and_its_workers(served: Served) -> None:
    workers = {pid: _started_at(pid) for pid in served.workers()}
    assert len(workers) == 2
    served.process.terminate()
    served.process.wait(timeout=30)
    assert served.process.returncode == 143  # 128 + SIGTERM, as a shell reports it
    assert served.process.stderr is not None
    assert "Traceback" not in served.process.stderr.read()
    # The server waited for each worker to end before it did: none is left, at once.
    assert all(_started_at(pid) != started for pid, started in workers.items())


def test_api_keys_go_on_no_new_command_line(tmp_path: Path) -> None:
    # Keys stored by an earlier run, none given now: they reach the workers in the forked
    # memory, and no process's command line names one.
    db = str(tmp_path / "metrics.sqlite")
    store = Store(db, shared=True)
    store.use_api_keys([API_KEY])
    store.close()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"),
            *("--db", db, "--processes", "2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = re.search(r"at (http://127\.0\.0\.1:\d+)", process.stdout.readline())
        assert url is not None
        workers = Served(process, url.group(1), "").workers()
        assert len(workers) == 2
        for pid in [process.pid, *workers]:
            assert API_KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        answer = _fresh_connection(
            f"{url.group(1)}/api/v1/auth/status", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert answer.status_code == 200
    finally:
        process.terminate()
        process.wait(30)


def test_ctrl_c_in_a_terminal_ends_the_server_and_its_workers(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"),
            *("--db", str(tmp_path / "metrics.sqlite"), "--processes", "2"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives
    )
    assert process.stdout is not None
    assert "local server at" in process.stdout.readline()
    workers = {pid: _started_at(pid) for pid in Served(process, "", "").workers()}
    assert len(workers) == 2
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: every process of the group
    assert process.wait(30) == 0
    assert all(_started_at(pid) != started for pid, started in workers.items())


def test_several_processes_without_gunicorn_are_refused(tmp_path: Path) -> None:
    hidden = tmp_path / "no_gunicorn"
    hidden.mkdir()
    (hidden / "gunicorn.py").write_text("raise ImportError('gunicorn is not installed')\n")
    paths = [str(hidden), *filter(None, [os.environ.get("PYTHONPATH")])]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"),
            *("--db", str(tmp_path / "m.sqlite"), "--processes", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
    )
    assert done.returncode == 2
    assert "needs gunicorn" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_several_processes_need_a_database_file() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0", "--processes", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Only a database file can be shared" in done.stderr
    with pytest.raises(ValueError, match="Only a database file"):
        Store(":memory:", shared=True)


# -- what one process must know of another ----------------------------------------------------


def _other_process(path: Path, script: str) -> subprocess.Popen[str]:
    """A second process running ``script`` (with ``path`` bound), which prints "ready" and then
    waits for a line on stdin."""
    code = (
        textwrap.dedent(
            f"""
        import sys
        from syvain_metrics.server import Store
        from syvain_metrics.server.idempotency import RunningElsewhere
        path = {str(path)!r}
        """
        )
        + textwrap.dedent(script)
        + "\nprint('ready', flush=True)\nsys.stdin.readline()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _finish(process: subprocess.Popen[str]) -> None:
    process.communicate("\n", timeout=30)


def test_a_key_in_progress_in_another_process_is_409_or_422(tmp_path: Path) -> None:
    path = tmp_path / "metrics.sqlite"
    store = Store(str(path), shared=True)
    gate = IdempotencyGate(store, RunningElsewhere(str(path)))
    other = _other_process(path, "RunningElsewhere(path).claim('cred', 'k', 'id-1')")
    try:
        same = gate.begin("cred", "k", "id-1")
        different = gate.begin("cred", "k", "id-2")
        assert not isinstance(same, Ticket | Replay)
        assert not isinstance(different, Ticket | Replay)
        assert (same.status, same.code) == (409, "idempotency_key_in_progress")
        assert (different.status, different.code) == (422, "idempotency_key_reused")
    finally:
        other.kill()  # ends without letting go: its claim is left behind
        other.wait(30)
    ticket = gate.begin("cred", "k", "id-1")  # a claim whose process is gone counts for nothing
    assert isinstance(ticket, Ticket)
    gate.finish(ticket)
    store.close()


def test_an_answer_stored_by_another_process_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "metrics.sqlite"
    store = Store(str(path), shared=True)
    gate = IdempotencyGate(store, RunningElsewhere(str(path)))
    other = _other_process(
        path,
        """
        running = RunningElsewhere(path)
        running.claim('cred', 'k', 'id-1')
        Store(path, shared=True).save_idempotency('cred', 'k', 'id-1', 201, b'{"ok":1}')
        running.release('cred', 'k')
        """,
    )
    try:
        replay = gate.begin("cred", "k", "id-1")
        assert isinstance(replay, Replay)
        assert (replay.status, replay.body) == (201, b'{"ok":1}')
    finally:
        _finish(other)
    store.close()


def test_writes_from_two_processes_take_turns(tmp_path: Path) -> None:
    from syvain_metrics.server.sql import ROW_COLUMNS, RowQuery, SeriesFilter

    path = tmp_path / "metrics.sqlite"
    store = Store(str(path), shared=True)
    [key] = store.use_api_keys(["ak_turns"])
    org = store.authenticate(key).org_id
    exp = store.create_experiment(org, {"slug": "turns", "metadata": {}})

    def batch(prefix: str, start: int) -> list[dict[str, object]]:
        return [
            {"client_event_id": f"{prefix}{i}", "name": "loss", "value": 1.0, "step": i}
            for i in range(start, start + 200)
        ]

    # The other process starts writing once told to, while this one writes too.
    code = textwrap.dedent(
        f"""
        import sys
        from syvain_metrics.server import Store
        store = Store({str(path)!r}, shared=True)
        print("ready", flush=True)
        sys.stdin.readline()
        for start in range(0, 4000, 200):
            batch = [{{"client_event_id": f"o{{i}}", "name": "loss", "value": 2.0, "step": i}}
                     for i in range(start, start + 200)]
            store.ingest({org!r}, {exp.id!r}, batch)
        """
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert other.stdout is not None
    assert other.stdin is not None
    assert other.stdout.readline().strip() == "ready"
    other.stdin.write("go\n")
    other.stdin.flush()
    for start in range(0, 4000, 200):
        store.ingest(org, exp.id, batch("e", start))
    other.stdin.close()
    assert other.wait(60) == 0
    rows = store.metric_rows(RowQuery(org, [SeriesFilter(exp.id, "loss")], 100_000))
    assert len(rows) == 8000
    assert sorted(r[ROW_COLUMNS.index("metric_value")] for r in rows) == [1.0] * 4000 + [2.0] * 4000
    store.close()
