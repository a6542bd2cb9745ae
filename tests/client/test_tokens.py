"""Ingestion tokens (contract section 6): minted on first write, cached per experiment,
renewed 5 minutes before expiry and once after a 401/403, forgettable, single-flight
across threads, and never shown."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from syvain_metrics.client.tokens import IngestionTokenCache
from tests.conftest import API, API_KEY, FakeClock, envelope, error_body, experiment_wire, key_wire

HOUR_MS = 3_600_000
RENEWAL_S = 5 * 60


def keys_url(experiment_id: str = "exp-1") -> str:
    return f"{API}/experiments/{experiment_id}/ingestion-keys"


def ingest_url(experiment_id: str = "exp-1") -> str:
    return f"{API}/experiments/{experiment_id}/ingest"


def annotations_url(experiment_id: str = "exp-1") -> str:
    return f"{API}/experiments/{experiment_id}/annotations"


def url_of(call: Any) -> str:
    url: str = call.request.url
    return url.split("?")[0]


class Minter:
    """A ``responses`` callback for ``POST .../ingestion-keys`` that hands out distinct tokens
    expiring ``ttl_ms`` after the fake clock's now."""

    def __init__(self, clock: FakeClock, experiment_id: str, ttl_ms: int = HOUR_MS) -> None:
        self.clock = clock
        self.experiment_id = experiment_id
        self.ttl_ms = ttl_ms
        self.delay = 0.0
        self.tokens: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            token = f"ing_tok_{self.experiment_id}_{len(self.tokens) + 1}_secret"
            self.tokens.append(token)
            number = len(self.tokens)
        expires = int(self.clock.now * 1000) + self.ttl_ms
        key = key_wire(self.experiment_id, f"key-{number}", expires)
        return 200, {}, json.dumps(envelope({"key": key, "token": token}))


def add_minter(
    mocked: responses.RequestsMock, clock: FakeClock, experiment_id: str = "exp-1"
) -> Minter:
    minter = Minter(clock, experiment_id)
    mocked.add_callback(
        responses.POST,
        keys_url(experiment_id),
        callback=minter,
        content_type="application/json",
    )
    return minter


def add_ingest_ok(mocked: responses.RequestsMock, experiment_id: str = "exp-1") -> None:
    mocked.post(ingest_url(experiment_id), json=envelope({"ok": True, "mode": "sync"}))


def add_annotate_ok(mocked: responses.RequestsMock, experiment_id: str = "exp-1") -> None:
    annotation = {
        "id": "a-1",
        "experiment_id": experiment_id,
        "annotation": "note",
        "metadata": {},
        "created_at_ms": 1_795_716_960_000,
    }
    mocked.post(
        annotations_url(experiment_id),
        json=envelope({"experiment": experiment_wire(experiment_id), "annotation": annotation}),
    )


def experiment(session: sm.Session, experiment_id: str = "exp-1") -> sm.Experiment:
    return sm.Experiment(experiment_wire(experiment_id), session=session)


def metric(event_id: str) -> dict[str, Any]:
    return {"client_event_id": event_id, "name": "loss", "value": 0.5, "step": 1}


def mint_calls(mocked: responses.RequestsMock, experiment_id: str = "exp-1") -> list[Any]:
    return [c for c in mocked.calls if url_of(c) == keys_url(experiment_id)]


def write_calls(mocked: responses.RequestsMock, experiment_id: str = "exp-1") -> list[Any]:
    targets = {ingest_url(experiment_id), annotations_url(experiment_id)}
    return [c for c in mocked.calls if url_of(c) in targets]


def bearer(call: Any) -> str:
    value: str = call.request.headers["Authorization"]
    assert value.startswith("Bearer ")
    return value.removeprefix("Bearer ")


# -- minting and reuse --------------------------------------------------------------------


def test_first_write_mints_then_later_writes_reuse_the_token(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    minter = add_minter(mocked, clock)
    add_ingest_ok(mocked)
    add_annotate_ok(mocked)
    exp = experiment(session)
    assert len(mocked.calls) == 0  # nothing minted before a write
    exp.ingest([metric("a")], sync=True)
    exp.annotate("first note")
    exp.ingest([metric("b")], sync=True)
    exp.annotate("second note")
    exp.ingest([metric("c")])

    (mint,) = mint_calls(mocked)
    assert mint.request.method == "POST"
    assert mint.request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert json.loads(mint.request.body) == {"name": "SDK ingestion key"}
    assert minter.tokens == ["ing_tok_exp-1_1_secret"]
    writes = write_calls(mocked)
    assert len(writes) == 5
    assert [bearer(c) for c in writes] == ["ing_tok_exp-1_1_secret"] * 5
    # the mint comes before the first write
    assert url_of(mocked.calls[0]) == keys_url()


def test_annotation_first_also_mints(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    add_annotate_ok(mocked)
    add_ingest_ok(mocked)
    exp = experiment(session)
    exp.annotate("note")
    exp.ingest([metric("a")], sync=True)
    assert len(mint_calls(mocked)) == 1
    assert {bearer(c) for c in write_calls(mocked)} == {"ing_tok_exp-1_1_secret"}


def test_reads_use_the_api_key_not_the_ingestion_token(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    add_ingest_ok(mocked)
    mocked.get(f"{API}/experiments/exp-1", json=envelope({"experiment": experiment_wire()}))
    exp = experiment(session)
    exp.ingest([metric("a")], sync=True)
    exp.refresh()
    (read,) = [c for c in mocked.calls if c.request.method == "GET"]
    assert read.request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_each_experiment_gets_its_own_token(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock, "exp-1")
    add_minter(mocked, clock, "exp-2")
    add_ingest_ok(mocked, "exp-1")
    add_ingest_ok(mocked, "exp-2")
    one, two = experiment(session, "exp-1"), experiment(session, "exp-2")
    one.ingest([metric("a")], sync=True)
    two.ingest([metric("a")], sync=True)
    one.ingest([metric("b")], sync=True)
    assert len(mint_calls(mocked, "exp-1")) == 1
    assert len(mint_calls(mocked, "exp-2")) == 1
    assert {bearer(c) for c in write_calls(mocked, "exp-1")} == {"ing_tok_exp-1_1_secret"}
    assert {bearer(c) for c in write_calls(mocked, "exp-2")} == {"ing_tok_exp-2_1_secret"}


# -- renewal before expiry ------------------------------------------------------------------


def test_token_is_reused_while_more_than_five_minutes_from_expiry(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    add_ingest_ok(mocked)
    exp = experiment(session)
    exp.ingest([metric("a")], sync=True)
    clock.advance(HOUR_MS / 1000 - RENEWAL_S - 1)  # 5 min + 1 s before expiry
    exp.ingest([metric("b")], sync=True)
    assert len(mint_calls(mocked)) == 1
    assert [bearer(c) for c in write_calls(mocked)] == ["ing_tok_exp-1_1_secret"] * 2


def test_token_is_renewed_at_five_minutes_from_expiry(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    add_ingest_ok(mocked)
    exp = experiment(session)
    exp.ingest([metric("a")], sync=True)
    clock.advance(HOUR_MS / 1000 - RENEWAL_S)  # exactly 5 min before expiry
    exp.ingest([metric("b")], sync=True)
    assert len(mint_calls(mocked)) == 2
    assert [bearer(c) for c in write_calls(mocked)] == [
        "ing_tok_exp-1_1_secret",
        "ing_tok_exp-1_2_secret",
    ]


def test_token_is_renewed_inside_five_minutes_and_the_new_one_is_reused(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    add_ingest_ok(mocked)
    exp = experiment(session)
    exp.ingest([metric("a")], sync=True)
    clock.advance(HOUR_MS / 1000 - 60)  # one minute before expiry
    exp.ingest([metric("b")], sync=True)
    clock.advance(60)  # the first token has now expired; the second is fresh
    exp.ingest([metric("c")], sync=True)
    assert len(mint_calls(mocked)) == 2
    assert [bearer(c) for c in write_calls(mocked)] == [
        "ing_tok_exp-1_1_secret",
        "ing_tok_exp-1_2_secret",
        "ing_tok_exp-1_2_secret",
    ]


# -- renewal after a refusal -----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("operation", ["ingest", "annotate"])
def test_refused_token_is_reminted_once_and_the_call_repeated(
    session: sm.Session,
    mocked: responses.RequestsMock,
    clock: FakeClock,
    sleeps: list[float],
    status: int,
    operation: str,
) -> None:
    add_minter(mocked, clock)
    code = "unauthorized" if status == 401 else "forbidden"
    if operation == "ingest":
        mocked.post(ingest_url(), json=error_body("refused", code), status=status)
        add_ingest_ok(mocked)
    else:
        mocked.post(annotations_url(), json=error_body("refused", code), status=status)
        add_annotate_ok(mocked)
    exp = experiment(session)

    if operation == "ingest":
        result = exp.ingest([metric("a")], sync=True)
        assert result.count == 1
    else:
        assert exp.annotate("note").id == "a-1"

    assert len(mint_calls(mocked)) == 2
    writes = write_calls(mocked)
    assert len(writes) == 2
    assert [bearer(c) for c in writes] == ["ing_tok_exp-1_1_secret", "ing_tok_exp-1_2_secret"]
    assert json.loads(writes[0].request.body) == json.loads(writes[1].request.body)
    assert sleeps == []

    # The renewed token is the cached one from now on.
    add_ingest_ok(mocked)
    exp.ingest([metric("b")], sync=True)
    assert len(mint_calls(mocked)) == 2
    assert bearer(write_calls(mocked)[-1]) == "ing_tok_exp-1_2_secret"


@pytest.mark.parametrize("status", [401, 403])
def test_second_refusal_after_reminting_is_raised(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock, status: int
) -> None:
    add_minter(mocked, clock)
    mocked.post(ingest_url(), json=error_body("refused", "unauthorized"), status=status)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        experiment(session).ingest([metric("a")], sync=True)
    assert info.value.status_code == status
    assert len(mint_calls(mocked)) == 2
    assert len(write_calls(mocked)) == 2


def test_second_refusal_on_annotate_is_raised(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    mocked.post(annotations_url(), json=error_body("refused", "unauthorized"), status=401)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        experiment(session).annotate("note")
    assert info.value.status_code == 401
    assert len(mint_calls(mocked)) == 2
    assert len(write_calls(mocked)) == 2


def test_other_errors_do_not_remint(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    mocked.post(
        ingest_url(),
        json=error_body("Invalid request body", "validation_error", field="data[0].value"),
        status=400,
    )
    with pytest.raises(sm.MetricsApiRequestError) as info:
        experiment(session).ingest([metric("a")], sync=True)
    assert info.value.status_code == 400
    assert len(mint_calls(mocked)) == 1
    assert len(write_calls(mocked)) == 1


# -- forgetting ------------------------------------------------------------------------------


def test_experiment_forget_makes_the_next_write_mint(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    add_ingest_ok(mocked)
    exp = experiment(session)
    exp.ingest([metric("a")], sync=True)
    exp.forget_ingestion_credential()
    exp.ingest([metric("b")], sync=True)
    assert len(mint_calls(mocked)) == 2
    assert [bearer(c) for c in write_calls(mocked)] == [
        "ing_tok_exp-1_1_secret",
        "ing_tok_exp-1_2_secret",
    ]


def test_session_forget_drops_only_that_experiment(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock, "exp-1")
    add_minter(mocked, clock, "exp-2")
    add_ingest_ok(mocked, "exp-1")
    add_ingest_ok(mocked, "exp-2")
    one, two = experiment(session, "exp-1"), experiment(session, "exp-2")
    one.ingest([metric("a")], sync=True)
    two.ingest([metric("a")], sync=True)
    session.forget_ingestion_credential("exp-1")
    one.ingest([metric("b")], sync=True)
    two.ingest([metric("b")], sync=True)
    assert len(mint_calls(mocked, "exp-1")) == 2
    assert len(mint_calls(mocked, "exp-2")) == 1


def test_forget_without_a_cached_token_is_harmless(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    session.forget_ingestion_credential("never-used")
    assert len(mocked.calls) == 0


# -- threads ---------------------------------------------------------------------------------


def test_concurrent_first_writes_mint_one_key(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    minter = add_minter(mocked, clock, "exp-new")
    minter.delay = 0.05  # widen the race: every thread arrives while the mint is in flight
    add_ingest_ok(mocked, "exp-new")
    exp = experiment(session, "exp-new")
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results: list[sm.IngestResult] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def write(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            result = exp.ingest([metric(f"thread-{index}")], sync=True)
            with lock:
                results.append(result)
        except BaseException as error:
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    assert len(results) == threads_count
    assert all(r.count == 1 and r.mode == "sync" for r in results)
    assert len(mint_calls(mocked, "exp-new")) == 1
    writes = write_calls(mocked, "exp-new")
    assert len(writes) == threads_count
    assert {bearer(c) for c in writes} == {"ing_tok_exp-new_1_secret"}
    sent_ids = sorted(json.loads(c.request.body)["data"][0]["client_event_id"] for c in writes)
    assert sent_ids == sorted(f"thread-{i}" for i in range(threads_count))


# -- the cache itself ------------------------------------------------------------------------


class FakeMint:
    def __init__(self, clock: FakeClock, ttl_ms: int = HOUR_MS, delay: float = 0.0) -> None:
        self.clock = clock
        self.ttl_ms = ttl_ms
        self.delay = delay
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, experiment_id: str) -> tuple[str, int]:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.calls.append(experiment_id)
            token = f"tok-{experiment_id}-{len(self.calls)}-secret"
        return token, int(self.clock.now * 1000) + self.ttl_ms


def test_cache_hit_does_not_mint_again() -> None:
    clock = FakeClock()
    mint = FakeMint(clock)
    cache = IngestionTokenCache(mint, clock=clock)
    first = cache.token("e1")
    assert first == "tok-e1-1-secret"
    assert cache.token("e1") == first
    assert mint.calls == ["e1"]
    assert cache.token("e2") == "tok-e2-2-secret"
    assert cache.token("e1") == first
    assert mint.calls == ["e1", "e2"]


def test_cache_expiry_boundary() -> None:
    clock = FakeClock()
    mint = FakeMint(clock)
    cache = IngestionTokenCache(mint, clock=clock)
    first = cache.token("e1")
    clock.advance(HOUR_MS / 1000 - RENEWAL_S - 1)
    assert cache.token("e1") == first
    assert len(mint.calls) == 1
    clock.advance(1)  # now exactly 5 minutes before expiry: no longer "more than"
    second = cache.token("e1")
    assert second != first
    assert len(mint.calls) == 2
    clock.advance(1)
    assert cache.token("e1") == second  # the new token has a full hour ahead
    assert len(mint.calls) == 2


def test_cache_expiry_boundary_with_fractional_clock() -> None:
    clock = FakeClock(start=1_795_716_950.25)
    expires_ms = 1_795_716_950_250 + HOUR_MS
    calls: list[str] = []

    def mint(experiment_id: str) -> tuple[str, int]:
        calls.append(experiment_id)
        return f"t{len(calls)}", expires_ms

    cache = IngestionTokenCache(mint, clock=clock)
    cache.token("e1")
    clock.now = (expires_ms - RENEWAL_S * 1000 - 1) / 1000  # 5 min + 1 ms before expiry
    assert cache.token("e1") == "t1"
    clock.now = (expires_ms - RENEWAL_S * 1000) / 1000
    assert cache.token("e1") == "t2"


def test_renew_replaces_the_stale_token() -> None:
    clock = FakeClock()
    mint = FakeMint(clock)
    cache = IngestionTokenCache(mint, clock=clock)
    stale = cache.token("e1")
    fresh = cache.renew("e1", stale)
    assert fresh != stale
    assert len(mint.calls) == 2
    assert cache.token("e1") == fresh
    # Renewing with a token that is no longer cached returns the current one.
    assert cache.renew("e1", stale) == fresh
    assert len(mint.calls) == 2


def test_renew_by_many_threads_with_the_same_stale_token_mints_once() -> None:
    clock = FakeClock()
    mint = FakeMint(clock)
    cache = IngestionTokenCache(mint, clock=clock)
    stale = cache.token("e1")
    mint.delay = 0.05
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    got: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def renew() -> None:
        try:
            barrier.wait(timeout=10)
            token = cache.renew("e1", stale)
            with lock:
                got.append(token)
        except BaseException as error:
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=renew) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert len(mint.calls) == 2  # the first token and exactly one renewal
    assert len(got) == threads_count
    assert set(got) == {"tok-e1-2-secret"}


def test_concurrent_first_use_of_the_cache_mints_once() -> None:
    clock = FakeClock()
    mint = FakeMint(clock, delay=0.05)
    cache = IngestionTokenCache(mint, clock=clock)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    got: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        barrier.wait(timeout=10)
        token = cache.token("e1")
        with lock:
            got.append(token)

    threads = [threading.Thread(target=take) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert mint.calls == ["e1"]
    assert got == ["tok-e1-1-secret"] * threads_count


def test_forget_makes_the_next_token_call_mint() -> None:
    clock = FakeClock()
    mint = FakeMint(clock)
    cache = IngestionTokenCache(mint, clock=clock)
    first = cache.token("e1")
    other = cache.token("e2")
    cache.forget("e1")
    assert cache.token("e1") != first
    assert cache.token("e2") == other
    assert mint.calls == ["e1", "e2", "e1"]
    cache.forget("unknown")  # a no-op


def test_failed_mint_caches_nothing() -> None:
    clock = FakeClock()
    attempts: list[str] = []

    def mint(experiment_id: str) -> tuple[str, int]:
        attempts.append(experiment_id)
        if len(attempts) == 1:
            raise sm.MetricsApiRequestError("HTTP 500: boom", status_code=500, retryable=True)
        return "t-good", int(clock.now * 1000) + HOUR_MS

    cache = IngestionTokenCache(mint, clock=clock)
    with pytest.raises(sm.MetricsApiRequestError):
        cache.token("e1")
    assert cache.token("e1") == "t-good"
    assert len(attempts) == 2


# -- secrets in reprs ------------------------------------------------------------------------


def test_cache_repr_never_shows_a_token() -> None:
    clock = FakeClock()
    cache = IngestionTokenCache(FakeMint(clock), clock=clock)
    token = cache.token("e1")
    assert token not in repr(cache)
    assert token not in str(cache)


def test_session_repr_never_shows_a_token(
    session: sm.Session, mocked: responses.RequestsMock, clock: FakeClock
) -> None:
    add_minter(mocked, clock)
    add_ingest_ok(mocked)
    exp = experiment(session)
    exp.ingest([metric("a")], sync=True)
    token = "ing_tok_exp-1_1_secret"
    assert bearer(write_calls(mocked)[0]) == token  # a token is cached now
    for text in (repr(session), str(session), repr(session.tokens), str(session.tokens), repr(exp)):
        assert token not in text
        assert API_KEY not in text
