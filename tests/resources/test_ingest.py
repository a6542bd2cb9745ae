"""Writing metrics with ``ingest()``: chunking, resumable partial failures, ids derived from
the whole record, and the wire form of a metric. (``log()`` has its own file.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from tests.conftest import API, API_KEY, envelope, error_body, experiment_wire, key_wire

TOKEN = "ing_tok_0123456789_secret"


class IngestServer:
    """Answers key minting and ingest for one experiment; stores metrics first-write-wins.

    ``statuses`` scripts the HTTP status of successive ingest requests (200 once exhausted).
    """

    def __init__(
        self,
        mocked: responses.RequestsMock,
        experiment_id: str = "exp-1",
        statuses: list[int] | None = None,
    ) -> None:
        self.experiment_id = experiment_id
        self.statuses = list(statuses or [])
        self.attempts: list[tuple[Any, dict[str, Any], int]] = []  # (request, body, status)
        self.stored: dict[str, dict[str, Any]] = {}
        self.mints = 0
        base = f"{API}/experiments/{experiment_id}"
        mocked.add_callback(responses.POST, f"{base}/ingestion-keys", callback=self._mint)
        mocked.add_callback(responses.POST, f"{base}/ingest", callback=self._ingest)

    def _mint(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.mints += 1
        data = {"key": key_wire(self.experiment_id), "token": TOKEN}
        return 200, {}, json.dumps(envelope(data))

    def _ingest(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        status = self.statuses.pop(0) if self.statuses else 200
        self.attempts.append((request, body, status))
        if status >= 400:
            return status, {}, json.dumps(error_body("rejected", "validation_error", field="data"))
        for item in body["data"]:
            self.stored.setdefault(item["client_event_id"], item)
        return 200, {}, json.dumps(envelope({"ok": True, "mode": "sync"}))

    @property
    def accepted(self) -> list[list[dict[str, Any]]]:
        """The metrics of every 2xx ingest request, in order."""
        return [body["data"] for _, body, status in self.attempts if status < 400]

    @property
    def accepted_ids(self) -> list[str]:
        return [m["client_event_id"] for batch in self.accepted for m in batch]

    @property
    def all_bodies(self) -> list[list[dict[str, Any]]]:
        return [body["data"] for _, body, _ in self.attempts]


def status_callback(request: Any) -> tuple[int, dict[str, str], str]:
    body = json.loads(request.body)
    extra: dict[str, Any] = {"status": body["status"]}
    if body["status"] == "error":
        extra["error_name"] = body["error"]["name"]
        extra["error_detail"] = body["error"]["detail"]
    return 200, {}, json.dumps(envelope({"experiment": experiment_wire(**extra)}))


@pytest.fixture
def exp(session: sm.Session) -> sm.Experiment:
    return sm.Experiment(experiment_wire(), session=session)


def metrics(count: int, name: str = "loss") -> list[dict[str, Any]]:
    return [
        {"client_event_id": f"ev-{i:05d}", "name": name, "value": i / 7, "step": i}
        for i in range(count)
    ]


def wire_form(item: dict[str, Any]) -> dict[str, Any]:
    """The contract's wire form of a metric that carries its id (independent of the SDK)."""
    out = {
        "client_event_id": item["client_event_id"],
        "name": item["name"],
        "value": float(item["value"]),
        "step": item.get("step"),
    }
    if item.get("metadata") is not None:
        out["metadata"] = item["metadata"]
    if item.get("timestamp_ms") is not None:
        out["timestamp_ms"] = item["timestamp_ms"]
    return out


def url_path(call: Any) -> str:
    return call.request.url.split("?")[0][len(API) :]


def summary(call: Any) -> tuple[str, Any]:
    """(path, status sent) for status updates, (path, metric count) for ingest, else (path, None)."""
    where = url_path(call)
    body = json.loads(call.request.body)
    if where.endswith("/ingest"):
        return where, len(body["data"])
    return where, body.get("status")


# -- chunking -------------------------------------------------------------------------


def test_ingest_splits_into_requests_of_at_most_1000_in_order(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    items = metrics(2_500)
    result = exp.ingest(items, sync=True)

    assert result == sm.IngestResult(count=2_500, requests=3, mode="sync")
    assert [len(b) for b in server.accepted] == [1_000, 1_000, 500]
    assert server.accepted_ids == [m["client_event_id"] for m in items]
    assert [m for batch in server.accepted for m in batch] == [wire_form(m) for m in items]
    keys = [request.headers["Idempotency-Key"] for request, _, _ in server.attempts]
    assert len(set(keys)) == 3
    assert all(k for k in keys)
    for request, _, _ in server.attempts:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.url.endswith("?sync=true")
    # one key minted, with the API key, before the first chunk, never with an Idempotency-Key
    assert server.mints == 1
    assert url_path(mocked.calls[0]) == "/experiments/exp-1/ingestion-keys"
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "Idempotency-Key" not in mocked.calls[0].request.headers


def test_exactly_1000_metrics_is_one_request(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    assert exp.ingest(metrics(1_000)).requests == 1
    assert exp.ingest(metrics(1_001)).requests == 2
    assert [len(b) for b in server.accepted] == [1_000, 1_000, 1]


def test_empty_ingest_sends_nothing(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    IngestServer(mocked)
    assert exp.ingest([]) == sm.IngestResult(count=0, requests=0, mode=None)
    assert len(mocked.calls) == 0


def test_ingest_accepts_any_iterable(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    server = IngestServer(mocked)
    items = metrics(1_200)
    assert exp.ingest(m for m in items).count == 1_200
    assert server.accepted_ids == [m["client_event_id"] for m in items]


# -- partial failure ------------------------------------------------------------------


def test_partial_failure_reports_stored_and_pending_then_resumes_exactly(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked, statuses=[200, 400])
    items = metrics(2_500)
    with pytest.raises(sm.PartialIngestError) as caught:
        exp.ingest(items)
    error = caught.value
    assert isinstance(error, sm.MetricsApiRequestError)
    assert error.stored == 1_000
    assert len(error.pending) == 1_500
    assert error.pending == [wire_form(m) for m in items[1_000:]]
    assert "1000" in str(error).replace(",", "")
    assert error.status_code == 400
    assert error.retryable is False
    assert len(server.attempts) == 2  # the third chunk was never sent

    result = exp.ingest(error.pending)
    assert result.count == 1_500
    assert result.requests == 2
    assert [len(b) for b in server.accepted] == [1_000, 1_000, 500]
    # no loss, no duplicates, input order
    assert server.accepted_ids == [m["client_event_id"] for m in items]
    assert set(server.stored) == {m["client_event_id"] for m in items}


def test_partial_failure_pending_carries_derived_ids(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked, statuses=[200, 400])
    items = [{"name": "loss", "value": 1.0, "step": i} for i in range(1_500)]
    with pytest.raises(sm.PartialIngestError) as caught:
        exp.ingest(items)
    failed_ids = [m["client_event_id"] for m in server.all_bodies[1]]
    assert [m["client_event_id"] for m in caught.value.pending] == failed_ids
    exp.ingest(caught.value.pending)
    assert len(server.accepted_ids) == 1_500
    assert len(set(server.accepted_ids)) == 1_500
    assert server.accepted_ids[1_000:] == failed_ids


def test_retryable_failure_of_a_later_chunk_reuses_its_key_then_reports_partial(
    exp: sm.Experiment, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    server = IngestServer(mocked, statuses=[200, 503, 503, 503])
    with pytest.raises(sm.PartialIngestError) as caught:
        exp.ingest(metrics(1_800))
    assert caught.value.stored == 1_000
    assert caught.value.retryable is True
    assert len(caught.value.pending) == 800
    keys = [r.headers["Idempotency-Key"] for r, _, _ in server.attempts]
    assert len(keys) == 4
    assert keys[1] == keys[2] == keys[3] != keys[0]
    assert sleeps == [0.25, 0.5]


# -- derived client_event_id ----------------------------------------------------------


def sent_ids(server: IngestServer) -> list[str]:
    return server.accepted_ids


def test_missing_event_id_is_derived_deterministically(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    base = {"name": "loss", "value": 0.5, "step": 3}
    exp.ingest([{**base, "metadata": {"split": "train", "layer": 2}}])
    exp.ingest([{**base, "metadata": {"layer": 2, "split": "train"}}])
    exp.ingest([{**base, "value": 0.9, "metadata": {"layer": 2, "split": "train"}}])
    first, second, third = sent_ids(server)
    assert first == second  # the same record, whatever the key order: one id
    assert third != first  # a different value is a different event, never merged
    assert 1 <= len(first) <= 200
    assert len(server.stored) == 2


def test_nested_metadata_key_order_does_not_change_the_id(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    exp.ingest([{"name": "loss", "value": 1.0, "step": 1, "metadata": {"o": {"a": 1, "b": 2}}}])
    exp.ingest([{"name": "loss", "value": 1.0, "step": 1, "metadata": {"o": {"b": 2, "a": 1}}}])
    first, second = sent_ids(server)
    assert first == second


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"name": "loss", "step": 4, "metadata": {"split": "train"}}, id="step"),
        pytest.param({"name": "acc", "step": 3, "metadata": {"split": "train"}}, id="name"),
        pytest.param({"name": "loss", "step": 3, "metadata": {"split": "valid"}}, id="meta-value"),
        pytest.param({"name": "loss", "step": 3, "metadata": {"part": "train"}}, id="meta-key"),
        pytest.param({"name": "loss", "step": 3}, id="no-meta"),
        pytest.param(
            {"name": "loss", "step": 3, "metadata": {"split": "train", "x": 1}}, id="more"
        ),
        pytest.param(
            {"name": "loss", "step": 3, "metadata": {"split": "train"}, "timestamp_ms": 5},
            id="timestamp",
        ),
    ],
)
def test_derived_id_differs_when_the_series_point_differs(
    exp: sm.Experiment, mocked: responses.RequestsMock, other: dict[str, Any]
) -> None:
    server = IngestServer(mocked)
    reference = {"name": "loss", "value": 1.0, "step": 3, "metadata": {"split": "train"}}
    exp.ingest([reference, {**other, "value": 1.0}])
    first, second = sent_ids(server)
    assert first != second


def test_derived_id_differs_between_experiments(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    one = IngestServer(mocked, "exp-1")
    two = IngestServer(mocked, "exp-2")
    point = {"name": "loss", "value": 1.0, "step": 3, "metadata": {"split": "train"}}
    sm.Experiment(experiment_wire("exp-1"), session=session).ingest([point])
    sm.Experiment(experiment_wire("exp-2", slug="run-2"), session=session).ingest([point])
    assert one.accepted_ids[0] != two.accepted_ids[0]


def test_resending_the_same_records_stores_them_once(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    records = [
        {"name": "loss", "value": 1.0, "step": None},
        {"name": "loss", "value": 0.5, "step": None},
        {"name": "loss", "value": 0.5, "step": 2, "metadata": {"rank": 1}},
    ]
    exp.ingest(records)
    exp.ingest(records)  # e.g. a script run twice
    ids = sent_ids(server)
    assert ids[:3] == ids[3:]
    assert len(set(ids)) == 3
    assert len(server.stored) == 3


def test_whole_float_step_derives_the_same_id_as_the_int_step(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    # step 3.0 is accepted as step 3 (it is sent as 3), so it is the same point of the series
    server = IngestServer(mocked)
    exp.ingest([{"name": "loss", "value": 1.0, "step": 3}])
    exp.ingest([{"name": "loss", "value": 1.0, "step": 3.0}])
    assert [m["step"] for batch in server.accepted for m in batch] == [3, 3]
    first, second = sent_ids(server)
    assert first == second


def test_given_event_id_is_kept(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    server = IngestServer(mocked)
    exp.ingest([{"client_event_id": "mine/1", "name": "loss", "value": 1.0, "step": 1}])
    assert sent_ids(server) == ["mine/1"]


def test_metric_points_are_accepted_and_match_dicts(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    exp.ingest(
        [
            sm.MetricPoint("loss", 0.5, step=1, metadata={"split": "train"}),
            sm.MetricPoint("acc", 1, client_event_id="acc-0", timestamp_ms=1_700_000_000_000),
            {"name": "loss", "value": 0.5, "step": 1, "metadata": {"split": "train"}},
        ]
    )
    point, acc, as_dict = server.accepted[0]
    assert point == as_dict
    assert point["client_event_id"] == as_dict["client_event_id"]
    assert acc == {
        "client_event_id": "acc-0",
        "name": "acc",
        "value": 1.0,
        "step": None,
        "timestamp_ms": 1_700_000_000_000,
    }


def test_wire_form_of_a_metric(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    server = IngestServer(mocked)
    exp.ingest(
        [
            {"value": 2, "name": "loss", "client_event_id": "a", "step": 1},
            {
                "timestamp_ms": 5,
                "metadata": {"s": 1},
                "step": None,
                "value": 1.5,
                "name": "n",
                "client_event_id": "b",
            },
            {"client_event_id": "c", "name": "n", "value": 1.0},
            {"client_event_id": "d", "name": "n", "value": 1.0, "step": 2, "timestamp_ms": None},
        ]
    )
    request, _, _ = server.attempts[0]
    raw = request.body.decode() if isinstance(request.body, bytes) else request.body
    data = json.loads(raw)["data"]
    assert [list(m) for m in data] == [
        ["client_event_id", "name", "value", "step"],
        ["client_event_id", "name", "value", "step", "metadata", "timestamp_ms"],
        ["client_event_id", "name", "value", "step"],
        ["client_event_id", "name", "value", "step"],
    ]
    assert data[0]["value"] == 2.0
    assert '"value":2.0' in raw.replace(" ", "")
    assert data[1]["step"] is None
    assert data[2]["step"] is None  # the key is always sent
    assert "null" not in json.dumps([m.get("timestamp_ms", 0) for m in data])


def test_whole_float_metadata_derives_the_same_id_as_the_int(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    # The service matches metadata as JSON values, where 1 == 1.0: one point, one id.
    server = IngestServer(mocked)
    exp.ingest([{"name": "acc", "value": 0.5, "step": 1, "metadata": {"k": 1, "v": [2]}}])
    exp.ingest([{"name": "acc", "value": 0.5, "step": 1, "metadata": {"k": 1.0, "v": [2.0]}}])
    first, second = sent_ids(server)
    assert first == second


# -- a huge list: validated in place, sent chunk by chunk -------------------------------------


def test_a_bad_metric_far_into_a_huge_list_is_named_before_anything_is_sent(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)
    metrics: list[dict[str, Any]] = [
        {"name": "loss", "value": float(i), "step": i} for i in range(30_000)
    ]
    metrics[25_001]["value"] = float("nan")
    with pytest.raises(sm.MetricsValidationError, match=r"metrics\[25001\]\.value"):
        exp.ingest(metrics)
    assert server.attempts == []
    assert server.mints == 0
    assert "client_event_id" not in metrics[0]  # the caller's dicts are left as they were


def test_a_generator_is_validated_whole_before_the_first_request(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    server = IngestServer(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)

    def points(bad_at: int | None) -> Any:
        for i in range(2_500):
            yield {"name": "loss" if i != bad_at else "", "value": 1.0, "step": i}

    with pytest.raises(sm.MetricsValidationError, match=r"metrics\[2400\]\.name"):
        exp.ingest(points(2_400))
    assert server.attempts == []
    assert exp.ingest(points(None)).requests == 3
    assert [len(chunk) for chunk in server.accepted] == [1_000, 1_000, 500]


def test_ingest_of_a_huge_list_allocates_a_request_at_a_time(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    # The old path validated and copied the whole list (about 700 bytes a metric) before
    # the first request; now a window of validation columns and one request's body are
    # all that ingest() allocates on top of its input.
    import tracemalloc

    class Quiet(IngestServer):
        def _ingest(self, request: Any) -> tuple[int, dict[str, str], str]:
            self.count = getattr(self, "count", 0) + len(json.loads(request.body)["data"])
            return 200, {}, json.dumps(envelope({"ok": True, "mode": "sync"}))

    server = Quiet(mocked)
    mocked.assert_all_requests_are_fired = False
    exp = sm.Experiment(experiment_wire(), session=session)
    metrics = [
        {"name": "loss", "value": i / 7, "step": i, "metadata": {"split": "train"}}
        for i in range(60_000)
    ]
    tracemalloc.start()
    try:
        exp.ingest(metrics)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.count == 60_000
    # responses keeps every call it answered (bodies included); without it the peak is
    # smaller still. 60,000 metrics copied whole would take over 40 MB.
    calls_kept = sum(len(call.request.body or b"") for call in mocked.calls)
    assert peak - calls_kept < 8 * 1024 * 1024
