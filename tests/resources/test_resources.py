"""The object model: fields, identity, reprs and secrets, friendly views, sessions, and the
behaviour of resource methods (save, fail, run), checked through the requests they send."""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses

import syvain_metrics as sm
from tests.conftest import (
    API,
    API_KEY,
    HOST,
    FakeClock,
    envelope,
    error_body,
    experiment_wire,
    folder_wire,
    key_wire,
    row_wire,
)

OTHER_HOST = "http://127.0.0.1:8766"
OTHER_API = f"{OTHER_HOST}/api/v1"
OTHER_KEY = "ak_other_secret_key_9876543210"
TOKEN = "ik_token_very_secret_abcdef"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# -- helpers -------------------------------------------------------------------------------


def at_ms(ms: int) -> dt.datetime:
    """The aware UTC datetime of a millisecond timestamp, computed independently of the SDK."""
    return EPOCH + dt.timedelta(milliseconds=ms)


def body_of(call: Any) -> Any:
    return None if call.request.body is None else json.loads(call.request.body)


def origin_of(call: Any) -> str:
    parts = urlsplit(call.request.url)
    return f"{parts.scheme}://{parts.netloc}"


def mock_get_experiment(
    mocked: responses.RequestsMock, data: dict[str, Any], api: str = API
) -> None:
    mocked.add("GET", f"{api}/experiments/{data['id']}", json=envelope({"experiment": data}))


def mock_status(mocked: responses.RequestsMock, experiment_id: str = "exp-1") -> None:
    """Answer every status update of ``experiment_id`` with a plain experiment."""
    mocked.add(
        "POST",
        f"{API}/experiments/{experiment_id}",
        json=envelope({"experiment": experiment_wire(experiment_id)}),
    )


def mock_key_creation(
    mocked: responses.RequestsMock,
    experiment_id: str = "exp-1",
    *,
    expires_at_ms: int = 1_795_720_550_000,
    api: str = API,
) -> None:
    mocked.add(
        "POST",
        f"{api}/experiments/{experiment_id}/ingestion-keys",
        json=envelope(
            {"key": key_wire(experiment_id, expires_at_ms=expires_at_ms), "token": TOKEN}
        ),
    )


@pytest.fixture
def other_session(sleeps: list[float], clock: FakeClock) -> Iterator[sm.Session]:
    """A second session on another host with another key (not the default)."""
    created = sm.Session(
        OTHER_KEY, host=OTHER_HOST, retry=sm.RetryPolicy(sleep=sleeps.append, jitter=0), clock=clock
    )
    yield created
    created.close()


@pytest.fixture
def no_default_session() -> Iterator[None]:
    sm.set_default_session(None)
    yield
    sm.set_default_session(None)


# -- unknown fields ------------------------------------------------------------------------


def test_unknown_experiment_fields_are_kept_and_readable(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    data = experiment_wire(gpu_hours=12.5, owner={"team": "ml"})
    mock_get_experiment(mocked, data)

    exp = sm.Experiment.get("exp-1")

    assert exp.gpu_hours == 12.5
    assert exp.owner == {"team": "ml"}
    assert exp.to_dict()["gpu_hours"] == 12.5
    assert exp.to_dict()["owner"] == {"team": "ml"}
    assert "gpu_hours" in dir(exp)
    assert "owner" in dir(exp)
    assert "slug" in dir(exp)  # known fields and methods stay listed too
    assert "refresh" in dir(exp)


def test_unknown_fields_of_nested_and_other_resources_are_kept(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    folder = {**folder_wire("f-1", "runs"), "color": "blue"}
    mock_get_experiment(mocked, experiment_wire(folder=folder))
    mocked.add(
        "POST",
        f"{API}/experiments/exp-1/ingestion-keys",
        json=envelope({"key": {**key_wire(), "scopes": ["ingest"]}, "token": TOKEN}),
    )

    exp = sm.Experiment.get("exp-1")
    key = exp.create_ingestion_key()

    assert exp.folder is not None
    assert exp.folder.color == "blue"
    assert "color" in dir(exp.folder)
    assert key.scopes == ["ingest"]
    assert key.to_dict()["scopes"] == ["ingest"]


def test_missing_field_is_an_attribute_error(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_get_experiment(mocked, experiment_wire())
    exp = sm.Experiment.get("exp-1")

    with pytest.raises(AttributeError, match="no_such_field"):
        _ = exp.no_such_field
    assert not hasattr(exp, "no_such_field")


def test_to_dict_is_the_wire_form_and_a_copy(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    data = experiment_wire(metadata={"model": "mamba", "layers": [1, 2]})
    mock_get_experiment(mocked, data)
    exp = sm.Experiment.get("exp-1")

    out = exp.to_dict()
    assert out == data
    out["metadata"]["layers"].append(3)
    out["slug"] = "changed"

    assert exp.metadata == {"model": "mamba", "layers": [1, 2]}
    assert exp.slug == "run-1"
    assert not isinstance(exp, dict)


# -- equality and hashing ------------------------------------------------------------------


def test_equality_and_hash_by_id(session: sm.Session, mocked: responses.RequestsMock) -> None:
    mock_get_experiment(mocked, experiment_wire(status="created"))
    first = sm.Experiment.get("exp-1")
    mocked.replace(
        "GET",
        f"{API}/experiments/exp-1",
        json=envelope({"experiment": experiment_wire(status="running")}),
    )
    second = sm.Experiment.get("exp-1")

    assert first is not second
    assert first.status != second.status
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


def test_different_ids_are_not_equal(session: sm.Session) -> None:
    a = sm.Experiment(experiment_wire("exp-1"), session=session)
    b = sm.Experiment(experiment_wire("exp-2"), session=session)

    assert a != b
    assert len({a, b}) == 2


def test_different_types_are_never_equal(session: sm.Session) -> None:
    exp = sm.Experiment(experiment_wire("same-id"), session=session)
    folder = sm.Folder(folder_wire("same-id"), session=session)
    key = sm.IngestionKey(key_wire(key_id="same-id"), session=session)

    assert exp != folder
    assert folder != exp
    assert exp != key
    assert exp != "same-id"
    assert exp != {"id": "same-id"}
    assert len({exp, folder, key}) == 3


def test_folders_compare_by_folder_id(session: sm.Session) -> None:
    a = sm.Folder(folder_wire("f-1", "runs"), session=session)
    b = sm.Folder(folder_wire("f-1", "renamed"), session=session)
    c = sm.Folder(folder_wire("f-2", "runs"), session=session)

    assert a == b
    assert hash(a) == hash(b)
    assert a != c


# -- reprs and secrets ---------------------------------------------------------------------


def test_experiment_repr_is_short_and_useful(session: sm.Session) -> None:
    exp = sm.Experiment(
        experiment_wire(
            "exp-1",
            "mamba-run-001",
            status="running",
            description="d" * 4000,
            metadata={f"k{i}": i for i in range(200)},
        ),
        session=session,
    )

    text = repr(exp)

    assert "mamba-run-001" in text
    assert "running" in text
    assert "exp-1" in text
    assert len(text) < 120
    assert API_KEY not in text


def test_folder_repr_names_its_path_and_id(session: sm.Session) -> None:
    folder = sm.Folder(
        {**folder_wire("f-1", "mamba"), "path_name": "baselines/mamba"}, session=session
    )

    text = repr(folder)

    assert "baselines/mamba" in text
    assert "f-1" in text
    assert len(text) < 120


def test_session_repr_hides_the_api_key(session: sm.Session) -> None:
    assert API_KEY not in repr(session)
    assert API_KEY not in str(session)
    assert HOST in repr(session)


def test_ingestion_key_token_is_readable_but_never_shown(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_key_creation(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)

    key = exp.create_ingestion_key(name="ci", ttl_ms=600_000)

    assert key.token == TOKEN
    for shown in (repr(key), str(key), json.dumps(key.to_dict()), key._repr_html_()):
        assert TOKEN not in shown
        assert API_KEY not in shown
    assert "token" not in key.to_dict()
    assert repr(key).startswith("<IngestionKey")


def test_cached_ingestion_token_is_never_shown(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_key_creation(mocked)
    mocked.add(
        "POST", f"{API}/experiments/exp-1/ingest", json=envelope({"ok": True, "mode": "queued"})
    )
    exp = sm.Experiment(experiment_wire(), session=session)

    exp.ingest([{"client_event_id": "a", "name": "loss", "value": 1.0, "step": 0}])

    assert mocked.calls[1].request.headers["Authorization"] == f"Bearer {TOKEN}"
    for shown in (repr(session), repr(exp), repr(session.tokens), exp._repr_html_()):
        assert TOKEN not in shown
        assert API_KEY not in shown


def test_errors_do_not_echo_secrets(session: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add(
        "GET",
        f"{API}/experiments/exp-1",
        json=error_body(f"bad key {API_KEY}", code="validation_error"),
        status=400,
    )

    with pytest.raises(sm.MetricsApiRequestError) as caught:
        sm.Experiment.get("exp-1")

    assert API_KEY not in str(caught.value)
    assert caught.value.status_code == 400


# -- friendly views ------------------------------------------------------------------------


def test_times_are_aware_utc_datetimes(session: sm.Session) -> None:
    exp = sm.Experiment(
        experiment_wire(
            created_at_ms=1_795_716_952_000,
            updated_at_ms=1_795_716_953_250,
            started_at_ms=1_795_716_953_000,
            done_at_ms=None,
        ),
        session=session,
    )

    assert exp.created_at == at_ms(1_795_716_952_000)
    assert exp.updated_at == at_ms(1_795_716_953_250)
    assert exp.updated_at.microsecond == 250_000
    assert exp.started_at == at_ms(1_795_716_953_000)
    for value in (exp.created_at, exp.updated_at, exp.started_at):
        assert isinstance(value, dt.datetime)
        assert value.tzinfo is not None
        assert value.utcoffset() == dt.timedelta(0)
    assert exp.done_at is None
    assert exp.last_heartbeat_at is None
    assert exp.last_event_at is None


def test_times_of_keys_annotations_and_rows(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    key = sm.IngestionKey(key_wire(expires_at_ms=1_795_720_550_000), session=session)
    note = {"id": "a-1", "experiment_id": "exp-1", "annotation": "hi", "created_at_ms": 1_000}
    mocked.add(
        "GET", f"{API}/experiments/exp-1/annotations", json=envelope({"annotations": [note]})
    )
    # What an honest service answers when the read goes on past the note's time.
    mocked.add("GET", f"{API}/experiments/exp-1/annotations", json=envelope({"annotations": []}))
    mocked.add(
        "GET",
        f"{API}/experiments/exp-1/metrics",
        json=envelope({"rows": [row_wire("e1", 0, 1.0, 1_795_716_954_001)]}),
    )
    exp = sm.Experiment(experiment_wire(), session=session)

    (annotation,) = exp.annotations()
    (row,) = exp.metrics(limit=1)

    assert key.expires_at == at_ms(1_795_720_550_000)
    assert key.created_at == at_ms(1_795_716_950_000)
    assert key.revoked_at is None
    assert annotation.created_at == at_ms(1_000)
    assert annotation.metadata == {}  # absent on the wire: read as the default {}
    assert row.timestamp == at_ms(1_795_716_954_001)
    assert row.timestamp.utcoffset() == dt.timedelta(0)


def test_relative_url_is_made_absolute(session: sm.Session) -> None:
    exp = sm.Experiment(experiment_wire(url="/dashboard/experiments/exp-1"), session=session)

    assert exp.url == f"{HOST}/dashboard/experiments/exp-1"


def test_relative_url_uses_the_host_of_the_objects_session(
    session: sm.Session, other_session: sm.Session
) -> None:
    exp = sm.Experiment(experiment_wire(url="/dashboard/experiments/exp-1"), session=other_session)

    assert exp.url == f"{OTHER_HOST}/dashboard/experiments/exp-1"


def test_absolute_url_is_left_alone(session: sm.Session) -> None:
    absolute = "https://metrics.syvain.com/dashboard/experiments/exp-1"
    exp = sm.Experiment(experiment_wire(url=absolute), session=session)

    assert exp.url == absolute


def test_experiment_folder_is_a_folder_or_none(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    inside = sm.Experiment(
        experiment_wire(folder=folder_wire("f-1", "runs", parents=["f-0"])), session=session
    )
    at_root = sm.Experiment(experiment_wire(folder=None), session=session)

    folder = inside.folder

    assert isinstance(folder, sm.Folder)
    assert folder.id == "f-1"
    assert folder.name == "runs"
    assert folder.parent_id == "f-0"
    assert folder.session is session
    assert at_root.folder is None
    assert len(mocked.calls) == 0  # reading attributes never sends a request


def test_folder_get_loads_contents(session: sm.Session, mocked: responses.RequestsMock) -> None:
    contents = {
        "folder": folder_wire("f-1", "runs"),
        "folders": [folder_wire("f-2", "a", ["f-1"]), folder_wire("f-3", "b", ["f-1"])],
        "experiments": [experiment_wire("exp-9", "run-9")],
    }
    mocked.add("GET", f"{API}/folders/f-1", json=envelope(contents))

    folder = sm.Folder.get("f-1")
    calls = len(mocked.calls)

    assert [f.id for f in folder.subfolders] == ["f-2", "f-3"]
    assert all(isinstance(f, sm.Folder) for f in folder.subfolders)
    assert [e.id for e in folder.experiments] == ["exp-9"]
    assert isinstance(folder.experiments[0], sm.Experiment)
    assert folder.experiments[0].slug == "run-9"
    assert len(mocked.calls) == calls == 1


def test_created_folder_contents_raise_without_a_request(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("POST", f"{API}/folders", json=envelope({"folder": folder_wire("f-1", "runs")}))
    folder = sm.Folder.create("runs")
    calls = len(mocked.calls)

    with pytest.raises(sm.MetricsApiError, match=r"refresh|Folder\.get"):
        _ = folder.subfolders
    with pytest.raises(sm.MetricsApiError, match=r"refresh|Folder\.get"):
        _ = folder.experiments

    assert len(mocked.calls) == calls


def test_folder_refresh_loads_contents(session: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("POST", f"{API}/folders", json=envelope({"folder": folder_wire("f-1", "runs")}))
    contents = {"folder": folder_wire("f-1", "runs"), "folders": [], "experiments": []}
    mocked.add("GET", f"{API}/folders/f-1", json=envelope(contents))
    folder = sm.Folder.create("runs")

    folder.refresh()

    assert folder.subfolders == []
    assert folder.experiments == []


# -- folder save ---------------------------------------------------------------------------


def test_folder_save_sends_only_the_new_name(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        "PATCH",
        f"{API}/folders/f-1",
        json=envelope({"folder": {**folder_wire("f-1", "x", ["f-0"]), "path_name": "top/x"}}),
    )
    folder = sm.Folder(folder_wire("f-1", "runs", ["f-0"]), session=session)

    folder.name = "x"
    assert len(mocked.calls) == 0  # assigning sends nothing
    folder.save()

    assert len(mocked.calls) == 1
    assert mocked.calls[0].request.method == "PATCH"
    assert body_of(mocked.calls[0]) == {"name": "x"}
    assert folder.name == "x"
    assert folder.path_name == "top/x"


def test_folder_save_without_change_sends_nothing(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    folder = sm.Folder(folder_wire("f-1", "runs"), session=session)

    folder.save()
    folder.name = "runs"  # the same name: still no change
    folder.save()

    assert len(mocked.calls) == 0
    assert folder.name == "runs"


def test_folder_save_twice_sends_once(session: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("PATCH", f"{API}/folders/f-1", json=envelope({"folder": folder_wire("f-1", "x")}))
    folder = sm.Folder(folder_wire("f-1", "runs"), session=session)

    folder.name = "x"
    folder.save()
    folder.save()

    assert len(mocked.calls) == 1


# -- status updates: fail() and run() ------------------------------------------------------


def test_fail_with_an_exception_sends_its_type_and_message(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_status(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)

    exp.fail(ValueError("msg"))

    assert body_of(mocked.calls[0]) == {
        "status": "error",
        "error": {"name": "ValueError", "detail": "msg"},
    }


def test_fail_with_a_string_uses_the_default_name(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_status(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)

    exp.fail("out of memory")

    assert body_of(mocked.calls[0]) == {
        "status": "error",
        "error": {"name": "Error", "detail": "out of memory"},
    }


def test_fail_with_a_long_exception_message_cuts_it(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_status(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)
    message = "".join(str(i % 10) for i in range(9_000))

    exp.fail(RuntimeError(message))

    error = body_of(mocked.calls[0])["error"]
    assert error["name"] == "RuntimeError"
    assert error["detail"] == message[:8_000]
    assert len(error["detail"]) == 8_000


def test_fail_with_a_long_exception_name_cuts_it(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_status(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)
    long_type = type("E" * 600, (Exception,), {})

    exp.fail(long_type("boom"))

    error = body_of(mocked.calls[0])["error"]
    assert error["name"] == "E" * 500
    assert error["detail"] == "boom"


def test_fail_updates_the_object_from_the_answer(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    answer = experiment_wire(status="error", error_name="ValueError", error_detail="msg")
    mocked.add("POST", f"{API}/experiments/exp-1", json=envelope({"experiment": answer}))
    exp = sm.Experiment(experiment_wire(), session=session)

    assert exp.fail(ValueError("msg")) is exp
    assert exp.status == "error"
    assert exp.error_name == "ValueError"
    assert exp.error_detail == "msg"


def test_run_marks_running_then_done(session: sm.Session, mocked: responses.RequestsMock) -> None:
    mock_status(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)

    with exp.run() as running:
        assert running is exp
        assert [body_of(c) for c in mocked.calls] == [{"status": "running"}]

    assert [body_of(c) for c in mocked.calls] == [{"status": "running"}, {"status": "done"}]
    assert all(c.request.method == "POST" for c in mocked.calls)


def test_run_marks_error_and_reraises_the_same_exception(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_status(mocked)
    exp = sm.Experiment(experiment_wire(), session=session)
    boom = KeyError("missing batch")

    with pytest.raises(KeyError) as caught, exp.run():
        raise boom

    assert caught.value is boom
    assert [body_of(c) for c in mocked.calls] == [
        {"status": "running"},
        {"status": "error", "error": {"name": "KeyError", "detail": str(boom)}},
    ]


def test_run_reraises_even_if_the_error_status_cannot_be_sent(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    url = f"{API}/experiments/exp-1"
    mocked.add("POST", url, json=envelope({"experiment": experiment_wire()}))
    mocked.add("POST", url, json=error_body("nope", code="forbidden"), status=403)
    exp = sm.Experiment(experiment_wire(), session=session)

    with pytest.raises(ZeroDivisionError), exp.run():
        _ = 1 / 0

    assert body_of(mocked.calls[-1])["status"] == "error"


# -- sessions ------------------------------------------------------------------------------


def test_class_methods_use_the_default_session(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_get_experiment(mocked, experiment_wire())

    exp = sm.Experiment.get("exp-1")

    assert origin_of(mocked.calls[0]) == HOST
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert exp.session is session


def test_connect_sets_the_default_session(
    no_default_session: None, mocked: responses.RequestsMock
) -> None:
    mocked.add("GET", f"{OTHER_API}/folders", json=envelope({"folders": []}))

    connected = sm.connect(OTHER_KEY, host=OTHER_HOST)
    try:
        sm.Folder.list()
    finally:
        connected.close()

    assert sm.get_session() is connected
    assert origin_of(mocked.calls[0]) == OTHER_HOST
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {OTHER_KEY}"


def test_explicit_session_overrides_the_default(
    session: sm.Session, other_session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mock_get_experiment(mocked, experiment_wire(), api=OTHER_API)
    mocked.add("GET", f"{OTHER_API}/folders", json=envelope({"folders": []}))

    exp = sm.Experiment.get("exp-1", session=other_session)
    sm.Folder.list(session=other_session)

    assert [origin_of(c) for c in mocked.calls] == [OTHER_HOST, OTHER_HOST]
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {OTHER_KEY}"
    assert exp.session is other_session


def test_objects_keep_the_session_they_came_from(
    session: sm.Session, other_session: sm.Session, mocked: responses.RequestsMock
) -> None:
    data = experiment_wire(folder=folder_wire("f-1", "runs"))
    mock_get_experiment(mocked, data, api=OTHER_API)
    mocked.add(
        "PATCH", f"{OTHER_API}/folders/f-1", json=envelope({"folder": folder_wire("f-1", "x")})
    )
    mocked.add("POST", f"{OTHER_API}/experiments/exp-1", json=envelope({"experiment": data}))
    mocked.add("GET", f"{OTHER_API}/metrics", json=envelope({"rows": []}))
    mock_key_creation(mocked, api=OTHER_API)
    mocked.add(
        "DELETE",
        f"{OTHER_API}/experiments/exp-1/ingestion-keys/key-1",
        json=envelope({"key": {**key_wire(), "revoked_at_ms": 1}}),
    )

    exp = sm.Experiment.get("exp-1", session=other_session)
    assert sm.get_session() is session  # the default did not change
    exp.refresh()
    exp.start()
    exp.folder.rename("x")
    sm.compare([exp.series("loss")], limit=10)
    exp.create_ingestion_key().revoke()

    assert len(mocked.calls) == 7
    assert {origin_of(c) for c in mocked.calls} == {OTHER_HOST}
    assert {c.request.headers["Authorization"] for c in mocked.calls} == {f"Bearer {OTHER_KEY}"}


def test_folder_contents_keep_the_session(
    session: sm.Session, other_session: sm.Session, mocked: responses.RequestsMock
) -> None:
    contents = {
        "folder": folder_wire("f-1", "runs"),
        "folders": [],
        "experiments": [experiment_wire("exp-9", "run-9")],
    }
    mocked.add("GET", f"{OTHER_API}/folders/f-1", json=envelope(contents))
    mock_get_experiment(mocked, experiment_wire("exp-9", "run-9"), api=OTHER_API)

    folder = sm.Folder.get("f-1", session=other_session)
    folder.experiments[0].refresh()

    assert [origin_of(c) for c in mocked.calls] == [OTHER_HOST, OTHER_HOST]


def test_without_a_default_session_class_calls_say_to_connect(
    no_default_session: None, mocked: responses.RequestsMock
) -> None:
    with pytest.raises(sm.MetricsApiError, match="connect"):
        sm.Experiment.get("x")
    with pytest.raises(sm.MetricsApiError, match="connect"):
        sm.Folder.list()

    assert len(mocked.calls) == 0


# -- ingestion keys ------------------------------------------------------------------------


def test_ingestion_key_is_active_follows_the_session_clock(
    session: sm.Session, clock: FakeClock, mocked: responses.RequestsMock
) -> None:
    expires = int(clock.now * 1000) + 60_000
    mock_key_creation(mocked, expires_at_ms=expires)
    exp = sm.Experiment(experiment_wire(), session=session)

    key = exp.create_ingestion_key(ttl_ms=60_000)

    assert key.is_active is True
    clock.advance(59)
    assert key.is_active is True
    clock.advance(2)
    assert key.is_active is False
    assert "expired" in repr(key)


def test_revoked_ingestion_key_is_not_active(session: sm.Session) -> None:
    key = sm.IngestionKey({**key_wire(), "revoked_at_ms": 1}, session=session)

    assert key.is_active is False
    assert "revoked" in repr(key)


# -- whoami --------------------------------------------------------------------------------


def test_whoami_exposes_kind_and_organization(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        "GET",
        f"{API}/auth/status",
        json=envelope(
            {"auth": {"kind": "api_key"}, "organization": {"id": "org-9", "name": "Acme"}}
        ),
    )

    status = sm.whoami()

    assert status.kind == "api_key"
    assert status.organization_id == "org-9"
    assert status.organization_name == "Acme"
    assert "org-9" in repr(status)
    assert API_KEY not in repr(status)


def test_whoami_without_organization_name(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        "GET",
        f"{API}/auth/status",
        json=envelope({"auth": {"kind": "ingestion_key"}, "organization": {"id": "org-9"}}),
    )

    status = sm.whoami()

    assert status.kind == "ingestion_key"
    assert status.organization_name is None


# -- metric rows ---------------------------------------------------------------------------


ROWS = [
    row_wire("e1", None, 1.5, 1_000, metadata='{"split":"train"}'),
    {**row_wire("e2", 1, 0.75, 1_001, metadata='{"split":"train","k":[1,2]}'), "shard": 3},
    row_wire("e3", 2, 0.5, 1_002, name="acc"),
]


def read_rows(session: sm.Session, mocked: responses.RequestsMock) -> sm.MetricRows:
    mocked.add("GET", f"{API}/experiments/exp-1/metrics", json=envelope({"rows": ROWS}))
    return sm.Experiment(experiment_wire(), session=session).metrics(limit=10)


def test_metric_rows_sequence(session: sm.Session, mocked: responses.RequestsMock) -> None:
    rows = read_rows(session, mocked)

    assert isinstance(rows, sm.MetricRows)
    assert len(rows) == 3
    assert isinstance(rows[0], sm.Metric)
    assert rows[0].event_id == "e1"
    assert rows[-1].event_id == "e3"
    assert [m.event_id for m in rows] == ["e1", "e2", "e3"]
    with pytest.raises(IndexError):
        _ = rows[3]


def test_metric_rows_slicing(session: sm.Session, mocked: responses.RequestsMock) -> None:
    rows = read_rows(session, mocked)

    tail = rows[1:]

    assert isinstance(tail, sm.MetricRows)
    assert len(tail) == 2
    assert tail.values == [0.75, 0.5]
    assert [m.event_id for m in rows[::2]] == ["e1", "e3"]


def test_metric_rows_columns(session: sm.Session, mocked: responses.RequestsMock) -> None:
    rows = read_rows(session, mocked)

    assert rows.values == [1.5, 0.75, 0.5]
    assert rows.steps == [None, 1, 2]
    assert [type(s) for s in rows.steps[1:]] == [int, int]
    assert rows.column("event_id") == ["e1", "e2", "e3"]
    assert rows.column("metric_name") == ["loss", "loss", "acc"]
    assert rows.column("shard") == [None, 3, None]
    assert rows.column("client_timestamp_ms") == [1_000, 1_001, 1_002]


def test_metric_rows_to_dicts_are_the_wire_rows(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    rows = read_rows(session, mocked)

    dicts = rows.to_dicts()
    assert dicts == ROWS
    dicts[0]["metric_value"] = 99.0

    assert rows.values[0] == 1.5


def test_metric_fields(session: sm.Session, mocked: responses.RequestsMock) -> None:
    rows = read_rows(session, mocked)
    no_step, with_extra, other = rows[0], rows[1], rows[2]

    assert no_step.step is None
    assert with_extra.step == 1
    assert type(with_extra.step) is int
    assert no_step.metadata == {"split": "train"}
    assert with_extra.metadata == {"split": "train", "k": [1, 2]}
    assert isinstance(other.metadata, dict)
    assert other.metadata == {}
    assert with_extra.name == "loss"
    assert other.name == "acc"
    assert with_extra.value == 0.75
    assert with_extra.shard == 3  # unknown row field
    assert "shard" in dir(with_extra)
    assert with_extra.experiment_slug == "run-1"
    assert with_extra.to_dict() == ROWS[1]
    with pytest.raises(AttributeError):
        _ = other.shard


# -- notebooks -----------------------------------------------------------------------------


def test_repr_html_escapes(session: sm.Session) -> None:
    exp = sm.Experiment(
        experiment_wire(slug="<b>bold</b>", description="<script>alert(1)</script>"),
        session=session,
    )

    page = exp._repr_html_()

    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert API_KEY not in page


def test_folder_repr_html_escapes(session: sm.Session) -> None:
    folder = sm.Folder({**folder_wire("f-1", "a<b>"), "path_name": "x/<i>y</i>"}, session=session)

    page = folder._repr_html_()

    assert "<i>y</i>" not in page
    assert "&lt;i&gt;y&lt;/i&gt;" in page


def test_metric_rows_repr_html_escapes(session: sm.Session, mocked: responses.RequestsMock) -> None:
    rows = [row_wire("e1", 0, 1.0, 1, name="<img src=x>", metadata='{"a":"<u>"}')]
    mocked.add("GET", f"{API}/experiments/exp-1/metrics", json=envelope({"rows": rows}))
    read = sm.Experiment(experiment_wire(), session=session).metrics(limit=1)

    page = read._repr_html_()

    assert "<img src=x>" not in page
    assert "&lt;img src=x&gt;" in page
    assert "<u>" not in page


def test_metric_rows_and_metrics_survive_copy_and_pickle(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    """Rows are plain data: notebooks copy them and multiprocessing pickles them."""
    rows = read_rows(session, mocked)
    metric = rows[1]

    for clone in (copy.copy(metric), copy.deepcopy(metric), pickle.loads(pickle.dumps(metric))):
        assert clone.to_dict() == ROWS[1]
        assert clone.step == 1
        assert clone.shard == 3
    again = pickle.loads(pickle.dumps(rows))
    assert again.to_dicts() == ROWS


def test_huge_finite_values_read_back(session: sm.Session, mocked: responses.RequestsMock) -> None:
    rows = [row_wire(f"e{i}", i, 1e308, 1_795_716_954_000 + i) for i in range(2)]
    mocked.get(f"{API}/experiments/exp-1/metrics", json=envelope({"rows": rows}))
    exp = sm.Experiment(experiment_wire(), session=session)
    assert exp.metrics("loss", limit=10).values == [1e308, 1e308]


@pytest.mark.parametrize("text", ["not json", "[1]", '"a string"'])
def test_a_row_whose_metadata_is_not_a_json_object_is_a_response_error(
    session: sm.Session, mocked: responses.RequestsMock, text: str
) -> None:
    row = row_wire("e1", 1, 0.5, 1_795_716_954_000, metadata=text)
    mocked.get(f"{API}/experiments/exp-1/metrics", json=envelope({"rows": [row]}))
    [metric] = sm.Experiment(experiment_wire(), session=session).metrics("loss", limit=10)
    assert metric.value == 0.5
    with pytest.raises(sm.MetricsApiResponseError, match="event_metadata_json"):
        _ = metric.metadata


@pytest.mark.parametrize("bad", ["", 123, None])
def test_a_bad_id_is_a_validation_error_before_any_request(
    session: sm.Session, mocked: responses.RequestsMock, bad: object
) -> None:
    with pytest.raises(sm.MetricsValidationError):
        sm.Experiment.get(bad)  # type: ignore[arg-type]
    with pytest.raises(sm.MetricsValidationError):
        sm.Experiment.create("run-1", folder=bad if bad is not None else 5)  # type: ignore[arg-type]
    assert len(mocked.calls) == 0


def test_move_keeps_a_name_assigned_but_not_saved(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    folder = sm.Folder(folder_wire("f-1", "runs"), session=session)
    mocked.patch(f"{API}/folders/f-1", json=envelope({"folder": folder_wire("f-1", "runs")}))
    folder.name = "renamed"
    folder.move(None)
    assert json.loads(mocked.calls[0].request.body) == {"parent_id": None}
    assert folder.name == "renamed"
    folder.save()
    assert json.loads(mocked.calls[1].request.body) == {"name": "renamed"}
