"""Every limit of the wire contract is checked before a request leaves the process.

Each bad input raises ``sm.MetricsValidationError`` (also a ``ValueError``) whose ``errors``
name the offending field, ``mocked`` sees no request at all, and nothing changes on the
objects involved. Valid edge values (the limits themselves) go through unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from tests.conftest import API, envelope, experiment_wire, folder_wire, key_wire

NAN = float("nan")
INF = float("inf")
MAX_SAFE = 2**53 - 1
SEVEN_DAYS_MS = 7 * 24 * 60 * 60 * 1000
NAIVE = dt.datetime(2026, 1, 1, 12, 0, 0)
AWARE = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
TOKEN = "ing_tok_validation_secret"

Call = Callable[[sm.Experiment], Any]


@pytest.fixture
def exp(session: sm.Session) -> sm.Experiment:
    return sm.Experiment(experiment_wire(), session=session)


def assert_names(error: sm.MetricsValidationError, *fields: str) -> None:
    """The error's ``errors`` hold each field as a key, and its message mentions it."""
    assert isinstance(error, ValueError)
    for field in fields:
        assert field in error.errors, f"{field!r} not in {sorted(error.errors)}"
        assert field in str(error)


def metric(index: int = 0, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "client_event_id": f"ev-{index}",
        "name": "loss",
        "value": 0.5,
        "step": index,
    }
    item.update(overrides)
    return item


def batch_with_bad_at(position: int, bad: Any) -> list[Any]:
    return [*(metric(i) for i in range(position)), bad]


# -- one table per family of calls ----------------------------------------------------

FOLDER_CASES: list[Any] = [
    pytest.param(lambda e: sm.Folder.create(""), "name", id="create-name-empty"),
    pytest.param(lambda e: sm.Folder.create("x" * 201), "name", id="create-name-201"),
    pytest.param(
        lambda e: sm.Folder(folder_wire(), session=e.session).rename(""),
        "name",
        id="rename-empty",
    ),
    pytest.param(
        lambda e: sm.Folder(folder_wire(), session=e.session).rename("x" * 201),
        "name",
        id="rename-201",
    ),
]

EXPERIMENT_CREATE_CASES: list[Any] = [
    pytest.param(lambda e: sm.Experiment.create(""), "slug", id="slug-empty"),
    pytest.param(lambda e: sm.Experiment.create("s" * 201), "slug", id="slug-201"),
    pytest.param(
        lambda e: sm.Experiment.create("run", description="d" * 4_001),
        "description",
        id="description-4001",
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={"lr": NAN}), "metadata", id="meta-nan"
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={"lr": -INF}), "metadata", id="meta-ninf"
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={"opt": {"betas": [0.9, INF]}}),
        "metadata",
        id="meta-nested-inf",
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={"a": {"b": {"c": NAN}}}),
        "metadata",
        id="meta-deep-nan",
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata=[("lr", 0.1)]),  # type: ignore[arg-type]
        "metadata",
        id="meta-list",
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata="lr=0.1"),  # type: ignore[arg-type]
        "metadata",
        id="meta-str",
    ),
]

STATUS_CASES: list[Any] = [
    pytest.param(lambda e: e.set_status("created"), "status", id="status-created"),
    pytest.param(lambda e: e.set_status("bogus"), "status", id="status-bogus"),
    pytest.param(
        lambda e: e.set_status("error", error={"name": "n" * 501}), "error.name", id="name-501"
    ),
    pytest.param(
        lambda e: e.set_status("error", error={"name": "E", "detail": "d" * 8_001}),
        "error.detail",
        id="detail-8001",
    ),
    pytest.param(
        lambda e: e.fail({"name": "n" * 501, "detail": ""}), "error.name", id="fail-name-501"
    ),
    pytest.param(lambda e: e.set_status("done", timestamp_ms=-1), "timestamp_ms", id="ts-neg"),
    pytest.param(lambda e: e.set_status("done", timestamp_ms=2**53), "timestamp_ms", id="ts-2**53"),
    pytest.param(lambda e: e.set_status("done", timestamp_ms=NAIVE), "timestamp_ms", id="ts-naive"),
]

INGESTION_KEY_CASES: list[Any] = [
    pytest.param(lambda e: e.create_ingestion_key(name=""), "name", id="name-empty"),
    pytest.param(lambda e: e.create_ingestion_key(name="k" * 201), "name", id="name-201"),
    pytest.param(lambda e: e.create_ingestion_key(ttl_ms=0), "ttl_ms", id="ttl-0"),
    pytest.param(lambda e: e.create_ingestion_key(ttl_ms=-5), "ttl_ms", id="ttl-neg"),
    pytest.param(
        lambda e: e.create_ingestion_key(ttl_ms=SEVEN_DAYS_MS + 1), "ttl_ms", id="ttl-7d+1"
    ),
    pytest.param(
        lambda e: e.create_ingestion_key(ttl_ms=dt.timedelta(days=7, milliseconds=1)),
        "ttl_ms",
        id="ttl-timedelta-7d+1",
    ),
]

# (field of metrics[3], the bad metric)
BAD_METRICS: list[Any] = [
    pytest.param("client_event_id", metric(3, client_event_id=""), id="id-empty"),
    pytest.param("client_event_id", metric(3, client_event_id="i" * 201), id="id-201"),
    pytest.param("client_event_id", metric(3, client_event_id=7), id="id-int"),
    pytest.param("name", metric(3, name=""), id="name-empty"),
    pytest.param("name", metric(3, name="n" * 501), id="name-501"),
    pytest.param("name", {"client_event_id": "ev-3", "value": 1.0, "step": 3}, id="name-missing"),
    pytest.param("value", metric(3, value=NAN), id="value-nan"),
    pytest.param("value", metric(3, value=INF), id="value-inf"),
    pytest.param("value", metric(3, value=-INF), id="value-ninf"),
    pytest.param("value", metric(3, value="1.0"), id="value-str"),
    pytest.param("value", metric(3, value=True), id="value-bool"),
    pytest.param("value", metric(3, value=None), id="value-none"),
    pytest.param("value", {"client_event_id": "ev-3", "name": "loss", "step": 3}, id="value-miss"),
    pytest.param("step", metric(3, step=-1), id="step-neg"),
    pytest.param("step", metric(3, step=1.5), id="step-fraction"),
    pytest.param("step", metric(3, step=2**53), id="step-2**53"),
    pytest.param("step", metric(3, step="3"), id="step-str"),
    pytest.param("step", metric(3, step=True), id="step-bool"),
    pytest.param("timestamp_ms", metric(3, timestamp_ms=-1), id="ts-neg"),
    pytest.param("timestamp_ms", metric(3, timestamp_ms=2**53), id="ts-2**53"),
    pytest.param("timestamp_ms", metric(3, timestamp_ms="1700000000000"), id="ts-str"),
    pytest.param("metadata", metric(3, metadata=["split", "train"]), id="meta-list"),
    pytest.param("metadata", metric(3, metadata="split=train"), id="meta-str"),
    pytest.param("metadata", metric(3, metadata={"lr": NAN}), id="meta-nan"),
    pytest.param("metadata", metric(3, metadata={"a": {"b": [1, INF]}}), id="meta-nested-inf"),
    pytest.param("metadata", metric(3, metadata={1: "x"}), id="meta-int-key"),
    pytest.param("bogus", metric(3, bogus=1), id="unknown-key"),
]

NON_DICT_ITEMS: list[Any] = [
    pytest.param(5, id="int"),
    pytest.param("loss", id="str"),
    pytest.param(None, id="none"),
    pytest.param(["loss", 0.5, 3], id="list"),
]

ANNOTATION_CASES: list[Any] = [
    pytest.param(lambda e: e.annotate(""), "annotation", id="text-empty"),
    pytest.param(lambda e: e.annotate("t" * 16_001), "annotation", id="text-16001"),
    pytest.param(lambda e: e.annotate("ok", metadata={"x": NAN}), "metadata", id="meta-nan"),
    pytest.param(
        lambda e: e.annotate("ok", metadata={"x": {"y": INF}}), "metadata", id="meta-nested"
    ),
    pytest.param(
        lambda e: e.annotate("ok", metadata=["x"]),  # type: ignore[arg-type]
        "metadata",
        id="meta-list",
    ),
]

LIMIT_CALLS: list[Any] = [
    pytest.param(lambda e, n: sm.Experiment.list(limit=n), id="experiments"),
    pytest.param(lambda e, n: e.annotations(limit=n), id="annotations"),
    pytest.param(lambda e, n: e.catalog(limit=n), id="catalog"),
    pytest.param(lambda e, n: e.catalog_values("loss", limit=n), id="catalog-values"),
    pytest.param(lambda e, n: e.metrics("loss", limit=n), id="metrics"),
    pytest.param(lambda e, n: sm.compare([e.series("loss")], limit=n), id="compare"),
]

BAD_LIMITS: list[Any] = [
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param("10", id="str"),
    pytest.param(2.5, id="fraction"),
    pytest.param(True, id="bool"),
]

LIST_AND_READ_CASES: list[Any] = [
    pytest.param(lambda e: sm.Experiment.list(status="bogus"), ("status",), id="list-status"),
    pytest.param(lambda e: sm.Experiment.list(from_ms=NAIVE), ("from", "from_ms"), id="from-naive"),
    pytest.param(lambda e: sm.Experiment.list(to_ms=NAIVE), ("to", "to_ms"), id="to-naive"),
    pytest.param(lambda e: sm.Experiment.list(from_ms=-1), ("from", "from_ms"), id="from-neg"),
    pytest.param(lambda e: e.annotations(from_ms=NAIVE), ("from", "from_ms"), id="annot-from"),
    pytest.param(lambda e: e.metrics("loss", sort_by="bogus"), ("sort_by",), id="sort-bogus"),
    pytest.param(
        lambda e: e.metrics("loss", sort_by=["step", "bogus"]), ("sort_by",), id="sort-list-bad"
    ),
    pytest.param(
        lambda e: e.metrics("loss", sort_by="series"), ("sort_by",), id="sort-series-not-metrics"
    ),
    pytest.param(
        lambda e: e.metrics("loss", sort_direction="up"), ("sort_direction",), id="direction-up"
    ),
    pytest.param(
        lambda e: e.metrics("loss", metadata={"split": "train", "layer": 3}),
        ("metadata",),
        id="metadata-two-keys",
    ),
    pytest.param(
        lambda e: e.metrics("loss", metadata={"": "train"}), ("metadata",), id="metadata-empty-key"
    ),
    pytest.param(lambda e: e.metrics("loss", metadata=""), ("metadata",), id="metadata-empty-str"),
    pytest.param(
        lambda e: e.metrics("loss", metadata={"lr": NAN}), ("metadata",), id="metadata-value-nan"
    ),
    pytest.param(lambda e: e.metrics("loss", from_step=-1), ("from_step",), id="from-step-neg"),
    pytest.param(lambda e: e.metrics("loss", to_step=-1), ("to_step",), id="to-step-neg"),
    pytest.param(lambda e: e.metrics("loss", step=1.5), ("step",), id="step-fraction"),
    pytest.param(lambda e: e.metrics("loss", from_time=NAIVE), ("from_time",), id="from-naive"),
    pytest.param(lambda e: e.metrics("loss", to_time=-1), ("to_time",), id="to-time-neg"),
    pytest.param(lambda e: e.metrics(""), ("metric_name",), id="metric-name-empty"),
    pytest.param(lambda e: e.catalog_values(""), ("metric",), id="catalog-values-empty-metric"),
    pytest.param(
        lambda e: e.catalog_values("loss", keys=[1]),  # type: ignore[list-item]
        ("key", "keys"),
        id="catalog-values-bad-key",
    ),
]

COMPARE_CASES: list[Any] = [
    pytest.param(lambda e: sm.compare([]), "series", id="no-series"),
    pytest.param(
        lambda e: sm.compare([sm.Series(f"exp-{i}", "loss") for i in range(65)]),
        "series",
        id="65-series",
    ),
    pytest.param(
        lambda e: sm.compare([sm.Series("", "loss")]), "series[0].experiment_id", id="empty-exp-id"
    ),
    pytest.param(
        lambda e: sm.compare([e.series("loss"), sm.Series("exp-1", "")]),
        "series[1].metric_name",
        id="empty-metric-name",
    ),
    pytest.param(
        lambda e: sm.compare([e.series("loss"), "exp-1/loss"]),  # type: ignore[list-item]
        "series",
        id="non-series-item",
    ),
    pytest.param(
        lambda e: sm.compare([e.series("loss", metadata={"a": 1, "b": 2})]),
        "series[0].metadata",
        id="series-metadata-two-keys",
    ),
    pytest.param(
        lambda e: sm.compare([e.series("loss")], sort_by="bogus"), "sort_by", id="sort-bogus"
    ),
    pytest.param(
        lambda e: sm.compare([e.series("loss")], sort_direction="up"),
        "sort_direction",
        id="direction-up",
    ),
]


# -- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [*FOLDER_CASES, *EXPERIMENT_CREATE_CASES, *INGESTION_KEY_CASES, *ANNOTATION_CASES],
)
def test_write_limits_are_checked_before_sending(
    exp: sm.Experiment, mocked: responses.RequestsMock, call: Call, field: str
) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        call(exp)
    assert_names(caught.value, field)
    assert len(mocked.calls) == 0


@pytest.mark.parametrize(("call", "field"), STATUS_CASES)
def test_status_update_limits_change_nothing(
    exp: sm.Experiment, mocked: responses.RequestsMock, call: Call, field: str
) -> None:
    before = exp.to_dict()
    with pytest.raises(sm.MetricsValidationError) as caught:
        call(exp)
    assert_names(caught.value, field)
    assert len(mocked.calls) == 0
    assert exp.to_dict() == before
    assert exp.status == "created"


@pytest.mark.parametrize(("field", "bad"), BAD_METRICS)
def test_ingest_names_the_bad_metric_and_field(
    exp: sm.Experiment, mocked: responses.RequestsMock, field: str, bad: dict[str, Any]
) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        exp.ingest(batch_with_bad_at(3, bad))
    assert_names(caught.value, f"metrics[3].{field}")
    assert not any(
        key.startswith(("metrics[0]", "metrics[1]", "metrics[2]")) for key in caught.value.errors
    )
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("item", NON_DICT_ITEMS)
def test_ingest_rejects_a_non_dict_item(
    exp: sm.Experiment, mocked: responses.RequestsMock, item: Any
) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        exp.ingest(batch_with_bad_at(3, item))
    assert "metrics[3]" in caught.value.errors
    assert len(mocked.calls) == 0


def test_ingest_names_every_bad_index(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    items: list[Any] = [metric(i) for i in range(10)]
    items[2] = metric(2, value=NAN)
    items[5] = metric(5, name="")
    items[8] = metric(8, step=-4)
    with pytest.raises(sm.MetricsValidationError) as caught:
        exp.ingest(items)
    assert_names(caught.value, "metrics[2].value", "metrics[5].name", "metrics[8].step")
    assert len(mocked.calls) == 0


def test_opposite_infinities_in_one_batch_are_a_validation_error(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    # +inf and -inf together must still be reported per metric, not as a bare arithmetic error.
    items = [metric(0), metric(1), metric(2, value=INF), metric(3, value=-INF)]
    with pytest.raises(sm.MetricsValidationError) as caught:
        exp.ingest(items)
    assert_names(caught.value, "metrics[2].value", "metrics[3].value")
    assert len(mocked.calls) == 0


def test_one_bad_metric_deep_in_a_large_ingest_sends_nothing(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    items = [metric(i) for i in range(3_000)]
    items[2_500] = metric(2_500, value=NAN)
    with pytest.raises(sm.MetricsValidationError) as caught:
        exp.ingest(items)
    assert_names(caught.value, "metrics[2500].value")
    assert len(mocked.calls) == 0  # no token minted, no first chunk sent


def test_sync_flag_must_be_a_bool(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        exp.ingest([metric(0)], sync="yes")  # type: ignore[arg-type]
    assert_names(caught.value, "sync")
    assert len(mocked.calls) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"name": "", "value": 1.0, "step": 1}, "name", id="name-empty"),
        # A NaN value is not bad input to log(): it is counted, not sent, and never raises
        # (tests/lifecycle/test_writing.py).
        pytest.param({"name": "loss", "value": 10**400, "step": 1}, "value", id="value-huge"),
        pytest.param({"name": "loss", "value": "1", "step": 1}, "value", id="value-str"),
        pytest.param({"name": "loss", "value": 1.0, "step": -1}, "step", id="step-neg"),
        pytest.param({"name": "loss", "value": 1.0, "step": 0.5}, "step", id="step-fraction"),
        pytest.param(
            {"name": "loss", "value": 1.0, "step": 1, "metadata": {"a": NAN}},
            "metadata",
            id="metadata-nan",
        ),
        pytest.param(
            {"name": "loss", "value": 1.0, "step": 1, "timestamp_ms": -1},
            "timestamp_ms",
            id="ts-neg",
        ),
        pytest.param(
            {"name": "loss", "value": 1.0, "step": 1, "client_event_id": ""},
            "client_event_id",
            id="id-empty",
        ),
    ],
)
def test_log_validates_now_and_changes_nothing(
    exp: sm.Experiment, mocked: responses.RequestsMock, kwargs: dict[str, Any], field: str
) -> None:
    exp.log("loss", 0.1, step=0)  # one good event already waits
    assert exp.pending_logs == 1
    name = kwargs.pop("name")
    value = kwargs.pop("value")
    with pytest.raises(sm.MetricsValidationError) as caught:
        exp.log(name, value, **kwargs)
    assert any(key.endswith(field) for key in caught.value.errors), caught.value.errors
    assert isinstance(caught.value, ValueError)
    assert exp.pending_logs == 1


@pytest.mark.parametrize("bad", BAD_LIMITS)
@pytest.mark.parametrize("call", LIMIT_CALLS)
def test_list_limits_must_be_positive_integers(
    exp: sm.Experiment,
    mocked: responses.RequestsMock,
    call: Callable[[sm.Experiment, Any], Any],
    bad: Any,
) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        call(exp, bad)
    assert_names(caught.value, "limit")
    assert len(mocked.calls) == 0


@pytest.mark.parametrize(("call", "fields"), LIST_AND_READ_CASES)
def test_read_arguments_are_checked_before_sending(
    exp: sm.Experiment, mocked: responses.RequestsMock, call: Call, fields: tuple[str, ...]
) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        call(exp)
    assert isinstance(caught.value, ValueError)
    assert any(f in caught.value.errors for f in fields), caught.value.errors
    assert len(mocked.calls) == 0


@pytest.mark.parametrize(("call", "field"), COMPARE_CASES)
def test_compare_arguments_are_checked_before_sending(
    exp: sm.Experiment, mocked: responses.RequestsMock, call: Call, field: str
) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        call(exp)
    assert_names(caught.value, field)
    assert len(mocked.calls) == 0


# -- valid edge values pass, unchanged --------------------------------------------------


def body_of(call: Any) -> Any:
    return json.loads(call.request.body)


def test_folder_name_of_200_chars_is_sent(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    name = "f" * 200
    mocked.add(responses.POST, f"{API}/folders", json=envelope({"folder": folder_wire(name=name)}))
    sm.Folder.create(name)
    assert body_of(mocked.calls[0]) == {"name": name, "parent_id": None}


def test_experiment_create_at_its_limits_is_sent(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    slug, description = "s" * 200, "d" * 4_000
    metadata = {"opt": {"betas": [0.9, 0.999], "eps": 1e-8}, "big": 1e308, "n": MAX_SAFE}
    mocked.add(
        responses.POST, f"{API}/experiments", json=envelope({"experiment": experiment_wire()})
    )
    sm.Experiment.create(slug, description=description, metadata=metadata)
    assert body_of(mocked.calls[0]) == {
        "slug": slug,
        "description": description,
        "metadata": metadata,
    }


def test_status_update_at_its_limits_is_sent(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        responses.POST,
        f"{API}/experiments/exp-1",
        json=envelope({"experiment": experiment_wire(status="error")}),
    )
    error = {"name": "n" * 500, "detail": "d" * 8_000}
    exp.set_status("error", error=error, timestamp_ms=MAX_SAFE)
    exp.set_status("error", error=error, timestamp_ms=0)
    exp.set_status("running", timestamp_ms=AWARE)
    bodies = [body_of(c) for c in mocked.calls]
    assert bodies[0] == {"status": "error", "error": error, "timestamp_ms": MAX_SAFE}
    assert bodies[1]["timestamp_ms"] == 0
    assert bodies[2] == {"status": "running", "timestamp_ms": 1_767_268_800_000}


def test_ingestion_key_at_its_limits_is_sent(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        responses.POST,
        f"{API}/experiments/exp-1/ingestion-keys",
        json=envelope({"key": key_wire(), "token": TOKEN}),
    )
    exp.create_ingestion_key(name="k" * 200, ttl_ms=SEVEN_DAYS_MS)
    exp.create_ingestion_key(ttl_ms=1)
    exp.create_ingestion_key(ttl_ms=dt.timedelta(days=7))
    bodies = [body_of(c) for c in mocked.calls]
    assert bodies[0] == {"name": "k" * 200, "ttl_ms": SEVEN_DAYS_MS}
    assert bodies[1]["ttl_ms"] == 1
    assert bodies[2]["ttl_ms"] == SEVEN_DAYS_MS


def test_ingest_edge_values_pass_and_are_sent_as_given(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        responses.POST,
        f"{API}/experiments/exp-1/ingestion-keys",
        json=envelope({"key": key_wire(), "token": TOKEN}),
    )
    mocked.add(
        responses.POST,
        f"{API}/experiments/exp-1/ingest",
        json=envelope({"ok": True, "mode": "sync"}),
    )
    items = [
        {"client_event_id": "a", "name": "n", "value": 0, "step": 0},
        {"client_event_id": "i" * 200, "name": "n" * 500, "value": 1, "step": None},
        {"client_event_id": "c", "name": "loss", "value": -2.5, "step": MAX_SAFE},
        {"client_event_id": "d", "name": "loss", "value": 1e308, "step": 1, "timestamp_ms": 0},
        {
            "client_event_id": "e",
            "name": "loss",
            "value": 1e308,
            "step": 2,
            "timestamp_ms": MAX_SAFE,
        },
        {"client_event_id": "f", "name": "loss", "value": 0.5, "step": 3, "metadata": {}},
    ]
    result = exp.ingest(items)
    assert result.count == 6
    (ingest_call,) = [c for c in mocked.calls if c.request.url.split("?")[0].endswith("/ingest")]
    sent = body_of(ingest_call)["data"]
    assert sent == [
        {"client_event_id": "a", "name": "n", "value": 0.0, "step": 0},
        {"client_event_id": "i" * 200, "name": "n" * 500, "value": 1.0, "step": None},
        {"client_event_id": "c", "name": "loss", "value": -2.5, "step": MAX_SAFE},
        {"client_event_id": "d", "name": "loss", "value": 1e308, "step": 1, "timestamp_ms": 0},
        {
            "client_event_id": "e",
            "name": "loss",
            "value": 1e308,
            "step": 2,
            "timestamp_ms": MAX_SAFE,
        },
        {"client_event_id": "f", "name": "loss", "value": 0.5, "step": 3, "metadata": {}},
    ]
    raw = ingest_call.request.body.decode()
    # int values go out as JSON floats; no NaN/Infinity tokens can appear
    assert '"value":0.0' in raw.replace(" ", "")
    assert '"value":1.0' in raw.replace(" ", "")
    assert "NaN" not in raw
    assert "Infinity" not in raw
    assert all(math.isfinite(m["value"]) for m in sent)


def test_smallest_valid_limit_is_sent(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    mocked.add(
        responses.GET, f"{API}/experiments/exp-1/annotations", json=envelope({"annotations": []})
    )
    mocked.add(responses.GET, f"{API}/experiments/exp-1/catalog", json=envelope({"metrics": []}))
    assert exp.annotations(limit=1) == []
    assert exp.catalog(limit=1) == []
    assert [c.request.url.split("?")[1] for c in mocked.calls] == ["limit=1", "limit=1"]


def test_compare_with_64_series_is_sent(exp: sm.Experiment, mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, f"{API}/metrics", json=envelope({"rows": []}))
    rows = sm.compare([sm.Series(f"exp-{i}", "loss") for i in range(64)], limit=10)
    assert len(rows) == 0
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(mocked.calls[0].request.url).query)
    assert len(query["series"]) == 64
    assert json.loads(query["series"][63]) == {"experiment_id": "exp-63", "metric_name": "loss"}


def test_an_integer_too_large_for_a_float_is_a_validation_error(
    mocked: responses.RequestsMock, session: sm.Session
) -> None:
    exp = sm.Experiment(experiment_wire(), session=session)
    with pytest.raises(sm.MetricsValidationError, match=r"metrics\[0\]\.value"):
        exp.ingest([{"client_event_id": "a", "name": "loss", "value": 10**400}])
    with pytest.raises(sm.MetricsValidationError):
        exp.log("loss", 10**400, step=1)
    assert len(mocked.calls) == 0


def test_a_batch_kept_as_given_is_checked_all_the_same() -> None:
    # The local server keeps a plainly valid batch as given (it stores the request's text);
    # anything else is normalized or refused exactly as the SDK's own batch is.
    from marshmallow import ValidationError

    from syvain_metrics.contract.schemas.ingest import CheckedIngestRequest, IngestRequest

    plain = [{"client_event_id": "a", "name": "loss", "value": 3, "metadata": {"k": 1}}]
    kept = CheckedIngestRequest().load({"data": plain})["data"]
    assert kept == plain
    assert kept[0] is plain[0]
    loose = [{"client_event_id": "a", "name": "loss", "value": 3, "step": 2.0, "metadata": None}]
    assert CheckedIngestRequest().load({"data": loose}) == IngestRequest().load({"data": loose})
    assert CheckedIngestRequest().load({"data": loose})["data"][0]["step"] == 2
    for bad in (
        [{"client_event_id": "a", "name": "", "value": 1}],
        [{"client_event_id": "a", "name": "x", "value": math.nan}],
        [{"client_event_id": "a", "name": "x", "value": 1, "extra": True}],
        [{"name": "x", "value": 1}],
    ):
        before = json.dumps(bad)
        with pytest.raises(ValidationError) as checked:
            CheckedIngestRequest().load({"data": bad})
        with pytest.raises(ValidationError) as loaded:
            IngestRequest().load({"data": bad})
        assert checked.value.messages == loaded.value.messages
        assert json.dumps(bad) == before
