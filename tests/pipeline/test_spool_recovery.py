"""Damaged and untrusted spools: ``syvain-metrics sync`` never stops at a bad batch, never
loses one silently (it is set aside and reported, the exit status says so), finds a changed
byte or a line cut short, sends only to the configured host and only this user's spools;
a spool root the SDK did not create is never chmodded; after a full disk, spooling resumes
(a spool that could not even be created is created then) and what a kill would lose is said
where the user looks; a spool directory that is not the user's is refused, and said so once.

Everything runs against the real local server; the full disk is a real one for the writing
process (``RLIMIT_FSIZE``), in a child process so that nothing else is limited.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.pipeline import spool_health
from syvain_metrics.pipeline.batch import encode_events
from syvain_metrics.pipeline.spool import CHILDREN, Spool, new_spool_name
from syvain_metrics.pipeline.spool_files import checked_line
from syvain_metrics.testing import LocalServer

OTHER_UID = 54_321
"""A user id that is not the one running the tests (they may run as root)."""


# -- helpers ------------------------------------------------------------------------------------


def events(tag: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"client_event_id": f"{tag}-{i}", "name": "loss", "value": float(i), "step": i}
        for i in range(start, start + count)
    ]


def dead_spool(
    root: Path, host: str, batches: list[tuple[str, list[list[dict[str, Any]]]]]
) -> Path:
    """A spool as a killed process leaves it, written by the SDK's own spool code: one
    batch file per ``(experiment_id, lines)``, the lock free."""
    spool = Spool.create(root / new_spool_name(), host=host)
    for number, (experiment_id, lines) in enumerate(batches, start=1):
        path = spool.append(experiment_id, number, [encode_events(line) for line in lines])
        spool.seal(path)
    os.close(spool._lock_fd)  # the process is gone: its lock is free, its files stay
    return spool.directory


def legacy_batch(directory: Path, number: int, header: bytes, lines: list[bytes]) -> Path:
    """A batch file as written before lines had checksums (format 1)."""
    path = directory / f"b-{number:09d}.jsonl"
    path.write_bytes(b"\n".join([header, *lines]) + b"\n")
    return path


def new_experiment(server: LocalServer, name: str) -> str:
    with server.session(spool_dir=None) as session:
        return sm.Experiment.create(name, session=session).id


def stored(server: LocalServer, experiment_id: str) -> sm.MetricRows:
    with server.session(spool_dir=None) as session:
        return sm.Experiment.get(experiment_id, session=session).metrics()


def stored_steps(server: LocalServer, experiment_id: str) -> list[int]:
    return sorted(row.step or 0 for row in stored(server, experiment_id))


def sync(
    server: LocalServer, root: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "syvain_metrics.cli", "sync", "--spool-dir", str(root)]
    if env is None:
        command += ["--api-key", server.api_key, "--host", server.url]
    command += ["--timeout", "5", *extra]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "spool"


# -- a batch that cannot be read never stops sync, and is never dropped ---------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"[1]", id="list"),
        pytest.param(b"42", id="number"),
        pytest.param(b'{"experiment_id": 7}', id="id-not-a-string"),
        pytest.param(checked_line(b"[1]"), id="checked-list"),
    ],
)
def test_a_header_of_the_wrong_type_is_set_aside_and_the_rest_still_syncs(
    metrics_server: LocalServer, root: Path, header: bytes
) -> None:
    first = new_experiment(metrics_server, "first")
    later = new_experiment(metrics_server, "later")
    damaged = dead_spool(root, metrics_server.url, [(first, [events("a", 10)])])
    bad = legacy_batch(damaged, 2, header, [encode_events(events("b", 5)).array])
    dead_spool(root, metrics_server.url, [(later, [events("c", 20)])])

    result = sync(metrics_server, root)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("synced 30 events from 3 batches in 2 spool(s)")
    assert "; 1 damaged (set aside)" in result.stdout
    assert f"damaged: {bad}: the header is not an object naming an experiment" in result.stderr
    assert stored_steps(metrics_server, first) == list(range(10))
    assert stored_steps(metrics_server, later) == list(range(20))
    # Kept, not deleted: moved aside with the reason beside it.
    aside = damaged / "damaged" / bad.name
    assert aside.read_bytes().startswith(header)
    assert "naming an experiment" in aside.with_name(aside.name + ".reason").read_text()
    assert stat.S_IMODE((damaged / "damaged").stat().st_mode) == 0o700

    again = sync(metrics_server, root)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("synced 0 events from 0 batches")
    assert "1 damaged batches set aside before" in again.stdout
    assert f"set aside before: {damaged / 'damaged'}: 1 batch(es)" in again.stderr
    assert aside.exists()


def test_a_changed_byte_in_a_checked_line_is_reported_not_sent(
    metrics_server: LocalServer, root: Path
) -> None:
    experiment_id = new_experiment(metrics_server, "flipped")
    directory = dead_spool(
        root,
        metrics_server.url,
        [(experiment_id, [events("f", 1_000, 1_000 * n)]) for n in range(3)],
    )
    second = directory / "b-000000002.jsonl"
    data = bytearray(second.read_bytes())
    at = data.index(b'"value":1500.0')
    data[at + 9] = ord("7")  # 1500.0 -> 7500.0: still valid JSON, only the checksum knows
    second.write_bytes(bytes(data))

    result = sync(metrics_server, root)

    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("synced 2000 events from 3 batches")
    assert "1 damaged (set aside)" in result.stdout
    assert f"damaged: {second}: line 2 fails its checksum" in result.stderr
    steps = stored_steps(metrics_server, experiment_id)
    assert steps == list(range(1_000)) + list(range(2_000, 3_000))  # no 7500.0 stored
    assert (directory / "damaged" / second.name).read_bytes() == bytes(data)


def test_a_changed_byte_in_a_spool_written_before_checksums_is_reported(
    metrics_server: LocalServer, root: Path
) -> None:
    experiment_id = new_experiment(metrics_server, "legacy-flip")
    directory = dead_spool(root, metrics_server.url, [])
    header = json.dumps({"experiment_id": experiment_id}).encode()
    lines = [encode_events(events("l", 1_000, 1_000 * n)).array for n in range(3)]
    lines[1] = lines[1].replace(b'"name"', b'"name\x01', 1)  # no longer JSON
    path = legacy_batch(directory, 1, header, lines)

    result = sync(metrics_server, root)

    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("synced 2000 events from 1 batches")
    assert f"damaged: {path}: line 3 is not JSON (2000 intact events sent)" in result.stderr
    assert len(stored_steps(metrics_server, experiment_id)) == 2_000


def test_a_spool_written_before_checksums_still_syncs(
    metrics_server: LocalServer, root: Path
) -> None:
    experiment_id = new_experiment(metrics_server, "legacy")
    directory = dead_spool(root, metrics_server.url, [])
    header = json.dumps({"experiment_id": experiment_id}).encode()
    legacy_batch(directory, 1, header, [encode_events(events("o", 700)).array])

    result = sync(metrics_server, root)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("synced 700 events from 1 batches")
    assert stored_steps(metrics_server, experiment_id) == list(range(700))
    assert list(root.iterdir()) == []


def test_a_torn_last_line_is_counted_and_the_batch_kept(
    metrics_server: LocalServer, root: Path
) -> None:
    experiment_id = new_experiment(metrics_server, "torn")
    directory = dead_spool(
        root, metrics_server.url, [(experiment_id, [events("t", 500), events("t", 500, 500)])]
    )
    path = directory / "b-000000001.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2_000])  # killed in the middle of the last line

    result = sync(metrics_server, root)

    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("synced 500 events from 1 batches")
    assert f"damaged: {path}: line 3 is cut short" in result.stderr
    assert stored_steps(metrics_server, experiment_id) == list(range(500))
    assert (directory / "damaged" / path.name).exists()


def test_lines_of_non_object_events_are_reported_without_a_traceback(
    metrics_server: LocalServer, root: Path
) -> None:
    experiment_id = new_experiment(metrics_server, "non-objects")
    directory = dead_spool(root, metrics_server.url, [])
    header = json.dumps({"experiment_id": experiment_id}).encode()
    path = legacy_batch(
        directory,
        1,
        header,
        [b"[1, 2, 3]", encode_events(events("n", 50)).array, b'[{"name": "x"}, "y"]', b"{}"],
    )

    result = sync(metrics_server, root)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("synced 50 events from 1 batches")
    for line in (2, 4, 5):
        assert f"line {line} is not a list of event objects" in result.stderr
    assert stored_steps(metrics_server, experiment_id) == list(range(50))
    assert (directory / "damaged" / path.name).exists()


# -- whose spools, and where they go ---------------------------------------------------------------


def test_another_users_spool_is_ignored_and_reported(
    metrics_server: LocalServer, root: Path
) -> None:
    mine = new_experiment(metrics_server, "mine")
    theirs = new_experiment(metrics_server, "theirs")
    dead_spool(root, metrics_server.url, [(mine, [events("m", 10)])])
    other = dead_spool(root, metrics_server.url, [(theirs, [events("o", 10)])])
    os.chown(other, OTHER_UID, OTHER_UID)

    result = sync(metrics_server, root)

    assert result.returncode == 0, result.stderr  # only this user's events are its business
    assert result.stdout.startswith("synced 10 events from 1 batches in 1 spool(s)")
    assert "1 spool(s) of other users ignored" in result.stdout
    assert f"ignored: {other}: belongs to another user (uid {OTHER_UID})" in result.stderr
    assert stored_steps(metrics_server, mine) == list(range(10))
    assert stored_steps(metrics_server, theirs) == []
    assert (other / "b-000000001.jsonl").exists()


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A loopback port that accepts connections and never answers: whatever connects to it
    is seen."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    yield listener
    listener.close()


def connections(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            accepted, _ = listener.accept()
        except BlockingIOError:
            return count
        accepted.close()
        count += 1


@pytest.mark.parametrize("configured", ["--host", "environment"])
def test_a_spool_recorded_for_another_host_gets_neither_the_key_nor_the_events(
    metrics_server: LocalServer, root: Path, silent_listener: socket.socket, configured: str
) -> None:
    experiment_id = new_experiment(metrics_server, "elsewhere")
    elsewhere = f"http://127.0.0.1:{silent_listener.getsockname()[1]}"
    directory = dead_spool(root, elsewhere, [(experiment_id, [events("e", 10)])])
    env = None
    if configured == "environment":
        env = {
            "SYVAIN_METRICS_API_KEY": metrics_server.api_key,
            "SYVAIN_METRICS_HOST": metrics_server.url,
        }

    result = sync(metrics_server, root, env=env)

    assert connections(silent_listener) == 0  # the API key never went there
    assert result.returncode == 1, result.stderr
    assert "1 spool(s) of another host skipped" in result.stdout
    assert f"other host: {directory}: recorded for {elsewhere}, not {metrics_server.url}" in (
        result.stderr
    )
    assert stored_steps(metrics_server, experiment_id) == []
    assert (directory / "b-000000001.jsonl").exists()

    confirmed = sync(metrics_server, root, "--other-hosts", env=env)

    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout.startswith("synced 10 events from 1 batches")
    assert connections(silent_listener) == 0
    assert stored_steps(metrics_server, experiment_id) == list(range(10))


# -- spool directories the SDK did not make -------------------------------------------------------


@pytest.mark.parametrize("given", ["spool_dir", "environment"])
def test_a_shared_sticky_spool_root_keeps_its_mode(
    metrics_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    options: dict[str, Any] = {"spool_dir": shared}
    if given == "environment":
        monkeypatch.setenv("SYVAIN_METRICS_SPOOL_DIR", str(shared))
        options = {}
    session = metrics_server.session(**options, flush_interval=60)
    exp = sm.Experiment.create("shared", session=session)
    exp.log("loss", 1.0, step=0)
    session.logs.sender.wait([], timeout=10)  # a mark: the event is spooled by now
    own = Path(session.spool_dir or "")
    assert own.parent == shared
    assert stat.S_IMODE(own.stat().st_mode) == 0o700  # made by the SDK: private
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777  # not the SDK's: left alone
    assert exp.flush(timeout=30) == 1
    session.close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_a_spool_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "spool" / "123-abcd"
    planted.mkdir(parents=True)
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.raises(PermissionError, match="not a directory of this user's"):
        Spool.create(planted, host="http://127.0.0.1:1")
    assert list(planted.iterdir()) == []  # nothing written into it


def test_missing_parents_of_a_spool_root_are_made_private(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    old = os.umask(0o022)
    try:
        session = metrics_server.session(spool_dir=tmp_path / "a" / "b")
        sm.Experiment.create("parents", session=session).log("loss", 1.0)
        session.flush(timeout=30)
        session.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


# -- a full disk ---------------------------------------------------------------------------------

DISK_FULL_CHILD = """
import resource, signal, sys, warnings
import syvain_metrics as sm
from syvain_metrics.pipeline import spool_health

url, key, spool = sys.argv[1:4]
spool_health.SPOOL_RETRY_FIRST = 0.05
spool_health.SPOOL_RETRY_CAP = 0.2
warnings.simplefilter("always")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
session = sm.Session(key, host=url, spool_dir=spool, flush_interval=0.05,
                     retry=sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2))
exp = sm.Experiment.create("disk-full", session=session)
print(exp.id, flush=True)
exp.log("loss", 0.0, step=0)
try:
    exp.flush(timeout=0.5)  # the spool exists now; the service is down
except sm.FlushError:
    pass
limits = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, limits[1]))  # the disk fills up
for step in range(1, 20_001):
    exp.log("loss", float(step), step=step)
with warnings.catch_warnings(record=True) as caught:
    try:
        exp.flush(timeout=1)
    except sm.FlushError as error:
        print("full", error.pending, getattr(error, "unspooled", None), flush=True)
print("warned", any("held in memory only" in str(w.message) for w in caught), flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, limits)  # space is back
for _ in range(300):
    try:
        exp.flush(timeout=0.1)
    except sm.FlushError as error:
        if getattr(error, "unspooled", None) == 0:
            print("spooled", error.pending, flush=True)
            break
else:
    print("spooled never", flush=True)
with warnings.catch_warnings(record=True) as caught:
    try:
        exp.flush(timeout=0.1)
    except sm.FlushError:
        pass
print("ready", flush=True)
sys.stdin.read()  # until killed
"""


def run_child_until_ready(script: str, *args: str) -> tuple[str, list[list[str]]]:
    """Run ``script`` in a child process until it prints ``ready``, then kill it (-9):
    the experiment id it printed first, and the words of each line after it."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        experiment_id = child.stdout.readline().strip()
        lines = []
        for line in child.stdout:
            lines.append(line.split())
            if line.startswith("ready"):
                break
        else:
            pytest.fail(f"the child ended early: {child.stderr.read() if child.stderr else ''}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    return experiment_id, lines


def test_after_a_full_disk_spooling_resumes_and_a_kill_loses_nothing(
    metrics_server: LocalServer, root: Path
) -> None:
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    experiment_id, lines = run_child_until_ready(
        DISK_FULL_CHILD, metrics_server.url, metrics_server.api_key, str(root)
    )
    metrics_server.faults.clear()
    result = sync(metrics_server, root)

    assert result.stdout.startswith("synced 20001 events"), result.stdout
    assert result.returncode == 0, result.stderr  # no line torn by the failed writes
    assert stored_steps(metrics_server, experiment_id) == list(range(20_001))
    full, warned, spooled, _ = lines
    assert full[:2] == ["full", "20001"]
    assert int(full[2]) > 0  # some events held in memory only, and flush() said how many
    assert warned == ["warned", "True"]
    assert spooled == ["spooled", "20001"]  # still pending, but on disk again


def test_a_full_disk_is_told_at_flush_even_when_everything_got_through(
    metrics_server: LocalServer, root: Path
) -> None:
    script = textwrap.dedent(
        """
        import resource, signal, sys, warnings
        import syvain_metrics as sm
        url, key, spool = sys.argv[1:4]
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        session = sm.Session(key, host=url, spool_dir=spool, flush_interval=0.05)
        exp = sm.Experiment.create("told", session=session)
        exp.log("loss", 0.0, step=0)
        exp.flush(timeout=30)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        for step in range(1, 101):
            exp.log("loss", float(step), step=step)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            print(exp.flush(timeout=30))
            print(exp.flush(timeout=30))
        print(len(caught), caught[0].message if caught else "")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, metrics_server.url, metrics_server.api_key, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, second, warning = result.stdout.splitlines()
    assert (first, second) == ("100", "0")
    assert warning.startswith("1 syvain_metrics: the log() spool in ")  # once, not each flush
    assert "cannot be written" in warning


def test_flush_error_tells_events_held_in_memory_only() -> None:
    error = sm.FlushError(stored=1, pending=5, rejected=[], timed_out=True, unspooled=3)
    assert error.unspooled == 3
    assert "3 of them held in memory only" in str(error)
    assert sm.FlushError(stored=1, pending=5, rejected=[], timed_out=True).unspooled == 0


# -- a spool that cannot be created yet ------------------------------------------------------------

NO_SPOOL_YET_CHILD = """
import os, resource, signal, sys, warnings
import syvain_metrics as sm
from syvain_metrics.pipeline import spool_health

url, key, spool, how = sys.argv[1:5]
spool_health.SPOOL_RETRY_FIRST = 0.05
spool_health.SPOOL_RETRY_CAP = 0.2
warnings.simplefilter("always")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
session = sm.Session(key, host=url, spool_dir=spool, flush_interval=0.05, ingest_timeout=0.5,
                     retry=sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2))
exp = sm.Experiment.create("no-spool-yet", session=session)
print(exp.id, flush=True)
limits = resource.getrlimit(resource.RLIMIT_FSIZE)
if how == "disk-full":
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, limits[1]))  # full before the first log()
else:
    open(spool, "w").close()  # a file where the spool root should be
for step in range(5_000):
    exp.log("loss", float(step), step=step)
with warnings.catch_warnings(record=True) as caught:
    try:
        exp.flush(timeout=1)
    except sm.FlushError as error:
        print("held", error.pending, error.unspooled, flush=True)
told = [str(w.message) for w in caught if "held in memory only" in str(w.message)]
print("warned", len(told), all("cannot be created" in m for m in told), flush=True)
print("left", os.path.lexists(session.spool_dir), flush=True)  # no half-made spool
if how == "disk-full":
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)  # space is back
else:
    os.unlink(spool)  # the way is free
for _ in range(300):
    try:
        exp.flush(timeout=0.1)
    except sm.FlushError as error:
        if error.unspooled == 0:
            print("spooled", error.pending, flush=True)
            break
else:
    print("spooled never", flush=True)
print("ready", flush=True)
sys.stdin.read()  # until killed
"""


@pytest.mark.parametrize("how", ["disk-full", "file-in-the-way"])
def test_a_spool_created_late_holds_everything_and_a_kill_loses_nothing(
    metrics_server: LocalServer, root: Path, how: str
) -> None:
    # The first batches are stored, their answers held back: they stay pending (a retry
    # finds them in progress), and the batches behind them wait.
    metrics_server.faults.delay("ingest_metrics", seconds=600, times=10**6)
    experiment_id, lines = run_child_until_ready(
        NO_SPOOL_YET_CHILD, metrics_server.url, metrics_server.api_key, str(root), how
    )
    metrics_server.faults.clear()
    assert len(stored_steps(metrics_server, experiment_id)) > 0  # some were stored already
    result = sync(metrics_server, root)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("synced 5000 events"), result.stdout  # the first too
    assert stored_steps(metrics_server, experiment_id) == list(range(5_000))  # each once
    held, warned, left, spooled, _ = lines
    assert held == ["held", "5000", "5000"]  # not one of them on disk, and flush() said so
    assert warned == ["warned", "1", "True"]
    assert left == ["left", "False"]
    assert spooled == ["spooled", "5000"]  # still pending, all of them on disk now


def test_a_spool_that_cannot_be_created_is_told_at_close(
    metrics_server: LocalServer, root: Path
) -> None:
    root.write_text("")  # a file where the spool root should be
    session = metrics_server.session(spool_dir=root)
    exp = sm.Experiment.create("told-at-close", session=session)
    for step in range(10):
        exp.log("loss", float(step), step=step)
    with pytest.warns(UserWarning, match=r"cannot be created .*\(Not a directory\)"):
        session.close()
    assert stored_steps(metrics_server, exp.id) == list(range(10))


def test_the_end_of_run_says_what_is_held_in_memory_only(
    metrics_server: LocalServer, root: Path
) -> None:
    root.write_text("")
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    session = metrics_server.session(spool_dir=root, retry=sm.RetryPolicy(backoff_base=0.02))
    exp = sm.Experiment.create("run-end", session=session)

    def training() -> None:
        with exp.run(flush_timeout=0.5):
            for step in range(3):
                exp.log("loss", float(step), step=step)

    with (
        pytest.warns(UserWarning, match="held in memory only"),
        pytest.raises(sm.FlushError) as caught,
    ):
        training()
    assert (caught.value.pending, caught.value.unspooled) == (3, 3)
    assert "3 of them held in memory only" in str(caught.value)
    metrics_server.faults.clear()
    assert session.flush(timeout=30) == 3


@pytest.mark.parametrize("planted", ["another-user", "symlink"])
def test_a_spool_directory_refused_for_trust_is_told_once_and_never_used(
    metrics_server: LocalServer,
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    planted: str,
) -> None:
    monkeypatch.setattr(spool_health, "SPOOL_RETRY_FIRST", 0.01)
    monkeypatch.setattr(spool_health, "SPOOL_RETRY_CAP", 0.02)
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    session = metrics_server.session(
        spool_dir=root, retry=sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.1)
    )
    directory = Path(session.spool_dir or "")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    if planted == "another-user":
        directory.mkdir()
        os.chown(directory, OTHER_UID, OTHER_UID)
    else:
        directory.symlink_to(elsewhere)
    exp = sm.Experiment.create("refused", session=session)
    for step in range(50):
        exp.log("loss", float(step), step=step)

    with (
        pytest.warns(UserWarning, match="is refused") as told,
        pytest.raises(sm.FlushError) as caught,
    ):
        exp.flush(timeout=0.5)

    assert (caught.value.pending, caught.value.unspooled, caught.value.spool_dir) == (50, 50, None)
    # Told once (other libraries' warnings, such as urllib3-future's, are not ours to count).
    (message,) = [str(w.message) for w in told if "spool" in str(w.message)]
    assert f"the log() spool in {directory} is refused" in message
    assert "not a directory of this user's" in message
    assert "held in memory only" in message
    assert metrics_server.api_key not in message
    # Made harmless now, it is still not used: a refused directory is not tried again.
    if planted == "another-user":
        os.chown(directory, os.geteuid(), os.getegid())
    else:
        directory.unlink()
    metrics_server.faults.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # told once, not at each flush or close
        assert exp.flush(timeout=30) == 50
        session.close()
    assert stored_steps(metrics_server, exp.id) == list(range(50))
    assert list(elsewhere.iterdir()) == []
    if planted == "another-user":
        assert list(directory.iterdir()) == []
    else:
        assert not os.path.lexists(directory)


# -- a forked child's spool, taken over by its parent's session ---------------------------------


def test_a_damaged_line_in_a_childs_spool_is_reported_and_set_aside_not_deleted(
    metrics_server: LocalServer, root: Path
) -> None:
    session = metrics_server.session(spool_dir=root)
    exp = sm.Experiment.create("child-read-back", session=session)
    own = Path(session.spool_dir or "")
    child = dead_spool(
        own / CHILDREN, metrics_server.url, [(exp.id, [events("a", 10), events("b", 5)])]
    )
    (batch,) = child.glob("b-*.jsonl")
    data = bytearray(batch.read_bytes())
    at = data.rindex(b'"value":1.0')  # in the last line, event b-1
    data[at + 8] = ord("7")  # valid JSON still: only the checksum tells
    batch.write_bytes(bytes(data))

    with pytest.raises(sm.FlushError) as caught:
        session.close()  # takes over what the child left

    assert caught.value.pending == 0
    assert len(caught.value.rejected) == 1  # one damaged line: how many events it held is unknown
    message = caught.value.rejected[0].message
    assert f"1 damaged lines of events could not be read back from {batch}" in message
    assert sorted(row.step or 0 for row in stored(metrics_server, exp.id)) == list(range(10))
    aside = child / "damaged" / batch.name
    assert aside.read_bytes() == bytes(data)  # kept for whoever wants to look, not deleted
    assert "fails its checksum" in aside.with_name(aside.name + ".reason").read_text()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_spools_one_level_under_its_parents_spool(root: Path) -> None:
    session = sm.Session("ak_org_123", host="http://127.0.0.1:9", spool_dir=root)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say where it spools, and leave without any exit hook
        os.write(write, (session.spool_dir or "").encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_dir = Path(pipe.read().decode())
    os.waitpid(pid, 0)
    session.close()
    assert child_dir.parent == Path(session.spool_dir or "") / CHILDREN


# -- the session's own spool, read back ------------------------------------------------------------


def test_a_batch_changed_on_disk_before_its_turn_is_reported_and_set_aside(
    metrics_server: LocalServer, root: Path
) -> None:
    metrics_server.faults.fail_next("ingest_metrics", times=10**6, status=503)
    session = metrics_server.session(spool_dir=root, retry=sm.RetryPolicy(backoff_base=0.02))
    exp = sm.Experiment.create("read-back", session=session)
    for step in range(20_000):
        exp.log("loss", 1.0, step=step)
    with pytest.raises(sm.FlushError):
        exp.flush(timeout=0.5)  # all sealed; the last batches wait on disk only
    assert session.logs.sender.backlog().batches_on_disk_only >= 1
    last = Path(session.spool_dir or "") / "b-000000020.jsonl"
    data = bytearray(last.read_bytes())
    at = data.rindex(b'"value":1.0')
    data[at + 8] = ord("7")  # valid JSON still: only the checksum tells
    last.write_bytes(bytes(data))
    line = bytes(data).splitlines()[-1]
    lost = len(json.loads(line[line.index(b"[") :]))  # the events of the changed line

    metrics_server.faults.clear()
    with pytest.raises(sm.FlushError) as caught:
        exp.flush(timeout=60)
    session.close()

    assert caught.value.pending == 0
    assert len(caught.value.rejected) == lost
    assert f"{lost} events could not be read back from {last}" in caught.value.rejected[0].message
    rows = stored(metrics_server, exp.id)
    assert len(rows) == 20_000 - lost
    assert {row.value for row in rows} == {1.0}
    aside = last.parent / "damaged" / last.name
    assert aside.read_bytes() == bytes(data)  # kept for whoever wants to look, not deleted
    assert "fails its checksum" in aside.with_name(aside.name + ".reason").read_text()
