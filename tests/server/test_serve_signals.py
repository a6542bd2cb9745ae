"""Ctrl-C and SIGTERM at every stage of ``syvain-metrics serve``'s start-up and shut-down.

Each test starts a real ``serve`` process with ``SYVAIN_METRICS_SERVE_PAUSE_AT`` naming a
stage; the process says on stderr when it is there and waits for the signal, so the signal
arrives at that stage every time (no sleeping, no luck). What must hold at every stage: the
exit status (0 after Ctrl-C, 143 after SIGTERM), no traceback, no line cut in two (a login
link whole or absent), and no worker process left running.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from syvain_metrics.signal_guard import PAUSE_ENV, STAGES, SignalGuard, Stopped, held

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds worker processes in /proc (Linux)"
)

API_KEY = "ak_local_signals"
WAIT_S = 120.0
"""A bound on waiting for a line, so that a broken server fails the test instead of hanging
it; nothing is measured against it."""

WORKER_STAGES = ("worker-begin", "worker-ready")
EXIT_STATUS = {signal.SIGINT: 0, signal.SIGTERM: 143}
LINK = re.compile(r"^Dashboard: http://127\.0\.0\.1:\d+/dashboard/login\?token=[\w-]+&next=\S+$")


def process_identity(pid: int) -> tuple[int, str] | None:
    """``(parent pid, start time)`` of a running process, ``None`` once it is gone (a
    reused pid has another start time)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19]


def children(pid: int) -> dict[int, str]:
    """The running child processes of ``pid``, with their start times."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            identity = process_identity(int(entry))
            if identity is not None and identity[0] == pid:
                found[int(entry)] = identity[1]
    return found


@dataclass
class Serve:
    """A ``serve`` process and its stderr, read line by line as it comes."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    stderr: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put("")

    def wait_for_pause(self, stage: str, times: int = 1) -> None:
        """Block until ``times`` processes said they are paused at ``stage``."""
        seen = 0
        while seen < times:
            line = self.lines.get(timeout=WAIT_S)
            assert line, f"serve ended before pausing at {stage}: {''.join(self.stderr)}"
            seen += line.strip() == f"syvain-metrics serve: paused at {stage}"

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit: ``(status, stdout, stderr)``."""
        status = self.process.wait(WAIT_S)
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        self.reader.join(WAIT_S)
        return status, out, "".join(self.stderr)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str, int], Serve]]:
    started: list[Serve] = []

    def launch(stage: str, processes: int) -> Serve:
        env = {**os.environ, PAUSE_ENV: stage}
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"),
                *("--db", str(tmp_path / "metrics.sqlite"), "--api-key", API_KEY),
                *("--processes", str(processes)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # a process group of its own, as a terminal gives
        )
        served = Serve(process)
        started.append(served)
        return served

    yield launch
    for served in started:  # a failed test leaves nothing running
        if served.process.poll() is None:
            os.killpg(served.process.pid, signal.SIGKILL)
            served.process.wait()


def _cases() -> Iterator[tuple[str, int, signal.Signals]]:
    for processes in (1, 2):
        stages = [s for s in STAGES if s != "stopping"]
        if processes == 1:
            stages = [s for s in stages if not s.startswith("worker")]
        for index, stage in enumerate(stages):
            # Ctrl-C and SIGTERM take turns, so that each stage meets both across the modes.
            sent = signal.SIGINT if (index + processes) % 2 else signal.SIGTERM
            yield stage, processes, sent


@pytest.mark.parametrize(("stage", "processes", "sent"), list(_cases()))
def test_a_signal_at_each_stage_of_start_up_ends_serve_cleanly(
    start: Callable[[str, int], Serve], stage: str, processes: int, sent: signal.Signals
) -> None:
    served: Serve = start(stage, processes)
    # At a worker's own stage, each of the two says it is paused.
    served.wait_for_pause(stage, times=2 if stage in WORKER_STAGES else 1)
    workers = children(served.process.pid)
    if stage in ("worker-begin", "worker-ready", "listening", "printing", "serving"):
        assert len(workers) == (processes if processes > 1 else 0)
    os.killpg(served.process.pid, sent)  # what Ctrl-C sends: every process of the group
    status, out, err = served.finish()
    assert status == EXIT_STATUS[sent], err
    assert "Traceback" not in err
    assert "Error" not in err
    for pid, started_at in workers.items():  # each worker stopped (and waited for) too
        identity = process_identity(pid)
        assert identity is None or identity[1] != started_at
    lines = out.splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)
    if stage in ("printing", "serving"):  # once the first line is out, every line is
        assert len(lines) == 3
        assert LINK.match(lines[1].strip()), lines[1]
        assert lines[2].startswith("(one-time login links")
    else:
        assert lines == []


def test_a_second_signal_while_stopping_changes_nothing(start: Callable[[str, int], Serve]) -> None:
    served: Serve = start("stopping", 2)
    assert served.process.stdout is not None
    assert "local server at" in served.process.stdout.readline()
    workers = children(served.process.pid)
    assert len(workers) == 2
    os.killpg(served.process.pid, signal.SIGINT)
    served.wait_for_pause("stopping")
    os.killpg(served.process.pid, signal.SIGTERM)  # does not cut the clean-up short
    status, _, err = served.finish()
    assert status == 0  # the first signal's status
    assert "Traceback" not in err
    for pid, started_at in workers.items():
        identity = process_identity(pid)
        assert identity is None or identity[1] != started_at


def test_an_unknown_pause_stage_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env={**os.environ, PAUSE_ENV: "nowhere"},
    )
    assert done.returncode == 2
    assert f"{PAUSE_ENV} names no stage; one of: started, store-open" in done.stderr
    assert done.stdout == ""


# -- the guard in this process ----------------------------------------------------------------


def test_a_signal_inside_held_is_acted_on_when_the_block_ends() -> None:
    done: list[str] = []

    def block() -> None:
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("the whole block")  # the handler ran in between, and waited
            os.kill(os.getpid(), signal.SIGINT)  # a second signal changes nothing
            done.append("still whole")

    guard = SignalGuard().install()
    try:
        with pytest.raises(Stopped) as stopped:
            block()
        assert done == ["the whole block", "still whole"]
        assert stopped.value.signum == signal.SIGTERM
        assert guard.exit_status == 143
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_signal_outside_held_stops_at_once() -> None:
    done: list[str] = []

    def block() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        done.append("never")

    guard = SignalGuard().install()
    try:
        with pytest.raises(Stopped):
            block()
        assert done == []
        assert guard.exit_status == 0
    finally:
        guard.restore()
