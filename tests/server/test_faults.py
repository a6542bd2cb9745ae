"""The fault matrix: every fault switch of the local server against the SDK's retries.

Each case arms one fault, makes one SDK call that must succeed, and then counts what
the server really holds: exactly one copy of the write, nothing lost, nothing
duplicated. Each case asserts its own outcome; the module also tallies them and prints
one line at the end::

    faults: N survived, 0 duplicated, 0 lost
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.server import wire
from syvain_metrics.testing import LocalServer

# Small waits keep the suite fast; the in-progress poll (40 x 0.05 s = 2 s) outlasts the
# server's 0.6 s delay with room to spare.
POLL_ATTEMPTS = 40
POLL_INTERVAL = 0.05
DELAY = 0.6
SHORT_TIMEOUT = 0.3
assert POLL_ATTEMPTS * POLL_INTERVAL > 3 * DELAY


def fast_policy(**overrides: Any) -> sm.RetryPolicy:
    settings: dict[str, Any] = {
        "backoff_base": 0.01,
        "poll_interval": POLL_INTERVAL,
        "poll_attempts": POLL_ATTEMPTS,
        **overrides,
    }
    return sm.RetryPolicy(**settings)


WAITS: list[float] = []


def recording_sleep(seconds: float) -> None:
    """Record the wait the policy asked for, and sleep a little of it only."""
    WAITS.append(seconds)
    time.sleep(min(seconds, 0.02))


def expect_wait(seconds: float, run: Callable[[Ctx], Tally]) -> Callable[[Ctx], Tally]:
    """Run a case whose session records its waits; one of them must be ``seconds``."""

    def wrapped(ctx: Ctx) -> Tally:
        WAITS.clear()
        tally = run(ctx)
        assert seconds in WAITS, WAITS  # the Retry-After, not the 0.01 s backoff
        return tally

    return wrapped


# -- the tally ------------------------------------------------------------------------------

OUTCOMES = {"survived": 0, "duplicated": 0, "lost": 0}


@pytest.fixture(scope="module", autouse=True)
def _faults_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the matrix's summary line once every case of this module has run."""
    for name in OUTCOMES:
        OUTCOMES[name] = 0
    yield
    cases = sum(OUTCOMES.values())
    if not cases:
        return
    line = (
        f"faults: {OUTCOMES['survived']} survived, {OUTCOMES['duplicated']} duplicated, "
        f"{OUTCOMES['lost']} lost"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(line)
    else:  # pragma: no cover - without pytest's terminal (e.g. -p no:terminal)
        print(line)


@dataclass
class Tally:
    """What one case wrote and what the server holds.

    ``expected`` distinct writes were made; ``found`` is every copy the server holds
    (rows, folders, experiments...), ``distinct`` how many different writes among them.
    """

    expected: int
    found: int
    distinct: int

    @property
    def duplicated(self) -> bool:
        return self.found > self.distinct or self.distinct > self.expected

    @property
    def lost(self) -> bool:
        return self.distinct < self.expected


def record(tally: Tally | None, fired_as_planned: bool) -> None:
    """Count one case: survived, or duplicated and/or lost (a call that raised is lost).
    A case whose fault did not go off as planned proves nothing: it does not count as
    survived (and its test fails)."""
    if tally is None:
        OUTCOMES["lost"] += 1
        return
    if tally.duplicated:
        OUTCOMES["duplicated"] += 1
    if tally.lost:
        OUTCOMES["lost"] += 1
    if not tally.duplicated and not tally.lost and fired_as_planned:
        OUTCOMES["survived"] += 1


# -- what the server holds, read through its store or the SDK -------------------------------


@dataclass
class Ctx:
    """One case's world: the server, a plain session for setup and reads, and the
    session under test (fast retries), built only when the case first asks for it."""

    server: LocalServer
    setup: sm.Session
    session_options: dict[str, Any]
    _session: sm.Session | None = None

    @property
    def session(self) -> sm.Session:
        if self._session is None:
            options = {"retry": fast_policy(), **self.session_options}
            self._session = self.server.session(**options)
        return self._session

    @property
    def org_id(self) -> str:
        return sm.whoami(session=self.setup).organization_id

    def stored_experiments(self, slug: str) -> list[dict[str, Any]]:
        everything = self.server.store.list_experiments(self.org_id, limit=1000)
        return [wire.experiment(e, self.server.url) for e in everything if e.slug == slug]

    def stored_folders(self) -> list[dict[str, Any]]:
        return [wire.folder(f) for f in self.server.store.list_folders(self.org_id)]

    def stored_annotations(self, experiment_id: str) -> list[dict[str, Any]]:
        found = self.server.store.list_annotations(self.org_id, experiment_id, limit=1000)
        return [wire.annotation(a) for a in found]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def metric_tally(exp: sm.Experiment, sent: list[dict[str, Any]], setup: sm.Session) -> Tally:
    """Compare the experiment's rows with what was sent. Every sent metric has its own
    (name, step, metadata), so a second copy shows as a repeated key; a row with a key
    nobody sent, or with another value than the one sent, is not a copy of the write."""
    rows = sm.Experiment.get(exp.id, session=setup).metrics(limit=10_000)
    wanted = {
        (m["name"], m["step"], json.dumps(m.get("metadata", {}), sort_keys=True)): float(m["value"])
        for m in sent
    }
    good = [
        key
        for key, value in (
            ((r.name, r.step, json.dumps(r.metadata, sort_keys=True)), r.value) for r in rows
        )
        if wanted.get(key) == value
    ]
    return Tally(expected=len(wanted), found=len(good), distinct=len(set(good)))


def points(count: int, name: str = "loss", offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "client_event_id": f"{name}-{offset + i}",
            "name": name,
            "value": (offset + i) * 0.25,
            "step": offset + i,
            "metadata": {"split": "train" if i % 2 else "valid"},
        }
        for i in range(count)
    ]


# -- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Ctx], Tally]
    fired: int  # how many times the fault must have gone off (else the case proves nothing)
    session_options: dict[str, Any] = field(default_factory=dict)


def create_experiment_case(ctx: Ctx) -> Tally:
    exp = sm.Experiment.create(
        "fault-run", description="faulty", metadata={"k": 1}, session=ctx.session
    )
    assert (exp.slug, exp.description, exp.metadata, exp.status) == (
        "fault-run",
        "faulty",
        {"k": 1},
        "created",
    )
    stored = ctx.stored_experiments("fault-run")
    return Tally(1, len(stored), len({e["id"] for e in stored} & {exp.id}))


def create_folder_case(ctx: Ctx) -> Tally:
    folder = sm.Folder.create("fault-folder", session=ctx.session)
    assert (folder.name, folder.path_name, folder.parent_id) == (
        "fault-folder",
        "fault-folder",
        None,
    )
    stored = [f for f in ctx.stored_folders() if f["name"] == "fault-folder"]
    return Tally(1, len(stored), len({f["folder_id"] for f in stored} & {folder.id}))


def ingest_case(count: int) -> Callable[[Ctx], Tally]:
    def run(ctx: Ctx) -> Tally:
        exp = sm.Experiment.create("fault-ingest", session=ctx.setup)
        sent = points(count)
        mine = sm.Experiment.get(exp.id, session=ctx.session)
        result = mine.ingest(sent, sync=True)
        assert result.count == count
        assert result.requests == -(-count // 1000)
        return metric_tally(exp, sent, ctx.setup)

    return run


def multi_chunk_second_drop_case(ctx: Ctx) -> Tally:
    """2,500 metrics in three requests; the second one's connection drops after commit."""
    exp = sm.Experiment.create("fault-chunks", session=ctx.setup)
    session = ctx.session
    original = session.call
    chunks: list[int] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        answer = original(*args, **kwargs)
        if args[0].operation == "ingest_metrics":
            chunks.append(len(kwargs["body"]["data"]))
            if len(chunks) == 1:  # the first chunk is in: arm the fault for the second
                ctx.server.faults.drop_connection("ingest_metrics", when="after_commit")
        return answer

    session.call = call  # type: ignore[method-assign]
    sent = points(2500)
    result = sm.Experiment.get(exp.id, session=session).ingest(sent)
    assert (result.count, result.requests) == (2500, 3)
    assert chunks == [1000, 1000, 500]
    (fired,) = ctx.server.faults.history
    assert fired.path == f"/api/v1/experiments/{exp.id}/ingest"
    return metric_tally(exp, sent, ctx.setup)


def log_flush_case(count: int) -> Callable[[Ctx], Tally]:
    def run(ctx: Ctx) -> Tally:
        exp = sm.Experiment.create("fault-log", session=ctx.setup)
        mine = sm.Experiment.get(exp.id, session=ctx.session)
        sent = points(count)
        for m in sent:
            mine.log(m["name"], m["value"], step=m["step"], metadata=m["metadata"])
        assert mine.pending_logs == count
        assert mine.flush() == count
        assert mine.pending_logs == 0
        return metric_tally(exp, sent, ctx.setup)

    return run


def rename_folder_case(ctx: Ctx) -> Tally:
    parent = sm.Folder.create("parent", session=ctx.setup)
    folder = sm.Folder.create("before", parent=parent, session=ctx.setup)
    before = len(ctx.stored_folders())
    mine = sm.Folder.get(folder.id, session=ctx.session)
    mine.rename("after")
    assert (mine.id, mine.name, mine.path_name, mine.parent_id) == (
        folder.id,
        "after",
        "parent/after",
        parent.id,
    )
    stored = ctx.stored_folders()
    assert len(stored) == before
    renamed = [f for f in stored if f["path_name"] == "parent/after"]
    return Tally(1, len(renamed), len({f["folder_id"] for f in renamed} & {folder.id}))


def move_folder_case(ctx: Ctx) -> Tally:
    target = sm.Folder.create("target", session=ctx.setup)
    folder = sm.Folder.create("moving", session=ctx.setup)
    child = folder.create_subfolder("child")
    before = len(ctx.stored_folders())
    mine = sm.Folder.get(folder.id, session=ctx.session)
    mine.move(target)
    assert (mine.path_name, mine.parent_id_path) == ("target/moving", [target.id])
    stored = ctx.stored_folders()
    assert len(stored) == before
    paths = {f["folder_id"]: f["path_name"] for f in stored}
    assert paths[child.id] == "target/moving/child"
    moved = [f for f in stored if f["path_name"] == "target/moving"]
    return Tally(1, len(moved), len({f["folder_id"] for f in moved} & {folder.id}))


def move_experiment_case(ctx: Ctx) -> Tally:
    folder = sm.Folder.create("home", session=ctx.setup)
    exp = sm.Experiment.create("mover", session=ctx.setup)
    mine = sm.Experiment.get(exp.id, session=ctx.session)
    mine.move(folder)
    assert mine.folder is not None
    assert (mine.folder.id, mine.folder.path_name) == (folder.id, "home")
    contents = sm.Folder.get(folder.id, session=ctx.setup).experiments
    assert len(ctx.stored_experiments("mover")) == 1
    return Tally(1, len(contents), len({e.id for e in contents} & {exp.id}))


def status_case(ctx: Ctx) -> Tally:
    exp = sm.Experiment.create("status", session=ctx.setup)
    mine = sm.Experiment.get(exp.id, session=ctx.session)
    started = 1_750_000_000_000
    mine.set_status("running", timestamp_ms=started)
    mine.set_status(
        "error", error={"name": "OOM", "detail": "out of memory"}, timestamp_ms=started + 10
    )
    assert (mine.status, mine.error_name, mine.started_at_ms) == ("error", "OOM", started)
    (stored,) = ctx.stored_experiments("status")
    applied = (
        stored["status"],
        stored["error_name"],
        stored["error_detail"],
        stored["started_at_ms"],
        stored["done_at_ms"],
    ) == ("error", "OOM", "out of memory", started, started + 10)
    return Tally(1, 1 if applied else 0, 1 if applied else 0)


def annotate_case(ctx: Ctx) -> Tally:
    exp = sm.Experiment.create("notes", session=ctx.setup)
    mine = sm.Experiment.get(exp.id, session=ctx.session)
    note = mine.annotate("checkpoint saved", metadata={"step": 100})
    assert (note.text, note.metadata, note.experiment_id) == (
        "checkpoint saved",
        {"step": 100},
        exp.id,
    )
    stored = ctx.stored_annotations(exp.id)
    return Tally(1, len(stored), len({a["id"] for a in stored} & {note.id}))


def refused_ingest_case(ctx: Ctx) -> Tally:
    """The session's first connection (minting the ingestion key) is refused."""
    exp = sm.Experiment.create("refused-ingest", session=ctx.setup)
    ctx.server.faults.refuse_connections()
    tally = ingest_case_on(ctx, exp, points(50))
    keys = sm.Experiment.get(exp.id, session=ctx.setup).ingestion_keys()
    assert len(keys) == 1  # minted once
    return tally


def ingest_case_on(ctx: Ctx, exp: sm.Experiment, sent: list[dict[str, Any]]) -> Tally:
    mine = sm.Experiment.get(exp.id, session=ctx.session)
    assert mine.ingest(sent).count == len(sent)
    return metric_tally(exp, sent, ctx.setup)


def arm(setup: Callable[[Any], None], run: Callable[[Ctx], Tally]) -> Callable[[Ctx], Tally]:
    """Arm a fault (``setup(faults)``) right before the case's own calls; cases whose
    setup writes first arm inside the case instead (see ``armed_after_setup``)."""

    def wrapped(ctx: Ctx) -> Tally:
        setup(ctx.server.faults)
        return run(ctx)

    return wrapped


def armed_after_setup(
    setup: Callable[[Any], None], run: Callable[[Ctx], Tally]
) -> Callable[[Ctx], Tally]:
    """Arm the fault once the case's setup (done with the plain session) is over: the
    session under test arms it on its first call."""

    def wrapped(ctx: Ctx) -> Tally:
        session = ctx.session
        original = session.call
        armed: list[bool] = []

        def call(*args: Any, **kwargs: Any) -> Any:
            if not armed:
                armed.append(True)
                setup(ctx.server.faults)
            return original(*args, **kwargs)

        session.call = call  # type: ignore[method-assign]
        return run(ctx)

    return wrapped


def fail(route: str, status: int, times: int = 1, retry_after: float | None = None) -> Any:
    return lambda faults: faults.fail_next(
        route, status=status, times=times, retry_after=retry_after
    )


def drop(route: str, when: str) -> Any:
    return lambda faults: faults.drop_connection(route, when=when)


def delay(route: str) -> Any:
    return lambda faults: faults.delay(route, seconds=DELAY)


def refuse() -> Any:
    return lambda faults: faults.refuse_connections()


AFTER = "after_commit"
BEFORE = "before_commit"
SLOW_INGEST = {"ingest_timeout": SHORT_TIMEOUT}
SLOW_CALLS = {"timeout": SHORT_TIMEOUT}
RECORDED = {"retry": fast_policy(sleep=recording_sleep)}

CASES = [
    # (a) a burst of two 503s
    Case(
        "503x2-create_experiment", arm(fail("create_experiment", 503, 2), create_experiment_case), 2
    ),
    Case("503x2-create_folder", arm(fail("create_folder", 503, 2), create_folder_case), 2),
    Case("503x2-ingest", armed_after_setup(fail("ingest_metrics", 503, 2), ingest_case(300)), 2),
    Case(
        "503x2-update_status",
        armed_after_setup(fail("update_experiment_status", 503, 2), status_case),
        2,
    ),
    # (b) 429 with Retry-After on a POST
    Case(
        "429-retry_after-create_experiment",
        expect_wait(1.0, arm(fail("create_experiment", 429, 1, 1), create_experiment_case)),
        1,
        RECORDED,
    ),
    Case(
        "429-retry_after-ingest",
        expect_wait(1.0, armed_after_setup(fail("ingest_metrics", 429, 1, 1), ingest_case(200))),
        1,
        RECORDED,
    ),
    # (c) the connection drops after the write is committed
    Case(
        "drop_after-create_experiment",
        arm(drop("create_experiment", AFTER), create_experiment_case),
        1,
    ),
    Case("drop_after-create_folder", arm(drop("create_folder", AFTER), create_folder_case), 1),
    Case(
        "drop_after-rename_folder",
        armed_after_setup(drop("patch_folder", AFTER), rename_folder_case),
        1,
    ),
    Case(
        "drop_after-move_folder",
        armed_after_setup(drop("patch_folder", AFTER), move_folder_case),
        1,
    ),
    Case(
        "drop_after-move_experiment",
        armed_after_setup(drop("move_experiment", AFTER), move_experiment_case),
        1,
    ),
    Case(
        "drop_after-ingest_1000",
        armed_after_setup(drop("ingest_metrics", AFTER), ingest_case(1000)),
        1,
    ),
    Case(
        "drop_after-annotate", armed_after_setup(drop("create_annotation", AFTER), annotate_case), 1
    ),
    Case(
        "drop_after-update_status",
        armed_after_setup(drop("update_experiment_status", AFTER), status_case),
        1,
    ),
    # (d) the answer is held past the client's timeout, after commit
    Case(
        "read_timeout-ingest",
        armed_after_setup(delay("ingest_metrics"), ingest_case(500)),
        1,
        SLOW_INGEST,
    ),
    Case(
        "read_timeout-create_experiment",
        arm(delay("create_experiment"), create_experiment_case),
        1,
        SLOW_CALLS,
    ),
    # (e) the first connection is refused
    Case("refused-create_experiment", arm(refuse(), create_experiment_case), 1),
    Case("refused-create_folder", arm(refuse(), create_folder_case), 1),
    Case("refused-ingest", refused_ingest_case, 1),
    # (f) the connection drops before the write is committed
    Case(
        "drop_before-update_status",
        armed_after_setup(drop("update_experiment_status", BEFORE), status_case),
        1,
    ),
    Case(
        "drop_before-annotate",
        armed_after_setup(drop("create_annotation", BEFORE), annotate_case),
        1,
    ),
    # (g) log() + flush(), and a multi-chunk ingest
    Case(
        "drop_after-log_flush",
        armed_after_setup(drop("ingest_metrics", AFTER), log_flush_case(300)),
        1,
    ),
    Case(
        "drop_before-log_flush",
        armed_after_setup(drop("ingest_metrics", BEFORE), log_flush_case(300)),
        1,
    ),
    Case("drop_after-second_chunk_of_3", multi_chunk_second_drop_case, 1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_matrix(metrics_server: LocalServer, case: Case) -> None:
    setup = metrics_server.session()
    ctx = Ctx(metrics_server, setup, case.session_options)
    tally: Tally | None = None
    try:
        tally = case.run(ctx)
    finally:
        fired = metrics_server.faults.history
        record(tally, len(fired) == case.fired and metrics_server.faults.pending == 0)
        ctx.close()
        setup.close()
    assert len(fired) == case.fired, fired
    assert metrics_server.faults.pending == 0
    assert not tally.duplicated, tally
    assert not tally.lost, tally
    assert tally.found == tally.expected, tally


# -- the policy itself, outside the matrix ---------------------------------------------------


def test_retry_after_is_honoured(metrics_server: LocalServer) -> None:
    """The 429's Retry-After (1 s) sets the wait; a recording sleep keeps the test fast."""
    waits: list[float] = []
    session = metrics_server.session(retry=fast_policy(sleep=waits.append))
    try:
        metrics_server.faults.fail_next("create_folder", status=429, retry_after=1)
        folder = sm.Folder.create("patient", session=session)
        assert waits == [1.0]
        assert [f.id for f in sm.Folder.list(path="patient", session=session)] == [folder.id]
    finally:
        session.close()


def test_an_exhausted_5xx_burst_raises_and_stores_nothing(metrics_server: LocalServer) -> None:
    session = metrics_server.session(retry=fast_policy())
    try:
        metrics_server.faults.fail_next("create_experiment", times=3, status=503)
        with pytest.raises(sm.MetricsApiRequestError) as caught:
            # defer=False: by default an outage at creation is waited out through the spool
            sm.Experiment.create("never", session=session, defer=False)
        assert (caught.value.status_code, caught.value.retryable) == (503, True)
        assert metrics_server.faults.fired == 3
        assert sm.Experiment.list(session=session) == []
        assert sm.Experiment.create("never", session=session).slug == "never"  # next call is fine
    finally:
        session.close()


def test_a_partial_ingest_resumes_without_loss_or_duplicates(metrics_server: LocalServer) -> None:
    """The second chunk fails for good: the first stays stored, ``error.pending`` holds
    the rest, and resuming with it stores each metric once."""
    session = metrics_server.session(retry=fast_policy())
    try:
        exp = sm.Experiment.create("partial", session=session)
        original = session.call
        seen: list[int] = []

        def call(*args: Any, **kwargs: Any) -> Any:
            answer = original(*args, **kwargs)
            if args[0].operation == "ingest_metrics":
                seen.append(1)
                if len(seen) == 1:
                    metrics_server.faults.fail_next("ingest_metrics", times=3, status=500)
            return answer

        session.call = call  # type: ignore[method-assign]
        sent = points(2500)
        with pytest.raises(sm.PartialIngestError) as caught:
            exp.ingest(sent)
        assert caught.value.stored == 1000
        assert [m["client_event_id"] for m in caught.value.pending] == [
            m["client_event_id"] for m in sent[1000:]
        ]
        assert metrics_server.faults.fired == 3
        assert len(exp.metrics(limit=10_000)) == 1000
        assert exp.ingest(caught.value.pending).count == 1500
        tally = metric_tally(exp, sent, session)
        assert (tally.found, tally.distinct, tally.expected) == (2500, 2500, 2500)
    finally:
        session.close()
