"""The local reference server's own tests: envelope and codes, idempotency, isolation,
dedupe, metric reads, catalog, annotations, ingestion keys, faults, serving.

They talk plain HTTP (``requests``) to the plugin's ``metrics_server``, or drive the
WSGI app with werkzeug's test client when a fake clock must move time.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from werkzeug.test import Client

from syvain_metrics.server import MetricsApp, Store
from syvain_metrics.server.faults import Faults
from syvain_metrics.testing import LocalServer

API = "/api/v1"


# -- helpers -------------------------------------------------------------------------


@dataclass
class Api:
    """Plain-HTTP calls to a server, with the API key unless told otherwise."""

    url: str
    key: str
    http: requests.Session = field(default_factory=requests.Session)

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
        token: str | None = None,
        idem: str | None = None,
        data: bytes | None = None,
        timeout: float = 5.0,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.key}"}
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return self.http.request(
            method,
            self.url + API + path,
            json=json_body,
            params=params,
            headers=headers,
            data=data,
            timeout=timeout,
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["error"] is None
        return body["data"]

    def experiment(self, slug: str = "run-1", **body: Any) -> dict[str, Any]:
        return dict(self.ok("POST", "/experiments", json_body={"slug": slug, **body})["experiment"])

    def token(self, experiment_id: str, **body: Any) -> str:
        data = self.ok("POST", f"/experiments/{experiment_id}/ingestion-keys", json_body=body)
        return str(data["token"])

    def ingest(
        self, experiment_id: str, token: str, metrics: list[dict[str, Any]], **kwargs: Any
    ) -> requests.Response:
        return self.call(
            "POST",
            f"/experiments/{experiment_id}/ingest",
            params={"sync": "true"},
            json_body={"data": metrics},
            token=token,
            **kwargs,
        )

    def rows(self, experiment_id: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.ok("GET", f"/experiments/{experiment_id}/metrics", params=params)["rows"])


def failure(response: requests.Response) -> tuple[int, str | None, str | None]:
    """``(status, code, field)`` of an error answer, checking the envelope on the way."""
    body = response.json()
    assert body["data"] is None
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    parts = dict(
        part.strip().split("=", 1) for part in body["error"]["details"].split(";") if "=" in part
    )
    return response.status_code, parts.get("code"), parts.get("field")


def metric(event: str, value: float, step: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"client_event_id": event, "name": "loss", "value": value, "step": step, **extra}


@pytest.fixture
def api(metrics_server: LocalServer) -> Iterator[Api]:
    client = Api(metrics_server.url, metrics_server.api_key)
    yield client
    client.http.close()


@pytest.fixture
def other(metrics_server: LocalServer) -> Iterator[Api]:
    """A second organization on the same server."""
    client = Api(metrics_server.url, metrics_server.add_organization())
    yield client
    client.http.close()


@pytest.fixture
def exp(api: Api) -> dict[str, Any]:
    return api.experiment("run-1", description="Baseline", metadata={"model": "mamba"})


@pytest.fixture
def token(api: Api, exp: dict[str, Any]) -> str:
    return api.token(exp["id"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_795_716_950.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Clocked:
    """The WSGI app under a fake clock, driven by werkzeug's test client."""

    client: Client
    clock: FakeClock
    key: str

    def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, idem: str = ""
    ) -> Any:
        headers = {"Authorization": f"Bearer {token or self.key}"}
        if idem:
            headers["Idempotency-Key"] = idem
        return self.client.open(API + path, method=method, json=body, headers=headers)


@pytest.fixture
def clocked() -> Iterator[Clocked]:
    clock = FakeClock()
    store = Store(clock=clock)
    [key] = store.use_api_keys(["ak_local_clocked"])
    yield Clocked(Client(MetricsApp(store)), clock, key)
    store.close()


# -- envelope and error codes ------------------------------------------------------------


def test_success_envelope_and_auth_status(api: Api) -> None:
    body = api.call("GET", "/auth/status").json()
    assert body["error"] is None
    assert body["data"]["auth"] == {"kind": "api_key"}
    assert body["data"]["organization"]["name"] == "Local"
    uuid.UUID(body["data"]["organization"]["id"], version=4)


def test_unknown_route_is_not_found(api: Api) -> None:
    assert failure(api.call("GET", "/nope")) == (404, "not_found", None)
    assert failure(api.call("GET", "/experiments/x/nope")) == (404, "not_found", None)
    # An empty id is not the list route.
    assert failure(api.call("GET", "/experiments/")) == (404, "not_found", None)


def test_wrong_method_is_405(api: Api) -> None:
    response = api.call("PUT", "/experiments/some-id")
    assert failure(response) == (405, "method_not_allowed", None)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "POST", "PATCH"}


@pytest.mark.parametrize("header", [None, "Bearer ", "Basic abc", "Bearer wrong-key"])
def test_missing_or_wrong_token_is_401(metrics_server: LocalServer, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = requests.get(f"{metrics_server.url}{API}/experiments", headers=headers, timeout=5)
    assert failure(response) == (401, "unauthorized", None)


def test_ingestion_token_only_on_ingestion_endpoints(
    api: Api, exp: dict[str, Any], token: str
) -> None:
    assert failure(api.call("GET", "/experiments", token=token)) == (403, "forbidden", None)
    assert failure(api.call("GET", f"/experiments/{exp['id']}", token=token))[:2] == (
        403,
        "forbidden",
    )
    status = api.ok("GET", "/auth/status", token=token)
    assert status["auth"] == {"kind": "ingestion_key"}
    assert status["organization"]["id"] == exp["org_id"]


def test_api_key_on_ingestion_endpoints_is_403(api: Api, exp: dict[str, Any]) -> None:
    response = api.ingest(exp["id"], api.key, [metric("a", 1.0)])
    assert failure(response) == (403, "forbidden", None)
    response = api.call(
        "POST", f"/experiments/{exp['id']}/annotations", json_body={"annotation": "x"}
    )
    assert failure(response) == (403, "forbidden", None)
    assert api.rows(exp["id"]) == []


def test_another_organizations_ids_are_404(api: Api, other: Api, exp: dict[str, Any]) -> None:
    folder = api.ok("POST", "/folders", json_body={"name": "mine", "parent_id": None})["folder"]
    assert failure(other.call("GET", f"/experiments/{exp['id']}")) == (404, "not_found", None)
    assert failure(other.call("GET", f"/folders/{folder['folder_id']}"))[:2] == (404, "not_found")
    assert failure(other.call("GET", f"/experiments/{exp['id']}/metrics"))[0] == 404
    assert (
        failure(other.call("POST", f"/experiments/{exp['id']}/ingestion-keys", json_body={}))[0]
        == 404
    )
    moved = other.call("PATCH", f"/experiments/{exp['id']}", json_body={"folder_id": None})
    assert failure(moved)[0] == 404
    mine = other.experiment("theirs")
    into_foreign = other.call(
        "PATCH", f"/experiments/{mine['id']}", json_body={"folder_id": folder["folder_id"]}
    )
    assert failure(into_foreign) == (404, "not_found", "folder_id")


def test_organizations_are_isolated(api: Api, other: Api, exp: dict[str, Any]) -> None:
    api.ok("POST", "/folders", json_body={"name": "shared-name", "parent_id": None})
    other.ok("POST", "/folders", json_body={"name": "shared-name", "parent_id": None})
    theirs = other.experiment("run-1")  # the same slug in another organization is fine
    assert theirs["org_id"] != exp["org_id"]
    assert [e["id"] for e in other.ok("GET", "/experiments")["experiments"]] == [theirs["id"]]
    assert len(other.ok("GET", "/folders")["folders"]) == 1
    series = json.dumps({"experiment_id": exp["id"], "metric_name": "loss"})
    assert failure(other.call("GET", "/metrics", params={"series": series})) == (
        404,
        "not_found",
        "series",
    )


def test_validation_error_names_the_metric_field(api: Api, exp: dict[str, Any], token: str) -> None:
    batch = [metric(f"e{i}", float(i), i) for i in range(5)]
    batch[3]["value"] = "high"
    response = api.ingest(exp["id"], token, batch)
    assert failure(response) == (400, "validation_error", "data[3].value")
    assert api.rows(exp["id"]) == []  # all or nothing


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "extra": 1}, "extra"),
        ({"name": 5}, "name"),
    ],
)
def test_folder_body_validation(api: Api, body: dict[str, Any], field_name: str) -> None:
    assert failure(api.call("POST", "/folders", json_body=body)) == (
        400,
        "validation_error",
        field_name,
    )
    assert api.ok("GET", "/folders")["folders"] == []


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"slug": [1', b"\xff"])
def test_body_must_be_a_json_object(api: Api, raw: bytes) -> None:
    response = api.call("POST", "/experiments", data=raw)
    assert failure(response) == (400, "validation_error", "body")


@pytest.mark.parametrize(
    ("params", "field_name"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "-3"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "paused"}, "status"),
        ({"colour": "blue"}, "colour"),
        ({"limit": ["1", "2"]}, "limit"),
        ({"from": "1.5"}, "from"),
    ],
)
def test_query_validation(api: Api, params: dict[str, Any], field_name: str) -> None:
    response = api.call("GET", "/experiments", params=params)
    assert failure(response) == (400, "validation_error", field_name)


def test_oversize_batch_stores_nothing(api: Api, exp: dict[str, Any], token: str) -> None:
    batch = [metric(f"e{i}", 1.0, i) for i in range(1001)]
    assert failure(api.ingest(exp["id"], token, batch)) == (400, "validation_error", "data")
    assert api.ingest(exp["id"], token, batch[:1000]).status_code == 200
    assert len(api.rows(exp["id"], limit=5000)) == 1000


def test_slug_and_folder_conflicts_are_409(api: Api, exp: dict[str, Any]) -> None:
    assert failure(api.call("POST", "/experiments", json_body={"slug": "run-1"})) == (
        409,
        "slug_exists",
        "slug",
    )
    root = {"name": "runs", "parent_id": None}
    api.ok("POST", "/folders", json_body=root)
    assert failure(api.call("POST", "/folders", json_body=root)) == (409, "folder_exists", "name")
    other_case = api.call("POST", "/folders", json_body={"name": "RUNS", "parent_id": None})
    assert other_case.status_code == 200  # names are case-sensitive


def test_path_segments_are_decoded_once(api: Api, exp: dict[str, Any], token: str) -> None:
    # %2F stays inside one segment: this is an unknown experiment, not an unknown route.
    response = api.call("GET", "/experiments/a%2Fb")
    assert failure(response) == (404, "not_found", None)
    assert response.json()["error"]["message"] == "Experiment not found"
    api.ingest(exp["id"], token, [{**metric("a", 1.0), "name": "train/loss", "metadata": {"k": 1}}])
    values = api.ok("GET", f"/experiments/{exp['id']}/catalog/train%2Floss")["metadata"]
    assert values == {
        "metric_name": "train/loss",
        "scanned_event_count": 1,
        "keys": [{"key": "k", "values": [1], "value_count": 1}],
    }
    api.ingest(exp["id"], token, [{**metric("b", 2.0), "name": "perte/été %"}])
    named = api.ok("GET", f"/experiments/{exp['id']}/catalog/{quote('perte/été %', safe='')}")
    assert named["metadata"]["metric_name"] == "perte/été %"


# -- idempotency ----------------------------------------------------------------------------


def test_idempotent_replay(api: Api) -> None:
    first = api.call("POST", "/experiments", json_body={"slug": "a"}, idem="k1")
    again = api.call("POST", "/experiments", json_body={"slug": "a"}, idem="k1")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers.get("Idempotency-Replayed") == "true"
    assert len(api.ok("GET", "/experiments")["experiments"]) == 1


def test_replay_matches_json_not_bytes(api: Api) -> None:
    first = api.call("POST", "/experiments", data=b'{"slug":"a","description":"d"}', idem="k")
    again = api.call("POST", "/experiments", data=b'{"description": "d", "slug": "a"}', idem="k")
    assert again.content == first.content


def test_client_errors_are_replayed(api: Api, exp: dict[str, Any]) -> None:
    first = api.call("POST", "/experiments", json_body={"slug": "run-1"}, idem="dup")
    assert failure(first)[:2] == (409, "slug_exists")
    again = api.call("POST", "/experiments", json_body={"slug": "run-1"}, idem="dup")
    assert (again.status_code, again.content) == (409, first.content)
    assert again.headers.get("Idempotency-Replayed") == "true"


def test_reused_key_with_another_request_is_422(api: Api) -> None:
    api.ok("POST", "/experiments", json_body={"slug": "a"}, idem="k1")
    response = api.call("POST", "/experiments", json_body={"slug": "b"}, idem="k1")
    assert failure(response) == (422, "idempotency_key_reused", None)
    other_path = api.call("POST", "/folders", json_body={"name": "a"}, idem="k1")
    assert failure(other_path)[1] == "idempotency_key_reused"
    assert len(api.ok("GET", "/experiments")["experiments"]) == 1


def test_validation_failures_leave_no_record(api: Api) -> None:
    bad = api.call("POST", "/experiments", json_body={"slug": ""}, idem="k1")
    assert failure(bad)[1] == "validation_error"
    fixed = api.call("POST", "/experiments", json_body={"slug": "good"}, idem="k1")
    assert fixed.status_code == 200


def test_keys_are_scoped_per_credential(api: Api, other: Api) -> None:
    mine = api.ok("POST", "/experiments", json_body={"slug": "a"}, idem="same")
    theirs = other.ok("POST", "/experiments", json_body={"slug": "a"}, idem="same")
    assert mine["experiment"]["id"] != theirs["experiment"]["id"]


def test_ingestion_key_creation_ignores_the_header(api: Api, exp: dict[str, Any]) -> None:
    route = f"/experiments/{exp['id']}/ingestion-keys"
    first = api.ok("POST", route, json_body={"name": "k"}, idem="same")
    second = api.ok("POST", route, json_body={"name": "k"}, idem="same")
    assert first["key"]["id"] != second["key"]["id"]


def test_in_progress_while_the_first_still_runs(metrics_server: LocalServer, api: Api) -> None:
    metrics_server.faults.delay("create_experiment", seconds=0.3)
    results: list[requests.Response] = []
    first = threading.Thread(
        target=lambda: results.append(
            requests.post(
                f"{api.url}{API}/experiments",
                json={"slug": "slow"},
                headers={"Authorization": f"Bearer {api.key}", "Idempotency-Key": "k"},
                timeout=5,
            )
        )
    )
    first.start()
    try:
        assert metrics_server.faults.wait_fired(1)
        running = api.call("POST", "/experiments", json_body={"slug": "slow"}, idem="k")
        assert failure(running) == (409, "idempotency_key_in_progress", None)
        reused = api.call("POST", "/experiments", json_body={"slug": "other"}, idem="k")
        assert failure(reused)[:2] == (422, "idempotency_key_reused")
    finally:
        first.join(timeout=5)
    replay = api.call("POST", "/experiments", json_body={"slug": "slow"}, idem="k")
    assert (replay.status_code, replay.content) == (200, results[0].content)
    assert len(api.ok("GET", "/experiments")["experiments"]) == 1


def test_records_expire_after_a_day(clocked: Clocked) -> None:
    assert clocked.call("POST", "/folders", {"name": "a"}, idem="k").status_code == 200
    assert clocked.call("POST", "/folders", {"name": "b"}, idem="k").status_code == 422
    clocked.clock.now += 24 * 3600 + 1
    assert clocked.call("POST", "/folders", {"name": "b"}, idem="k").status_code == 200


# -- faults ------------------------------------------------------------------------------------


def test_fail_next_is_not_applied(metrics_server: LocalServer, api: Api) -> None:
    metrics_server.faults.fail_next("POST /api/v1/experiments", times=2, status=503, retry_after=1)
    for _ in range(2):
        response = api.call("POST", "/experiments", json_body={"slug": "a"}, idem="k")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["data"] is None
    assert api.ok("GET", "/experiments")["experiments"] == []  # GETs are not matched
    assert api.call("POST", "/experiments", json_body={"slug": "a"}, idem="k").status_code == 200
    assert metrics_server.faults.fired == 2
    assert metrics_server.faults.pending == 0


def test_drop_after_commit_then_retry_replays(metrics_server: LocalServer, api: Api) -> None:
    metrics_server.faults.drop_connection("create_experiment", when="after_commit")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.call("POST", "/experiments", json_body={"slug": "a"}, idem="k")
    retry = api.call("POST", "/experiments", json_body={"slug": "a"}, idem="k")
    assert retry.status_code == 200
    assert retry.headers.get("Idempotency-Replayed") == "true"
    assert len(api.ok("GET", "/experiments")["experiments"]) == 1


def test_drop_before_commit_applies_nothing(
    metrics_server: LocalServer, api: Api, exp: dict[str, Any], token: str
) -> None:
    metrics_server.faults.drop_connection(
        f"POST /api/v1/experiments/{exp['id']}/ingest", when="before_commit"
    )
    with pytest.raises(requests.exceptions.RequestException):
        api.ingest(exp["id"], token, [metric("a", 1.0)], idem="k")
    assert api.rows(exp["id"]) == []
    assert api.ingest(exp["id"], token, [metric("a", 1.0)], idem="k").status_code == 200
    assert len(api.rows(exp["id"])) == 1


def test_delay_past_a_client_timeout(metrics_server: LocalServer, api: Api) -> None:
    metrics_server.faults.delay("create_folder", seconds=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.call("POST", "/folders", json_body={"name": "a"}, idem="k", timeout=0.05)
    assert metrics_server.faults.wait_fired(1)  # the delay starts once the write is committed
    # The write was committed before the delay: it is there, once.
    assert [f["name"] for f in api.ok("GET", "/folders")["folders"]] == ["a"]


def test_refused_connection(metrics_server: LocalServer, api: Api) -> None:
    metrics_server.faults.refuse_connections()
    fresh = requests.Session()
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh.get(f"{api.url}{API}/auth/status", timeout=5)
    assert (
        fresh.get(
            f"{api.url}{API}/folders", headers={"Authorization": f"Bearer {api.key}"}, timeout=5
        ).status_code
        == 200
    )
    fresh.close()


def test_fault_routes_and_clear() -> None:
    faults = Faults()
    faults.fail_next("ingest_metrics")
    faults.delay("GET /api/v1/experiments/*/metrics", seconds=0)
    assert faults.take("fail", "POST", "/api/v1/experiments/x/ingest", "create_folder") is None
    assert faults.take("fail", "POST", "/api/v1/experiments/x/ingest", "ingest_metrics")
    assert faults.take("delay", "POST", "/api/v1/experiments/x/metrics", None) is None
    assert faults.take("delay", "GET", "/api/v1/experiments/x/metrics", None)
    assert [f.kind for f in faults.history] == ["fail", "delay"]
    faults.fail_next(times=3)
    faults.clear()
    assert (faults.pending, faults.fired) == (0, 0)
    with pytest.raises(ValueError, match="status"):
        faults.fail_next(status=200)


# -- ingest and dedupe ---------------------------------------------------------------------------


def test_client_event_id_first_write_wins(api: Api, exp: dict[str, Any], token: str) -> None:
    response = api.ingest(exp["id"], token, [metric("same", 1.0, 0), metric("same", 2.0, 0)])
    assert response.json() == {"data": {"ok": True, "mode": "sync"}, "error": None}
    api.ingest(exp["id"], token, [metric("same", 3.0, 0), metric("new", 4.0, 1)])
    assert [r["metric_value"] for r in api.rows(exp["id"])] == [1.0, 4.0]


def test_ingest_fills_times_and_updates_the_experiment(
    api: Api, exp: dict[str, Any], token: str
) -> None:
    api.ingest(exp["id"], token, [metric("a", 1.0, 0, timestamp_ms=5), metric("b", 2.0, 1)])
    rows = api.rows(exp["id"])
    assert rows[0]["client_timestamp_ms"] == 5
    assert rows[1]["client_timestamp_ms"] == rows[1]["server_timestamp_ms"]
    after = api.ok("GET", f"/experiments/{exp['id']}")["experiment"]
    assert after["last_event_at_ms"] == rows[1]["server_timestamp_ms"]
    assert after["updated_at_ms"] >= exp["updated_at_ms"]
    queued = api.call(
        "POST", f"/experiments/{exp['id']}/ingest", json_body={"data": []}, token=token
    )
    assert queued.json()["data"] == {"ok": True, "mode": "queued"}


def test_rows_have_the_contract_shape(api: Api, exp: dict[str, Any], token: str) -> None:
    api.ingest(exp["id"], token, [metric("a", 2, 3, metadata={"split": "train"}, timestamp_ms=9)])
    [row] = api.rows(exp["id"])
    uuid.UUID(row["event_id"], version=4)
    assert row | {"event_id": None, "server_timestamp_ms": None} == {
        "event_id": None,
        "org_id": exp["org_id"],
        "experiment_id": exp["id"],
        "experiment_slug": "run-1",
        "experiment_description": None,
        "experiment_metadata_json": None,
        "metric_name": "loss",
        "metric_value": 2.0,
        "step": 3.0,
        "event_metadata_json": '{"split":"train"}',
        "client_timestamp_ms": 9,
        "server_timestamp_ms": None,
    }
    [full] = api.rows(exp["id"], include_experiment_meta_as_of="true")
    assert full["experiment_description"] == "Baseline"
    assert json.loads(full["experiment_metadata_json"]) == {"model": "mamba"}


# -- metric reads ------------------------------------------------------------------------------------


@pytest.fixture
def filled(api: Api, exp: dict[str, Any], token: str) -> str:
    batch = [
        metric("n1", 0.1, None, timestamp_ms=50),
        metric("s2", 0.2, 2, timestamp_ms=20, metadata={"split": "train", "layer": 1}),
        metric("s1", 0.3, 1, timestamp_ms=30, metadata={"split": "valid", "layer": 1.0}),
        metric("s1b", 0.4, 1, timestamp_ms=10, metadata={"split": "train", "flag": True}),
        metric("n2", 0.5, None, timestamp_ms=40, metadata={"cfg": {"a": 1, "b": [1, 2]}}),
        {**metric("lr", 0.01, 1, timestamp_ms=10), "name": "lr"},
    ]
    assert api.ingest(exp["id"], token, batch).status_code == 200
    return str(exp["id"])


def _values(rows: list[dict[str, Any]]) -> list[float]:
    return [r["metric_value"] for r in rows]


def test_default_order_null_steps_first(api: Api, filled: str) -> None:
    rows = api.rows(filled, metric_name="loss")
    assert _values(rows) == [0.5, 0.1, 0.4, 0.3, 0.2]  # null steps (by time), then step, time
    desc = api.rows(filled, metric_name="loss", sort_direction="desc")
    assert _values(desc) == [0.2, 0.3, 0.4, 0.1, 0.5]  # every key flips; null steps last


def test_sort_keys(api: Api, filled: str) -> None:
    by_time = api.rows(filled, metric_name="loss", sort_by="client_timestamp")
    assert _values(by_time) == [0.4, 0.2, 0.3, 0.5, 0.1]
    by_server = api.rows(filled, sort_by="server_timestamp")
    ids = [r["event_id"] for r in by_server]
    assert ids == sorted(ids)  # one batch, one server time: event_id decides
    bad = api.call("GET", f"/experiments/{filled}/metrics", params={"sort_by": "series"})
    assert failure(bad) == (400, "validation_error", "sort_by")


def test_event_id_is_the_last_key(api: Api, exp: dict[str, Any], token: str) -> None:
    api.ingest(exp["id"], token, [metric(f"e{i}", float(i), 7, timestamp_ms=1) for i in range(20)])
    ids = [r["event_id"] for r in api.rows(exp["id"])]
    assert ids == sorted(ids)
    desc = [r["event_id"] for r in api.rows(exp["id"], sort_direction="desc")]
    assert desc == sorted(ids, reverse=True)


def test_metadata_filters(api: Api, filled: str) -> None:
    assert _values(api.rows(filled, metadata_key="split")) == [0.4, 0.3, 0.2]
    assert _values(api.rows(filled, metadata_key="split", metadata_value="train")) == [0.4, 0.2]
    by_json = api.rows(filled, metadata_key="layer", metadata_value_json="1")
    assert _values(by_json) == [0.3, 0.2]  # 1 == 1.0
    assert api.rows(filled, metadata_key="flag", metadata_value_json="1") == []  # true is not 1
    assert _values(api.rows(filled, metadata_key="flag", metadata_value_json="true")) == [0.4]
    reordered = '{"b":[1.0,2],"a":1}'
    assert _values(api.rows(filled, metadata_key="cfg", metadata_value_json=reordered)) == [0.5]
    assert api.rows(filled, metadata_key="split", metadata_value_json="1") == []


@pytest.mark.parametrize(
    ("params", "field_name"),
    [
        ({"metadata_value": "train"}, "metadata_key"),
        (
            {"metadata_key": "k", "metadata_value": "a", "metadata_value_json": "1"},
            "metadata_value_json",
        ),
        ({"metadata_key": "k", "metadata_value_json": "{oops"}, "metadata_value_json"),
        ({"metadata_key": "k", "metadata_value_json": "NaN"}, "metadata_value_json"),
        ({"sort_direction": "up"}, "sort_direction"),
        ({"step": "-1"}, "step"),
        ({"from_time": "x"}, "from_time"),
        ({"include_experiment_meta_as_of": "yes"}, "include_experiment_meta_as_of"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_metric_query_validation(
    api: Api, exp: dict[str, Any], params: dict[str, str], field_name: str
) -> None:
    response = api.call("GET", f"/experiments/{exp['id']}/metrics", params=params)
    assert failure(response) == (400, "validation_error", field_name)


def test_step_and_time_bounds_are_inclusive(api: Api, filled: str) -> None:
    assert _values(api.rows(filled, metric_name="loss", step=1)) == [0.4, 0.3]
    assert _values(api.rows(filled, metric_name="loss", from_step=1, to_step=1)) == [0.4, 0.3]
    assert _values(api.rows(filled, metric_name="loss", from_step=2)) == [0.2]
    assert _values(api.rows(filled, metric_name="loss", from_time=20, to_time=40)) == [
        0.5,
        0.3,
        0.2,
    ]


def test_limits_default_and_clamp(api: Api, exp: dict[str, Any], token: str) -> None:
    for start in range(0, 1200, 1000):
        batch = [metric(f"e{i}", float(i), i) for i in range(start, min(start + 1000, 1200))]
        assert api.ingest(exp["id"], token, batch).status_code == 200
    assert len(api.rows(exp["id"])) == 1000
    assert len(api.rows(exp["id"], limit=10**12)) == 1200  # clamped to 100,000, not refused
    assert _values(api.rows(exp["id"], limit=3)) == [0.0, 1.0, 2.0]


def test_compare(api: Api, filled: str, token: str) -> None:
    second = api.experiment("run-2")
    api.ingest(second["id"], api.token(second["id"]), [metric("x", 9.0, 0)])

    def compare(*series: dict[str, Any], **params: Any) -> requests.Response:
        encoded = [json.dumps(s, separators=(",", ":")) for s in series]
        return api.call("GET", "/metrics", params={"series": encoded, **params})

    a = {"experiment_id": filled, "metric_name": "loss"}
    a_train = {**a, "metadata_key": "split", "metadata_value": "train"}
    b = {"experiment_id": second["id"], "metric_name": "loss"}
    rows = compare(a_train, a, b).json()["data"]["rows"]
    assert _values(rows) == [0.5, 0.1, 9.0, 0.4, 0.3, 0.2]  # each row once
    by_series = compare(b, a, sort_by="series,step,client_timestamp").json()["data"]["rows"]
    assert _values(by_series) == [9.0, 0.5, 0.1, 0.4, 0.3, 0.2]
    assert _values(compare(b, a, limit=2).json()["data"]["rows"]) == [0.5, 0.1]
    assert _values(compare(a, b, step=1).json()["data"]["rows"]) == [0.4, 0.3]
    with_nulls = {**b, "metadata_key": None, "metadata_value": None}
    assert compare(with_nulls).status_code == 200
    assert failure(api.call("GET", "/metrics")) == (400, "validation_error", "series")
    assert failure(compare(*[a] * 65)) == (400, "validation_error", "series")
    assert compare(*[a] * 64).status_code == 200
    missing = {"experiment_id": "nope", "metric_name": "loss"}
    assert failure(compare(a, missing)) == (404, "not_found", "series")
    assert failure(compare({"experiment_id": filled}))[:3] == (
        400,
        "validation_error",
        "series[0].metric_name",
    )


# -- catalog ------------------------------------------------------------------------------------------


def test_catalog(api: Api, filled: str) -> None:
    metrics = api.ok("GET", f"/experiments/{filled}/catalog")["metrics"]
    assert metrics == [
        {"metric_name": "loss", "metadata_keys": ["cfg", "flag", "layer", "split"]},
        {"metric_name": "lr", "metadata_keys": []},
    ]
    assert len(api.ok("GET", f"/experiments/{filled}/catalog", params={"limit": 1})["metrics"]) == 1


def test_catalog_values(api: Api, filled: str) -> None:
    route = f"/experiments/{filled}/catalog/loss"
    values = api.ok("GET", route, params={"key": ["split", "layer", "missing"]})["metadata"]
    assert values == {
        "metric_name": "loss",
        "scanned_event_count": 5,
        "keys": [
            {"key": "layer", "values": [1, 1.0], "value_count": 2},
            {"key": "split", "values": ["train", "valid"], "value_count": 2},
        ],
    }
    cut = api.ok("GET", route, params={"key": "split", "limit": 1})["metadata"]["keys"]
    assert cut == [{"key": "split", "values": ["train"], "value_count": 2}]
    every = api.ok("GET", route)["metadata"]["keys"]
    assert [k["key"] for k in every] == ["cfg", "flag", "layer", "split"]
    unknown = api.ok("GET", f"/experiments/{filled}/catalog/nope")["metadata"]
    assert unknown == {"metric_name": "nope", "scanned_event_count": 0, "keys": []}


# -- annotations -----------------------------------------------------------------------------------


def test_annotations(clocked: Clocked) -> None:
    exp = clocked.call("POST", "/experiments", {"slug": "a"}).json["data"]["experiment"]
    token = clocked.call("POST", f"/experiments/{exp['id']}/ingestion-keys", {}).json["data"][
        "token"
    ]
    route = f"/experiments/{exp['id']}/annotations"
    created = []
    for text in ("one", "two", "three"):
        reply = clocked.call("POST", route, {"annotation": text}, token=token)
        assert reply.status_code == 200
        created.append(reply.json["data"]["annotation"])
        assert reply.json["data"]["experiment"]["id"] == exp["id"]
        clocked.clock.now += 1
    assert created[0]["metadata"] == {}
    listed = clocked.call("GET", route).json["data"]["annotations"]
    assert [a["annotation"] for a in listed] == ["one", "two", "three"]
    first, second = created[0]["created_at_ms"], created[1]["created_at_ms"]
    bounded = clocked.call("GET", f"{route}?from={first}&to={second}").json["data"]["annotations"]
    assert [a["annotation"] for a in bounded] == ["one", "two"]
    assert len(clocked.call("GET", f"{route}?limit=1").json["data"]["annotations"]) == 1
    too_long = clocked.call("POST", route, {"annotation": "x" * 16_001}, token=token)
    assert too_long.status_code == 400


# -- ingestion keys -----------------------------------------------------------------------------------


def test_ingestion_key_lifecycle(clocked: Clocked) -> None:
    exp = clocked.call("POST", "/experiments", {"slug": "a"}).json["data"]["experiment"]
    other = clocked.call("POST", "/experiments", {"slug": "b"}).json["data"]["experiment"]
    keys_route = f"/experiments/{exp['id']}/ingestion-keys"
    minted = clocked.call("POST", keys_route, {"name": "ci"}).json["data"]
    key, token = minted["key"], minted["token"]
    assert key["expires_at_ms"] - key["created_at_ms"] == 3_600_000
    assert (key["revoked_at_ms"], key["last_used_at_ms"]) == (None, None)
    clocked.clock.now += 1
    short = clocked.call("POST", keys_route, {"name": "short", "ttl_ms": 1000}).json["data"]
    assert short["key"]["expires_at_ms"] - short["key"]["created_at_ms"] == 1000

    ingest = f"/experiments/{exp['id']}/ingest"
    batch = {"data": [metric("a", 1.0)]}
    assert clocked.call("POST", ingest, batch, token=token).status_code == 200
    other_ingest = f"/experiments/{other['id']}/ingest"
    assert clocked.call("POST", other_ingest, batch, token=token).status_code == 403
    listed = clocked.call("GET", keys_route).json["data"]["keys"]
    assert [k["name"] for k in listed] == ["ci", "short"]
    assert listed[0]["last_used_at_ms"] == int(clocked.clock.now * 1000)

    clocked.clock.now += 2  # past the short key's expiry
    assert clocked.call("POST", ingest, batch, token=short["token"]).status_code == 401
    revoked = clocked.call("DELETE", f"{keys_route}/{key['id']}").json["data"]["key"]
    assert revoked["revoked_at_ms"] == int(clocked.clock.now * 1000)
    clocked.clock.now += 5
    again = clocked.call("DELETE", f"{keys_route}/{key['id']}")
    assert again.status_code == 200
    assert again.json["data"]["key"]["revoked_at_ms"] == revoked["revoked_at_ms"]
    assert clocked.call("POST", ingest, batch, token=token).status_code == 401
    assert [k["id"] for k in clocked.call("GET", keys_route).json["data"]["keys"]] == [
        key["id"],
        short["key"]["id"],
    ]
    assert clocked.call("DELETE", f"{keys_route}/nope").status_code == 404
    too_long = clocked.call("POST", keys_route, {"ttl_ms": 7 * 24 * 3600 * 1000 + 1})
    assert too_long.status_code == 400


# -- folders ---------------------------------------------------------------------------------------


def _folder(api: Api, name: str, parent: str | None = None) -> dict[str, Any]:
    return dict(api.ok("POST", "/folders", json_body={"name": name, "parent_id": parent})["folder"])


def test_folder_tree(api: Api) -> None:
    root = _folder(api, "baselines")
    child = _folder(api, "mamba", root["folder_id"])
    grandchild = _folder(api, "v1", child["folder_id"])
    assert grandchild["parent_id_path"] == [root["folder_id"], child["folder_id"]]
    assert grandchild["path_name"] == "baselines/mamba/v1"
    assert api.ok("GET", "/folders", params={"path": "baselines/mamba"})["folders"] == [child]
    assert api.ok("GET", "/folders", params={"path": "mamba"})["folders"] == []
    assert len(api.ok("GET", "/folders")["folders"]) == 3
    missing_parent = api.call("POST", "/folders", json_body={"name": "x", "parent_id": "nope"})
    assert failure(missing_parent) == (404, "not_found", "parent_id")


def test_folder_contents(api: Api) -> None:
    root = _folder(api, "root")
    _folder(api, "zeta", root["folder_id"])
    _folder(api, "alpha", root["folder_id"])
    older = api.experiment("older", folder_id=root["folder_id"])
    newer = api.experiment("newer", folder_id=root["folder_id"])
    api.experiment("elsewhere")
    contents = api.ok("GET", f"/folders/{root['folder_id']}")
    assert contents["folder"] == root
    assert [f["name"] for f in contents["folders"]] == ["alpha", "zeta"]
    assert [e["id"] for e in contents["experiments"]] == [newer["id"], older["id"]]
    assert newer["folder"] == root


def test_folder_patch(api: Api) -> None:
    a = _folder(api, "a")
    b = _folder(api, "b", a["folder_id"])
    c = _folder(api, "c", b["folder_id"])
    route = f"/folders/{a['folder_id']}"
    for target in (a, b, c):
        under_own = api.call("PATCH", route, json_body={"parent_id": target["folder_id"]})
        assert failure(under_own) == (400, "validation_error", "parent_id")
    assert failure(api.call("PATCH", route, json_body={}))[:2] == (400, "validation_error")
    renamed = api.ok("PATCH", f"/folders/{b['folder_id']}", json_body={"name": "b2"})["folder"]
    assert (renamed["path_name"], renamed["parent_id_path"]) == ("a/b2", [a["folder_id"]])
    moved = api.ok("PATCH", f"/folders/{b['folder_id']}", json_body={"parent_id": None})["folder"]
    assert (moved["path_name"], moved["parent_id_path"]) == ("b2", [])
    assert api.ok("GET", f"/folders/{c['folder_id']}")["folder"]["path_name"] == "b2/c"
    _folder(api, "taken")
    clash = api.call("PATCH", f"/folders/{b['folder_id']}", json_body={"name": "taken"})
    assert failure(clash) == (409, "folder_exists", "name")


# -- experiments ----------------------------------------------------------------------------------


def test_experiment_create_and_url(api: Api, metrics_server: LocalServer) -> None:
    created = api.experiment("run-x")
    assert created["status"] == "created"
    assert created["folder"] is None
    assert created["url"] == f"{metrics_server.url}/dashboard/experiments/{created['id']}"
    assert created["metadata"] == {}
    assert created["created_at_ms"] == created["updated_at_ms"]
    assert all(created[k] is None for k in ("started_at_ms", "done_at_ms", "last_heartbeat_at_ms"))
    missing = api.call("POST", "/experiments", json_body={"slug": "y", "folder_id": "nope"})
    assert failure(missing) == (404, "not_found", "folder_id")


def test_status_transitions(api: Api, exp: dict[str, Any]) -> None:
    route = f"/experiments/{exp['id']}"
    running = api.ok("POST", route, json_body={"status": "running", "timestamp_ms": 1000})
    assert running["experiment"]["started_at_ms"] == 1000
    again = api.ok("POST", route, json_body={"status": "running", "timestamp_ms": 2000})
    assert again["experiment"]["started_at_ms"] == 1000  # only the first time
    failed = api.ok(
        "POST",
        route,
        json_body={
            "status": "error",
            "error": {"name": "ValueError", "detail": "NaN"},
            "timestamp_ms": 3000,
        },
    )["experiment"]
    assert (failed["status"], failed["error_name"], failed["error_detail"]) == (
        "error",
        "ValueError",
        "NaN",
    )
    assert failed["done_at_ms"] == 3000
    done = api.ok("POST", route, json_body={"status": "done", "error": {"name": "ignored"}})[
        "experiment"
    ]
    assert (done["status"], done["error_name"]) == ("done", None)
    assert done["done_at_ms"] >= done["created_at_ms"]
    bad = api.call("POST", route, json_body={"status": "created"})
    assert failure(bad) == (400, "validation_error", "status")


def test_move_experiment(api: Api, exp: dict[str, Any]) -> None:
    folder = _folder(api, "f")
    route = f"/experiments/{exp['id']}"
    moved = api.ok("PATCH", route, json_body={"folder_id": folder["folder_id"]})["experiment"]
    assert moved["folder"] == folder
    assert moved["updated_at_ms"] >= exp["updated_at_ms"]
    back = api.ok("PATCH", route, json_body={"folder_id": None})["experiment"]
    assert back["folder"] is None
    assert failure(api.call("PATCH", route, json_body={}))[:3] == (
        400,
        "validation_error",
        "folder_id",
    )


def test_list_experiments(clocked: Clocked) -> None:
    made = []
    for slug, description in (("mamba-1", ""), ("other", "a MAMBA variant"), ("plain", "")):
        made.append(
            clocked.call("POST", "/experiments", {"slug": slug, "description": description}).json[
                "data"
            ]["experiment"]
        )
        clocked.clock.now += 1
    exp_id = made[2]["id"]
    clocked.call("POST", f"/experiments/{exp_id}", {"status": "running"})

    def slugs(query: str) -> list[str]:
        reply = clocked.call("GET", f"/experiments{query}")
        assert reply.status_code == 200, reply.json
        return [e["slug"] for e in reply.json["data"]["experiments"]]

    assert slugs("") == ["plain", "other", "mamba-1"]  # newest first
    assert slugs("?search=Mamba") == ["other", "mamba-1"]
    assert slugs("?slug=other") == ["other"]
    assert slugs("?slug=othe") == []
    assert slugs("?status=running") == ["plain"]
    first = made[0]["created_at_ms"]
    assert slugs(f"?from={first}&to={first + 1000}") == ["other", "mamba-1"]
    assert slugs("?limit=1") == ["plain"]
    assert len(slugs("?limit=999999")) == 3


# -- serving -------------------------------------------------------------------------------------


def test_keep_alive(api: Api) -> None:
    # http.client, not requests: its socket can be watched whatever urllib3 is installed.
    parts = urlsplit(api.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    headers = {"Authorization": f"Bearer {api.key}"}
    sockets = []
    try:
        for _ in range(5):
            connection.request("GET", f"{API}/auth/status", headers=headers)
            response = connection.getresponse()
            assert response.status == 200
            assert not response.will_close
            response.read()
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)  # one socket for five requests


def test_local_server_reset_keeps_the_key(
    metrics_server: LocalServer, api: Api, exp: dict[str, Any]
) -> None:
    metrics_server.faults.fail_next("get_experiment")
    metrics_server.reset()
    assert metrics_server.faults.pending == 0
    assert api.ok("GET", "/experiments")["experiments"] == []
    assert failure(api.call("GET", f"/experiments/{exp['id']}"))[0] == 404


def test_local_server_lifecycle(tmp_path: Any) -> None:
    db = str(tmp_path / "metrics.sqlite")
    with LocalServer(db=db, api_key="ak_local_fixed") as server:
        assert server.api_key == "ak_local_fixed"
        with server.session() as session:
            from syvain_metrics import Experiment

            Experiment.create("persisted", session=session)
    server.close()  # twice is fine
    with pytest.raises(ValueError, match="only as hashes"):  # it cannot tell the stored key
        LocalServer(db=db)
    with LocalServer(db=db, api_key="ak_local_fixed") as reopened:  # the same organization
        assert reopened.api_key == "ak_local_fixed"
        with reopened.session() as session:
            from syvain_metrics import Experiment

            assert [e.slug for e in Experiment.list(session=session)] == ["persisted"]


def test_testing_module_imports_no_server_dependencies() -> None:
    code = (
        "import sys, syvain_metrics.testing; "
        "assert not {'werkzeug', 'waitress', 'pytest'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_cli_serve(tmp_path: Any) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syvain_metrics.server",
            "--port",
            "0",
            "--api-key",
            "ak_one",
            "--api-key",
            "ak_two",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "ak_one, ak_two" in line
        url = next(word for word in line.split() if word.startswith("http://"))
        orgs = {
            requests.get(
                f"{url}{API}/auth/status", headers={"Authorization": f"Bearer {key}"}, timeout=5
            ).json()["data"]["organization"]["id"]
            for key in ("ak_one", "ak_two")
        }
        assert len(orgs) == 2
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert process.returncode == 143, errors  # 128 + SIGTERM, as a shell reports it


def test_the_server_serves_exactly_the_operations_the_sdk_calls() -> None:
    from syvain_metrics.contract.operations import OPERATIONS
    from syvain_metrics.server import ENDPOINTS

    assert [endpoint.operation for endpoint in ENDPOINTS] == list(OPERATIONS)


def test_each_endpoint_checks_its_input_with_the_operations_schemas() -> None:
    from syvain_metrics.contract.schemas.ingest import CheckedIngestRequest, IngestRequest
    from syvain_metrics.server import ENDPOINTS

    for endpoint in ENDPOINTS:
        body = endpoint.operation.body
        if body is None:
            assert endpoint.body is None, endpoint.name
        elif body is IngestRequest:  # the server keeps the request's own text: stricter
            assert isinstance(endpoint.body, CheckedIngestRequest)
        else:
            assert type(endpoint.body) is body, endpoint.name
        assert _wire_names(type(endpoint.query)) == endpoint.operation.query.wire_names


def test_a_rejected_request_does_not_count_as_a_use_of_the_token(api: Api) -> None:
    exp = api.experiment("unused-token")
    token = api.token(exp["id"])
    bad = api.ingest(exp["id"], token, [{"client_event_id": "a", "name": "x", "value": "NaN"}])
    assert failure(bad)[:2] == (400, "validation_error")
    [key] = api.ok("GET", f"/experiments/{exp['id']}/ingestion-keys")["keys"]
    assert key["last_used_at_ms"] is None
    assert api.ingest(exp["id"], token, [metric("a", 1.0)]).status_code == 200
    [key] = api.ok("GET", f"/experiments/{exp['id']}/ingestion-keys")["keys"]
    assert key["last_used_at_ms"] is not None


def _wire_names(schema: Any) -> set[str]:
    names = set()
    for name, schema_field in schema().fields.items():
        if name == "metadata":  # the SDK's one-key filter, sent as these parameters
            names |= {"metadata_key", "metadata_value", "metadata_value_json"}
        else:
            names.add(schema_field.data_key or name)
    return names


@pytest.mark.parametrize(
    ("sdk", "operation", "also_sent"),
    [
        ("folder.FolderListQuery", "LIST_FOLDERS", set()),
        ("experiment.ExperimentListQuery", "LIST_EXPERIMENTS", set()),
        ("annotation.AnnotationListQuery", "LIST_ANNOTATIONS", set()),
        ("catalog.CatalogQuery", "CATALOG", set()),
        ("catalog.CatalogValuesQuery", "CATALOG_VALUES", set()),
        ("metric_query.MetricsQuery", "LIST_METRICS", set()),
        # compare: the series values, and the step a paged read narrows to
        ("metric_query.CompareQuery", "COMPARE_METRICS", {"series", "step"}),
    ],
)
def test_the_server_accepts_exactly_the_query_parameters_the_sdk_sends(
    sdk: str, operation: str, also_sent: set[str]
) -> None:
    import importlib

    from syvain_metrics.contract import operations
    from syvain_metrics.server import ENDPOINTS

    module, name = sdk.split(".")
    sdk_schema = getattr(importlib.import_module(f"syvain_metrics.contract.schemas.{module}"), name)
    [endpoint] = [e for e in ENDPOINTS if e.operation is getattr(operations, operation)]
    assert _wire_names(sdk_schema) | also_sent == _wire_names(type(endpoint.query))
    assert _wire_names(type(endpoint.query)) == endpoint.operation.query.wire_names
