"""``log()`` under Ctrl-C, signal handlers, floods and a slow service: nothing on the user's
thread can be left holding a lock, memory stays bounded, and several requests are in flight.

The interrupt and signal scenarios run in a child process (so ``_thread.interrupt_main()``
and the signal flood never reach pytest itself), against the real local server running
here; a hang shows as the child's timeout, with every thread's stack printed by
``faulthandler``. Every event whose ``log()`` returned must be stored, once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.pipeline.state import MAX_IN_FLIGHT
from syvain_metrics.testing import LocalServer

FAST = sm.RetryPolicy(backoff_base=0.02, delivery_backoff_cap=0.2)

CHILD_PRELUDE = """
import _thread, faulthandler, json, math, os, random, signal, sys, threading, time
import syvain_metrics as sm

faulthandler.dump_traceback_later(150, exit=True)  # a hang: every stack, then exit 1
sys.setswitchinterval(0.0002)  # the interrupting thread gets its turn when its time comes
url, key, spool = sys.argv[1:4]
session = sm.Session(key, host=url, spool_dir=spool)
exp = sm.Experiment.create("interrupted", session=session)


def inside_sdk(error):
    tb = error.__traceback__
    while tb is not None:
        if "syvain_metrics" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def some_ms(rng):
    # 0.1 to 5 ms, log-uniform: every scale of delay gets its share
    return math.exp(rng.uniform(math.log(0.0001), math.log(0.005)))
"""


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


def run_child(body: str, server: LocalServer, spool_root: Path) -> dict[str, Any]:
    """Run a child script to its end and return the JSON it printed last."""
    script = CHILD_PRELUDE + textwrap.dedent(body)
    child = subprocess.run(
        [sys.executable, "-c", script, server.url, server.api_key, str(spool_root)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 0, child.stderr[-5000:]
    result: dict[str, Any] = json.loads(child.stdout.splitlines()[-1])
    return result


def stored_steps(server: LocalServer, experiment_id: str, name: str) -> list[int]:
    with sm.Session(server.api_key, host=server.url, spool_dir=None) as reader:
        rows = sm.Experiment.get(experiment_id, session=reader).metrics(name)
        return [row.step or 0 for row in rows]


def assert_stored_once(
    server: LocalServer, experiment_id: str, name: str, returned: list[int], tried: int
) -> None:
    steps = stored_steps(server, experiment_id, name)
    assert len(steps) == len(set(steps)), "an event was stored twice"
    missing = set(returned) - set(steps)
    assert not missing, f"{len(missing)} events whose log() returned were lost"
    assert set(steps) <= set(range(tried))


def test_a_thousand_random_interrupts_lose_nothing_and_hang_nothing(
    server: LocalServer, tmp_path: Path
) -> None:
    result = run_child(
        """
        caught = {"loop": 0, "loop_in_sdk": 0, "flush": 0, "flush_in_sdk": 0, "again": 0}
        running = {}  # not Thread.is_alive(): an interrupt inside it can mark a live thread ended

        def interrupter(count, what):
            while running[what] != "go":  # not inside Thread.start(), outside the try
                time.sleep(0.0001)
            rng, base = random.Random(21), caught[what]
            for k in range(base, base + count):
                time.sleep(some_ms(rng))
                _thread.interrupt_main()
                sent = time.monotonic()
                while caught[what] <= k:  # the next one only once this one was caught
                    time.sleep(0.0001)
                    if time.monotonic() - sent > 0.5:
                        # interrupt_main() is no real signal: a wait blocked on a lock
                        # sees it only when it ends. And Python drops (prints) one raised
                        # in a __del__ or weakref callback that the collector ran here.
                        caught["again"] += 1
                        _thread.interrupt_main()
                        sent = time.monotonic()
            running[what] = False

        def ctrl_c(signum, frame):
            raise KeyboardInterrupt  # what Ctrl-C's own handler does

        # Half of them are real signals (a timer's SIGALRM, on time whatever the load), half
        # _thread.interrupt_main() from another thread, as a notebook's interrupt button.
        signal.signal(signal.SIGALRM, ctrl_c)
        rng = random.Random(7)
        step, returned = 0, []
        for _ in range(500):
            try:
                signal.setitimer(signal.ITIMER_REAL, some_ms(rng), 0.5)  # again, if dropped
                while True:
                    exp.log("loss", 1.0, step=step)
                    returned.append(step)
                    step += 1
            except KeyboardInterrupt as error:
                signal.setitimer(signal.ITIMER_REAL, 0)
                caught["loop_in_sdk"] += inside_sdk(error)
                caught["loop"] += 1
                step += 1
        running["loop"] = True
        threading.Thread(target=interrupter, args=(500, "loop"), daemon=True).start()
        running["loop"] = "go"
        while running["loop"]:
            try:
                while running["loop"]:
                    exp.log("loss", 1.0, step=step)
                    returned.append(step)
                    step += 1
            except KeyboardInterrupt as error:
                caught["loop_in_sdk"] += inside_sdk(error)
                caught["loop"] += 1
                step += 1
        tried = step

        # Then Ctrl-C inside flush(): each wait is abandoned, and the sender goes on.
        running["flush"] = True
        threading.Thread(target=interrupter, args=(100, "flush"), daemon=True).start()
        running["flush"] = "go"
        while running["flush"]:
            try:
                while running["flush"]:
                    for _ in range(200):
                        exp.log("during", 1.0, step=step)
                        returned.append(step)
                        step += 1
                    exp.flush(timeout=30)
            except KeyboardInterrupt as error:
                caught["flush_in_sdk"] += inside_sdk(error)
                caught["flush"] += 1
                step += 1
        stored = exp.flush(timeout=120)
        session.close()
        print(json.dumps({"id": exp.id, "returned": returned, "tried": tried, "end": step,
                          "caught": caught, "pending": exp.pending_logs}))
        """,
        server,
        tmp_path / "spool",
    )
    caught = result["caught"]
    assert caught["loop"] == 1_000
    assert caught["flush"] == 100
    # Most land inside the SDK (log() is most of the loop): the test exercises it.
    assert caught["loop_in_sdk"] >= 300, caught
    assert caught["flush_in_sdk"] >= 30, caught
    assert result["pending"] == 0
    tried, end = result["tried"], result["end"]
    in_loop = [s for s in result["returned"] if s < tried]
    assert_stored_once(server, result["id"], "loss", in_loop, tried)
    during = [s for s in result["returned"] if s >= tried]
    steps = stored_steps(server, result["id"], "during")
    assert len(steps) == len(set(steps))
    assert set(during) <= set(steps) <= set(range(tried, end))


def test_a_signal_handler_that_logs_during_a_signal_flood(
    server: LocalServer, tmp_path: Path
) -> None:
    result = run_child(
        """
        handled, numbers = [], iter(range(10**9))

        def handler(signum, frame):
            step = next(numbers)  # taken before log(): handlers nest inside it
            exp.log("signalled", 1.0, step=step)
            handled.append(step)

        signal.signal(signal.SIGUSR1, handler)
        stop = False
        sent = 0

        def flood():
            global sent
            while not stop:
                os.kill(os.getpid(), signal.SIGUSR1)
                sent += 1

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        step, returned, flushes = 0, [], 0
        started = time.monotonic()
        while time.monotonic() - started < 2 or len(handled) < 200:
            exp.log("loss", 1.0, step=step)
            returned.append(step)
            step += 1
            if step % 5_000 == 0:  # handlers also land inside flush(), holding the lock
                exp.flush(timeout=30)
                flushes += 1
        stop = True
        thread.join()
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        exp.flush(timeout=120)
        session.close()
        print(json.dumps({"id": exp.id, "returned": returned, "tried": step, "sent": sent,
                          "handled": handled, "flushes": flushes}))
        """,
        server,
        tmp_path / "spool",
    )
    assert len(result["handled"]) >= 200
    assert result["flushes"] >= 1
    assert_stored_once(server, result["id"], "loss", result["returned"], result["tried"])
    signalled = stored_steps(server, result["id"], "signalled")
    assert sorted(signalled) == sorted(result["handled"])  # each handler's call, once


def test_a_flood_never_queues_more_than_the_limit(server: LocalServer, tmp_path: Path) -> None:
    session = server.session(spool_dir=tmp_path / "spool", retry=FAST)
    exp = sm.Experiment.create("flood", session=session)
    sender = session.logs.sender
    sender.queue_limit = 1_500
    queue = sender._queue
    most = 0
    for step in range(60_000):
        exp.log("loss", 1.0, step=step)
        most = max(most, len(queue))
    assert most < 1_500
    assert exp.flush(timeout=120) > 0
    session.close()
    assert sorted(stored_steps(server, exp.id, "loss")) == list(range(60_000))


def test_several_requests_are_in_flight_and_every_event_is_counted_once(
    server: LocalServer, tmp_path: Path
) -> None:
    # The server holds every ingest answer after storing it (until `go`, then 0.3 s more),
    # and counts how many requests it holds at once.
    holding, most = 0, 0
    lock = threading.Lock()
    go = threading.Event()
    real_sleep = server.faults.sleep

    def sleep(seconds: float) -> None:
        nonlocal holding, most
        with lock:
            holding += 1
            most = max(most, holding)
        try:
            go.wait(60)
            real_sleep(seconds)
        finally:
            with lock:
                holding -= 1

    server.faults.sleep = sleep  # type: ignore[method-assign]
    server.faults.delay("ingest_metrics", seconds=0.3, times=10**6)
    server.faults.reject_metric("poison")
    session = server.session(spool_dir=tmp_path / "spool", retry=FAST)
    exp = sm.Experiment.create("in-flight", session=session)
    other = sm.Experiment.create("in-flight-2", session=session)
    for step in range(8_000):
        exp.log("loss", float(step), step=step)
        if step % 2 == 0:
            other.log("acc", 0.5, step=step)
    exp.log("poison", 1.0, step=42)

    threading.Timer(0.5, go.set).start()  # nothing is answered before flush() begins
    with pytest.raises(sm.FlushError) as caught:
        exp.flush(timeout=120)
    assert caught.value.stored == 8_000  # the poison refused, each other event counted once
    assert caught.value.pending == 0
    assert [r.event["name"] for r in caught.value.rejected] == ["poison"]
    assert exp.flush(timeout=120) == 0  # nothing left, and the refusal is not told again
    other.flush(timeout=120)
    session.close()

    assert most >= 2, "one request at a time"
    assert most <= MAX_IN_FLIGHT
    assert sorted(stored_steps(server, exp.id, "loss")) == list(range(8_000))
    assert stored_steps(server, exp.id, "poison") == []
    assert sorted(stored_steps(server, other.id, "acc")) == list(range(0, 8_000, 2))


def test_an_interrupt_while_the_sender_starts_is_made_good_by_the_next_log(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = server.session(spool_dir=tmp_path / "spool", retry=FAST)
    exp = sm.Experiment.create("first-log", session=session)
    real_start = threading.Thread.start
    started: list[str] = []

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        if len(started) == 3:  # the spooler and one delivery thread run already
            raise KeyboardInterrupt
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(KeyboardInterrupt):
        exp.log("loss", 1.0, step=0)  # the session's first log() starts the sender's threads
    monkeypatch.undo()

    for step in range(1, 1_001):
        exp.log("loss", 1.0, step=step)
    assert exp.flush(timeout=60) == 1_000

    def ours() -> int:
        names = [t.name for t in threading.enumerate()]
        return sum(
            n == "syvain-metrics-spooler" or n.startswith("syvain-metrics-sender") for n in names
        )

    deadline = time.monotonic() + 10
    while ours() > 1 + MAX_IN_FLIGHT and time.monotonic() < deadline:
        time.sleep(0.05)  # threads of earlier tests' senders, ending
    assert ours() == 1 + MAX_IN_FLIGHT  # each started once: one spooler
    session.close()
    assert sorted(stored_steps(server, exp.id, "loss")) == list(range(1, 1_001))
