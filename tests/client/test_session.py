"""The session against the wire contract: error mapping (section 2), retries and the
in-progress poll (section 3), envelope and shape checks, keep-alive, validation,
secrets, and host rules (section 1)."""

from __future__ import annotations

import http.server
import json
import logging
import re
import threading
from typing import Any

import pytest
import requests
import responses

import syvain_metrics as sm
from tests.conftest import (
    API,
    API_KEY,
    HOST,
    envelope,
    error_body,
    experiment_wire,
    key_wire,
    row_wire,
)

AUTH_URL = f"{API}/auth/status"
EXPERIMENTS_URL = f"{API}/experiments"
EXP_URL = f"{API}/experiments/exp-1"
INGEST_URL = f"{API}/experiments/exp-1/ingest"
KEYS_URL = f"{API}/experiments/exp-1/ingestion-keys"
METRICS_URL = f"{API}/experiments/exp-1/metrics"
INGESTION_TOKEN = "ing_tok_secret_9f8e7d6c5b4a"
IN_PROGRESS = "idempotency_key_in_progress"


def auth_ok() -> dict[str, Any]:
    return envelope({"auth": {"kind": "api_key"}, "organization": {"id": "org-1", "name": "Local"}})


def in_progress_body() -> dict[str, Any]:
    return error_body("Request with this idempotency key is in progress", IN_PROGRESS)


def experiment(session: sm.Session, experiment_id: str = "exp-1") -> sm.Experiment:
    return sm.Experiment(experiment_wire(experiment_id), session=session)


def metric(event_id: str = "run/loss/1") -> dict[str, Any]:
    return {"client_event_id": event_id, "name": "loss", "value": 0.5, "step": 1}


def mint_ok(token: str = INGESTION_TOKEN) -> dict[str, Any]:
    return envelope({"key": key_wire(), "token": token})


def header(call: Any, name: str) -> str | None:
    value: str | None = call.request.headers.get(name)
    return value


# -- error mapping (section 2) --------------------------------------------------------


def test_envelope_error_maps_to_request_error(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(
        f"{API}/experiments/missing",
        json=error_body("Experiment not found", "not_found"),
        status=404,
    )
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.Experiment.get("missing")
    error = info.value
    assert str(error) == "HTTP 404: Experiment not found: code=not_found"
    assert error.status_code == 404
    assert error.error_code == "not_found"
    assert error.retryable is False


def test_error_code_is_found_among_other_details(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    body = {
        "data": None,
        "error": {
            "message": "Invalid request body",
            "details": "field=slug; code=validation_error",
        },
    }
    mocked.post(EXPERIMENTS_URL, json=body, status=400)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.Experiment.create("run-1")
    assert str(info.value) == "HTTP 400: Invalid request body: field=slug; code=validation_error"
    assert info.value.error_code == "validation_error"


def test_envelope_error_without_details_is_the_message_alone(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(AUTH_URL, json={"data": None, "error": {"message": "Bad thing"}}, status=400)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert str(info.value) == "HTTP 400: Bad thing"
    assert info.value.error_code is None


def test_bare_string_error(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, json={"data": None, "error": "Service unavailable"}, status=503)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert str(info.value) == "HTTP 503: Service unavailable"
    assert info.value.status_code == 503
    assert info.value.error_code is None
    assert info.value.retryable is True


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>" + "upstream exploded " * 60 + "</body></html>",
        json.dumps({"detail": "not an envelope " * 40}),
    ],
    ids=["html", "json-without-error"],
)
def test_non_envelope_error_body_is_cut_to_500_chars(
    session: sm.Session, mocked: responses.RequestsMock, body: str
) -> None:
    assert len(body) > 500
    mocked.get(AUTH_URL, body=body, status=400, content_type="text/html")
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert str(info.value) == f"HTTP 400: {body[:500]}"
    assert info.value.status_code == 400


def test_empty_error_body_gets_a_generic_sentence(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(AUTH_URL, body="", status=404)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    message = str(info.value)
    assert message.startswith("HTTP 404: ")
    sentence = message.removeprefix("HTTP 404: ")
    assert len(sentence.strip()) > 5
    assert any(ch.isalpha() for ch in sentence)
    assert info.value.status_code == 404
    assert info.value.retryable is False


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float], status: int
) -> None:
    mocked.get(AUTH_URL, json=error_body("nope", "some_code"), status=status)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert info.value.status_code == status
    assert info.value.retryable is True
    assert len(mocked.calls) == 3


def test_in_progress_409_is_retryable(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, json=in_progress_body(), status=409)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert info.value.status_code == 409
    assert info.value.error_code == IN_PROGRESS
    assert info.value.retryable is True


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "validation_error"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not_found"),
        (409, "slug_exists"),
        (409, None),
        (422, "idempotency_key_reused"),
    ],
)
def test_non_retryable_statuses(
    session: sm.Session,
    mocked: responses.RequestsMock,
    sleeps: list[float],
    status: int,
    code: str | None,
) -> None:
    mocked.get(AUTH_URL, json=error_body("nope", code), status=status)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert info.value.status_code == status
    assert info.value.error_code == code
    assert info.value.retryable is False
    assert len(mocked.calls) == 1
    assert sleeps == []


# -- retries (section 3) ----------------------------------------------------------------


def test_503_then_200_succeeds_after_one_backoff(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, json={"data": None, "error": "Service unavailable"}, status=503)
    mocked.get(AUTH_URL, json=auth_ok())
    status = sm.whoami()
    assert status.organization_id == "org-1"
    assert len(mocked.calls) == 2
    assert sleeps == [0.25]


def test_three_500s_give_up_after_three_attempts(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, json=error_body("boom", "internal"), status=500)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert info.value.status_code == 500
    assert len(mocked.calls) == 3
    assert sleeps == [0.25, 0.5]


def test_retry_after_lengthens_the_wait(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(
        AUTH_URL,
        json=error_body("slow down", "rate_limited"),
        status=429,
        headers={"Retry-After": "3"},
    )
    mocked.get(AUTH_URL, json=auth_ok())
    sm.whoami()
    assert len(mocked.calls) == 2
    assert sleeps == [3.0]


def test_retry_after_on_503_lengthens_the_wait(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(
        AUTH_URL,
        json={"data": None, "error": "Service unavailable"},
        status=503,
        headers={"Retry-After": "2"},
    )
    mocked.get(AUTH_URL, json=auth_ok())
    sm.whoami()
    assert sleeps == [2.0]


def test_retry_after_never_shortens_the_backoff(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(
        AUTH_URL,
        json=error_body("slow down", "rate_limited"),
        status=429,
        headers={"Retry-After": "0"},
    )
    mocked.get(AUTH_URL, json=auth_ok())
    sm.whoami()
    assert sleeps == [0.25]


def test_400_is_raised_at_once(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.post(
        EXPERIMENTS_URL,
        json=error_body("Invalid request body", "validation_error", field="slug"),
        status=400,
    )
    mocked.post(EXPERIMENTS_URL, json=envelope({"experiment": experiment_wire()}))
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.Experiment.create("run-1")
    assert info.value.status_code == 400
    assert len(mocked.calls) == 1
    assert sleeps == []


def test_connection_failure_is_retried(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, body=requests.exceptions.ConnectionError("connection refused"))
    mocked.get(AUTH_URL, json=auth_ok())
    assert sm.whoami().kind == "api_key"
    assert len(mocked.calls) == 2
    assert sleeps == [0.25]


def test_connection_failure_every_time_is_a_request_error(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, body=requests.exceptions.ConnectionError("connection reset"))
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert info.value.status_code is None
    assert info.value.retryable is True
    assert len(mocked.calls) == 3
    assert sleeps == [0.25, 0.5]


def test_timeout_is_retried_then_succeeds(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    mocked.get(AUTH_URL, json=auth_ok())
    sm.whoami()
    assert len(mocked.calls) == 2
    assert sleeps == [0.25]


def test_timeout_message_names_the_timeout_setting(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    message = str(info.value)
    assert re.search(r"\btimeout\b", message)
    assert "ingest_timeout" not in message
    assert len(mocked.calls) == 3


def test_ingest_timeout_message_names_ingest_timeout(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.post(KEYS_URL, json=mint_ok())
    mocked.post(INGEST_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(sm.MetricsApiRequestError) as info:
        experiment(session).ingest([metric()], sync=True)
    assert "ingest_timeout" in str(info.value)
    assert len([c for c in mocked.calls if c.request.url.split("?")[0] == INGEST_URL]) == 3


def test_ingest_uses_the_ingest_timeout_and_annotations_the_ordinary_one(
    sleeps: list[float], mocked: responses.RequestsMock, clock: Any
) -> None:
    session = sm.Session(
        API_KEY,
        host=HOST,
        timeout=7,
        ingest_timeout=42,
        retry=sm.RetryPolicy(sleep=sleeps.append, jitter=0),
        clock=clock,
    )
    mocked.post(KEYS_URL, json=mint_ok())
    mocked.post(INGEST_URL, json=envelope({"ok": True, "mode": "sync"}))
    annotation = {
        "id": "a-1",
        "experiment_id": "exp-1",
        "annotation": "note",
        "metadata": {},
        "created_at_ms": 1_795_716_960_000,
    }
    mocked.post(
        f"{API}/experiments/exp-1/annotations",
        json=envelope({"experiment": experiment_wire(), "annotation": annotation}),
    )
    exp = experiment(session)
    exp.ingest([metric()], sync=True)
    exp.annotate("note")
    timeouts = {
        c.request.url.split("?")[0]: c.request.req_kwargs["timeout"].total for c in mocked.calls
    }
    assert timeouts[KEYS_URL] == 7
    assert timeouts[INGEST_URL] == 42
    assert timeouts[f"{API}/experiments/exp-1/annotations"] == 7
    session.close()


# -- idempotency keys -------------------------------------------------------------------


def test_post_reuses_one_idempotency_key_across_retries(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.post(EXPERIMENTS_URL, json={"data": None, "error": "Service unavailable"}, status=503)
    mocked.post(EXPERIMENTS_URL, json=error_body("boom", "internal"), status=500)
    mocked.post(EXPERIMENTS_URL, json=envelope({"experiment": experiment_wire()}))
    sm.Experiment.create("run-1")
    keys = [header(c, "Idempotency-Key") for c in mocked.calls]
    assert len(keys) == 3
    assert keys[0]
    assert keys == [keys[0]] * 3


def test_patch_reuses_one_idempotency_key_across_retries(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.patch(EXP_URL, json=error_body("boom", "internal"), status=502)
    mocked.patch(EXP_URL, json=envelope({"experiment": experiment_wire()}))
    experiment(session).move(None)
    keys = [header(c, "Idempotency-Key") for c in mocked.calls]
    assert len(keys) == 2
    assert keys[0]
    assert keys[0] == keys[1]


def test_separate_calls_use_different_idempotency_keys(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.post(EXPERIMENTS_URL, json=envelope({"experiment": experiment_wire()}))
    sm.Experiment.create("run-1")
    sm.Experiment.create("run-1")
    keys = [header(c, "Idempotency-Key") for c in mocked.calls]
    assert len(keys) == 2
    assert all(keys)
    assert keys[0] != keys[1]


def test_get_and_delete_carry_no_idempotency_key(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(EXP_URL, json=envelope({"experiment": experiment_wire()}))
    revoked = key_wire()
    revoked["revoked_at_ms"] = 1_795_716_960_000
    mocked.delete(f"{KEYS_URL}/key-1", json=envelope({"key": revoked}))
    sm.Experiment.get("exp-1")
    sm.IngestionKey(key_wire(), session=session).revoke()
    assert [c.request.method for c in mocked.calls] == ["GET", "DELETE"]
    for call in mocked.calls:
        assert "Idempotency-Key" not in call.request.headers


def test_ingestion_key_creation_carries_no_idempotency_key(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.post(KEYS_URL, json=mint_ok())
    key = experiment(session).create_ingestion_key()
    assert key.token == INGESTION_TOKEN
    (call,) = mocked.calls
    assert call.request.method == "POST"
    assert "Idempotency-Key" not in call.request.headers
    assert header(call, "Authorization") == f"Bearer {API_KEY}"


def test_every_request_carries_the_json_headers(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.post(EXPERIMENTS_URL, json=envelope({"experiment": experiment_wire()}))
    sm.Experiment.create("run-1")
    (call,) = mocked.calls
    assert header(call, "Content-Type") == "application/json"
    assert header(call, "Accept") == "application/json"
    assert header(call, "Authorization") == f"Bearer {API_KEY}"


# -- the in-progress poll ---------------------------------------------------------------


def test_in_progress_409_polls_with_the_same_key(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.post(EXPERIMENTS_URL, json=in_progress_body(), status=409)
    mocked.post(EXPERIMENTS_URL, json=in_progress_body(), status=409)
    mocked.post(EXPERIMENTS_URL, json=envelope({"experiment": experiment_wire()}))
    exp = sm.Experiment.create("run-1")
    assert exp.id == "exp-1"
    assert len(mocked.calls) == 3
    assert sleeps == [0.5, 0.5]
    keys = {header(c, "Idempotency-Key") for c in mocked.calls}
    assert len(keys) == 1
    assert None not in keys


def test_in_progress_polls_do_not_use_up_attempts(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    for _ in range(2):
        mocked.post(EXPERIMENTS_URL, json=in_progress_body(), status=409)
    for _ in range(2):
        mocked.post(EXPERIMENTS_URL, json=error_body("boom", "internal"), status=500)
    mocked.post(EXPERIMENTS_URL, json=envelope({"experiment": experiment_wire()}))
    sm.Experiment.create("run-1")
    assert len(mocked.calls) == 5
    assert sleeps == [0.5, 0.5, 0.25, 0.5]  # two polls, then the two backoffs
    assert len({header(c, "Idempotency-Key") for c in mocked.calls}) == 1


def test_in_progress_gives_up_after_ten_polls(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.post(EXPERIMENTS_URL, json=in_progress_body(), status=409)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.Experiment.create("run-1", defer=False)
    assert info.value.status_code == 409
    assert info.value.error_code == IN_PROGRESS
    assert len(mocked.calls) == 11  # the first attempt and ten polls
    assert sleeps == [0.5] * 10
    assert len({header(c, "Idempotency-Key") for c in mocked.calls}) == 1


def test_a_creation_still_in_progress_after_the_polls_waits_in_the_spool(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    # A slow service: the same key replayed later by the sender gets the creation's answer.
    mocked.post(EXPERIMENTS_URL, json=in_progress_body(), status=409)
    exp = sm.Experiment.create("run-1")
    assert exp.id.startswith("pending-")
    assert len(mocked.calls) == 11
    session.logs.close(timeout=0)


# -- broken 2xx answers -------------------------------------------------------------------


def test_2xx_body_that_is_not_json_is_retried_then_a_response_error(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, body="<html>gateway says hi</html>", status=200, content_type="text/html")
    with pytest.raises(sm.MetricsApiResponseError):
        sm.whoami()
    assert len(mocked.calls) == 3
    assert sleeps == [0.25, 0.5]


def test_2xx_body_that_is_not_json_then_good_succeeds(
    session: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    mocked.get(AUTH_URL, body="not json", status=200, content_type="text/plain")
    mocked.get(AUTH_URL, json=auth_ok())
    assert sm.whoami().organization_name == "Local"
    assert len(mocked.calls) == 2


@pytest.mark.parametrize(
    "body",
    [
        [1, 2, 3],
        "just a string",
        42,
        None,
        {"error": None},
        {"data": {"auth": {"kind": "api_key"}, "organization": {"id": "o"}}},
        {"data": None, "error": {"message": "oops", "details": "code=internal"}},
        {"data": {"auth": {"kind": "api_key"}, "organization": {"id": "o"}}, "error": "oops"},
    ],
    ids=[
        "list",
        "string",
        "number",
        "null",
        "no-data",
        "no-error",
        "error-object",
        "error-string",
    ],
)
def test_2xx_that_is_not_a_clean_envelope_is_a_response_error(
    session: sm.Session, mocked: responses.RequestsMock, body: Any
) -> None:
    mocked.get(AUTH_URL, body=json.dumps(body), status=200, content_type="application/json")
    with pytest.raises(sm.MetricsApiResponseError):
        sm.whoami()


def test_experiment_missing_slug_names_the_operation(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    broken = experiment_wire()
    del broken["slug"]
    mocked.get(EXP_URL, json=envelope({"experiment": broken}))
    with pytest.raises(sm.MetricsApiResponseError) as info:
        sm.Experiment.get("exp-1")
    assert "get_experiment" in str(info.value)


def test_data_that_is_not_an_object_names_the_operation(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(EXP_URL, json=envelope(None))
    with pytest.raises(sm.MetricsApiResponseError) as info:
        sm.Experiment.get("exp-1")
    assert "get_experiment" in str(info.value)


def test_experiments_not_a_list_names_the_operation(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(EXPERIMENTS_URL, json=envelope({"experiments": experiment_wire()}))
    with pytest.raises(sm.MetricsApiResponseError) as info:
        sm.Experiment.list()
    assert "list_experiments" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("metric_value", None), ("step", "3"), ("client_timestamp_ms", "soon")],
    ids=["missing-metric_value", "string-step", "string-timestamp"],
)
def test_bad_metric_row_names_the_operation(
    session: sm.Session, mocked: responses.RequestsMock, field: str, value: Any
) -> None:
    bad = row_wire("ev-2", 2, 0.4, 1_795_716_960_000)
    if value is None:
        del bad[field]
    else:
        bad[field] = value
    rows = [row_wire("ev-1", 1, 0.5, 1_795_716_959_000), bad]
    mocked.get(METRICS_URL, json=envelope({"rows": rows}))
    with pytest.raises(sm.MetricsApiResponseError) as info:
        experiment(session).metrics("loss", limit=10)
    assert "list_metrics" in str(info.value)


def test_unknown_extra_fields_are_kept_not_rejected(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    wire = experiment_wire(shiny_new_field={"added": "later"})
    wire["folder"] = {
        "folder_id": "f-1",
        "org_id": "org-1",
        "name": "runs",
        "parent_id_path": [],
        "path_name": "runs",
        "color": "teal",
    }
    mocked.get(EXP_URL, json=envelope({"experiment": wire, "also_new": True}))
    row = row_wire("ev-1", 1, 0.5, 1_795_716_959_000)
    row["shard"] = 7
    mocked.get(METRICS_URL, json=envelope({"rows": [row], "cursor": None}))
    exp = sm.Experiment.get("exp-1")
    assert exp.slug == "run-1"
    assert exp.shiny_new_field == {"added": "later"}
    assert exp.folder is not None
    assert exp.folder.color == "teal"
    rows = exp.metrics("loss", limit=10)
    assert rows[0].value == 0.5
    assert rows[0].shard == 7


# -- keep-alive ---------------------------------------------------------------------------


def test_calls_reuse_one_kept_alive_connection() -> None:
    client_addresses: list[tuple[str, int]] = []
    body = json.dumps(auth_ok()).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            client_addresses.append(self.client_address)
            if self.path.split("?")[0] != "/api/v1/auth/status":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    session = None
    try:
        port = server.server_address[1]
        session = sm.Session(API_KEY, host=f"http://127.0.0.1:{port}")
        for _ in range(20):
            assert sm.whoami(session=session).organization_id == "org-1"
    finally:
        if session is not None:
            session.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert len(client_addresses) == 20
    assert len({port for _, port in client_addresses}) == 1


# -- session validation and lifecycle ------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, -0.5, "10", None, [10]])
@pytest.mark.parametrize("setting", ["timeout", "ingest_timeout"])
def test_bad_timeouts_are_validation_errors(
    mocked: responses.RequestsMock, setting: str, value: Any
) -> None:
    with pytest.raises(sm.MetricsValidationError):
        sm.Session(API_KEY, host=HOST, **{setting: value})
    assert len(mocked.calls) == 0


def test_positive_timeouts_are_accepted() -> None:
    with sm.Session(API_KEY, host=HOST, timeout=0.5, ingest_timeout=120) as session:
        assert session.timeout == 0.5
        assert session.ingest_timeout == 120


def test_context_manager_closes_the_session(mocked: responses.RequestsMock) -> None:
    mocked.get(AUTH_URL, json=auth_ok())
    with sm.Session(API_KEY, host=HOST) as session:
        sm.whoami(session=session)
    assert len(mocked.calls) == 1
    with pytest.raises(sm.MetricsApiError):
        sm.whoami(session=session)
    assert len(mocked.calls) == 1


def test_a_closed_session_refuses_calls(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(EXP_URL, json=envelope({"experiment": experiment_wire()}))
    session.close()
    with pytest.raises(sm.MetricsApiError):
        sm.Experiment.get("exp-1")
    assert len(mocked.calls) == 0
    session.close()  # closing twice is harmless


# -- secrets ------------------------------------------------------------------------------


def _exception_texts(error: BaseException) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts.extend([str(current), repr(current), *(str(a) for a in current.args)])
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return texts


def _log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(str(record.msg))
        texts.append(repr(record.args))
        if record.exc_text:
            texts.append(record.exc_text)
    return texts


def test_secrets_stay_out_of_logs_and_errors(
    session: sm.Session,
    mocked: responses.RequestsMock,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    mocked.post(KEYS_URL, json=mint_ok())
    mocked.post(INGEST_URL, json={"data": None, "error": "Service unavailable"}, status=503)
    mocked.get(AUTH_URL, body=requests.exceptions.ConnectionError("connection refused"))
    mocked.get(EXP_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    mocked.post(
        f"{API}/experiments/exp-1/annotations", json=error_body("boom", "internal"), status=500
    )
    errors: list[BaseException] = []
    exp = experiment(session)
    for action in (
        lambda: exp.ingest([metric()], sync=True),
        lambda: sm.whoami(),
        lambda: sm.Experiment.get("exp-1"),
        lambda: exp.annotate("note"),
    ):
        with pytest.raises(sm.MetricsApiError) as info:
            action()
        errors.append(info.value)
    # The calls did retry, and the token was used, so there was something to leak.
    assert len(sleeps) == 8
    assert any(
        c.request.headers.get("Authorization") == f"Bearer {INGESTION_TOKEN}" for c in mocked.calls
    )
    assert caplog.records
    for text in _log_texts(caplog):
        assert API_KEY not in text
        assert INGESTION_TOKEN not in text
    for error in errors:
        for text in _exception_texts(error):
            assert API_KEY not in text
            assert INGESTION_TOKEN not in text


def test_echoed_api_key_is_redacted_from_the_error(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.get(
        AUTH_URL,
        json=error_body(f"Unknown API key {API_KEY}", "unauthorized"),
        status=401,
    )
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    message = str(info.value)
    assert message.startswith("HTTP 401: Unknown API key ")
    assert message.endswith("code=unauthorized")
    assert info.value.status_code == 401
    for text in _exception_texts(info.value):
        assert API_KEY not in text


def test_echoed_ingestion_token_is_redacted_from_the_error(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.post(KEYS_URL, json=mint_ok())
    mocked.post(
        INGEST_URL,
        json=error_body(f"bad batch for token {INGESTION_TOKEN}", "validation_error"),
        status=400,
    )
    with pytest.raises(sm.MetricsApiRequestError) as info:
        experiment(session).ingest([metric()], sync=True)
    assert info.value.status_code == 400
    assert "bad batch for token" in str(info.value)
    for text in _exception_texts(info.value):
        assert INGESTION_TOKEN not in text


def test_echoed_api_key_stays_out_of_retry_logs(
    session: sm.Session,
    mocked: responses.RequestsMock,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    mocked.get(AUTH_URL, json=error_body(f"overloaded serving {API_KEY}", "internal"), status=503)
    with pytest.raises(sm.MetricsApiRequestError) as info:
        sm.whoami()
    assert len(mocked.calls) == 3
    assert API_KEY not in str(info.value)
    for text in _log_texts(caplog):
        assert API_KEY not in text


def test_session_repr_hides_the_api_key(session: sm.Session) -> None:
    assert API_KEY not in repr(session)
    assert API_KEY not in str(session)
    assert HOST in repr(session)


# -- hosts (section 1) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "ftp://x",
        "http://user:pw@h",
        "http://h/path",
        "http://h?q=1",
        "http://h#f",
        "h.example.com",
        "http://",
    ],
)
def test_bad_hosts_are_auth_errors_before_any_request(
    mocked: responses.RequestsMock, host: str
) -> None:
    with pytest.raises(sm.MetricsApiAuthError) as info:
        sm.Session("k", host=host)
    assert len(mocked.calls) == 0
    if "pw@" in host:
        assert "user:pw" not in str(info.value)


def test_trailing_slash_is_dropped(mocked: responses.RequestsMock) -> None:
    mocked.get(AUTH_URL, json=auth_ok())
    with sm.Session("k", host="http://127.0.0.1:8765/") as session:
        assert session.host == "http://127.0.0.1:8765"
        sm.whoami(session=session)
    (call,) = mocked.calls
    assert call.request.url == "http://127.0.0.1:8765/api/v1/auth/status"


def test_close_sends_pending_log_events_first(mocked: responses.RequestsMock, clock: Any) -> None:
    session = sm.Session(API_KEY, host=HOST, clock=clock, flush_interval=60)
    mocked.post(KEYS_URL, json=mint_ok())
    mocked.post(INGEST_URL, json=envelope({"ok": True, "mode": "queued"}))
    exp = experiment(session)
    exp.log("loss", 0.5, step=1)
    assert len(mocked.calls) == 0  # queued: a batch waits up to flush_interval
    session.close()
    ingests = [c for c in mocked.calls if c.request.url.split("?")[0] == INGEST_URL]
    assert len(ingests) == 1
    assert json.loads(ingests[0].request.body)["data"][0]["name"] == "loss"
    assert exp.pending_logs == 0


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def test_a_network_error_carries_no_request_and_so_no_key(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    # Error reporters walk causes and read their attributes: requests' exceptions hold the
    # request, Authorization header included, so none may hang off the SDK's error.
    mocked.get(f"{API}/auth/status", body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(sm.MetricsApiRequestError) as caught:
        sm.whoami()
    assert "ConnectionError" in str(caught.value)
    for link in _chain(caught.value):
        assert not isinstance(link, requests.RequestException)
        assert API_KEY not in repr(vars(link))


def test_a_success_status_echoing_the_key_in_its_envelope_is_redacted(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    body = {"data": None, "error": {"message": f"bad key {API_KEY}"}}
    mocked.get(f"{API}/auth/status", json=body, status=200)
    with pytest.raises(sm.MetricsApiResponseError) as caught:
        sm.whoami()
    assert API_KEY not in str(caught.value)
    assert "***" in str(caught.value)
