"""The local server under hostile input: every answer is below 500 and in the envelope.

Lone surrogates and NUL in every string of every body, JSON nested 1,000 deep in every
body (with and without an ``Idempotency-Key``), deep and non-finite ``metadata_value_json``,
oversized bodies and metadata, bytes that are not HTTP, idle connections holding every
slot; then a bounded hypothesis run of mutated requests against the application.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from syvain_metrics.server import MetricsApp, Store
from syvain_metrics.server.limits import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_METADATA_BYTES
from syvain_metrics.server.runner import connection_limit, make_server, stop_server
from syvain_metrics.testing import LocalServer

API = "/api/v1"
SURROGATE = "\ud800"
NUL = "\x00"


def check_envelope(status: int, body: bytes) -> dict[str, Any]:
    """The answer is no 5xx, and a JSON envelope that fits its status."""
    assert status < 500, body[:300]
    value = json.loads(body)
    assert isinstance(value, dict)
    assert set(value) == {"data", "error"}, value
    if status >= 400:
        assert value["data"] is None
        assert isinstance(value["error"]["message"], str)
        assert value["error"]["message"]
        assert "code=" in value["error"]["details"]
    else:
        assert value["error"] is None
    return value


def error_field(body: bytes) -> str | None:
    details = json.loads(body)["error"]["details"]
    parts = dict(part.strip().split("=", 1) for part in details.split(";") if "=" in part)
    return parts.get("field")


@dataclass
class Target:
    """A server with one folder, one experiment and its ingestion token."""

    url: str
    key: str
    folder_id: str
    experiment_id: str
    token: str
    http: requests.Session

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        credential: str = "api_key",
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        bearer = self.token if credential == "ingestion_key" else self.key
        sent = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
        response = self.http.request(
            method,
            self.url + API + path.format(exp=self.experiment_id, folder=self.folder_id),
            data=body,
            headers={**sent, **(headers or {})},
            timeout=30,
        )
        check_envelope(response.status_code, response.content)
        return response


def _setup(url: str, key: str, http: requests.Session) -> Target:
    auth = {"Authorization": f"Bearer {key}"}
    folder = http.post(f"{url}{API}/folders", json={"name": "base"}, headers=auth, timeout=10)
    exp = http.post(f"{url}{API}/experiments", json={"slug": "base"}, headers=auth, timeout=10)
    experiment_id = exp.json()["data"]["experiment"]["id"]
    token = http.post(
        f"{url}{API}/experiments/{experiment_id}/ingestion-keys", json={}, headers=auth, timeout=10
    ).json()["data"]["token"]
    return Target(
        url, key, folder.json()["data"]["folder"]["folder_id"], experiment_id, token, http
    )


@pytest.fixture
def target(metrics_server: LocalServer) -> Iterator[Target]:
    with requests.Session() as http:
        yield _setup(metrics_server.url, metrics_server.api_key, http)


# Every operation with a body: method, path, credential and a valid body.
WRITES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "create_folder": ("POST", "/folders", "api_key", {"name": "f", "parent_id": "{folder}"}),
    "patch_folder": ("PATCH", "/folders/{folder}", "api_key", {"name": "g"}),
    "create_experiment": (
        "POST",
        "/experiments",
        "api_key",
        {"slug": "s", "description": "d", "metadata": {"k": "v"}, "folder_id": "{folder}"},
    ),
    "update_experiment_status": (
        "POST",
        "/experiments/{exp}",
        "api_key",
        {"status": "error", "error": {"name": "E", "detail": "x"}},
    ),
    "move_experiment": ("PATCH", "/experiments/{exp}", "api_key", {"folder_id": "{folder}"}),
    "ingest_metrics": (
        "POST",
        "/experiments/{exp}/ingest?sync=true",
        "ingestion_key",
        {
            "data": [
                {"client_event_id": "c", "name": "m", "value": 1, "step": 0, "metadata": {"k": "v"}}
            ]
        },
    ),
    "create_ingestion_key": ("POST", "/experiments/{exp}/ingestion-keys", "api_key", {"name": "k"}),
    "create_annotation": (
        "POST",
        "/experiments/{exp}/annotations",
        "ingestion_key",
        {"annotation": "a", "metadata": {"k": "v"}},
    ),
}


def _strings(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """Every string of a body: ``(path, is_key)``."""
    if isinstance(value, str):
        yield path, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), True
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _replaced(body: Any, path: tuple[Any, ...], is_key: bool, text: str) -> Any:
    """A copy of ``body`` with the string (or key) at ``path`` holding ``text``."""
    copy = json.loads(json.dumps(body))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if is_key:
        parent[text + last] = parent.pop(last)
    else:
        parent[last] = parent[last] + text
    return copy


def _field(path: tuple[Any, ...]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


STRING_CASES = [
    pytest.param(name, path, is_key, id=f"{name}:{'key ' if is_key else ''}{_field(path)}")
    for name, (_, _, _, body) in WRITES.items()
    for path, is_key in _strings(body)
]


def _fill(target: Target, body: Any) -> Any:
    text = json.dumps(body).replace("{folder}", target.folder_id)
    return json.loads(text)


@pytest.mark.parametrize(("name", "path", "is_key"), STRING_CASES)
def test_a_lone_surrogate_in_any_string_is_a_400_naming_it(
    target: Target, name: str, path: tuple[Any, ...], is_key: bool
) -> None:
    method, route, credential, body = WRITES[name]
    hostile = _replaced(_fill(target, body), path, is_key, SURROGATE)
    for headers in ({}, {"Idempotency-Key": f"surrogate-{name}"}):
        raw = json.dumps(hostile).encode()  # ASCII: the surrogate travels as its escape
        response = target.send(method, route, body=raw, credential=credential, headers=headers)
        assert response.status_code == 400
        field = error_field(response.content)
        assert field is not None
        assert field.startswith(_field(path[:-1]) if is_key else _field(path))


@pytest.mark.parametrize(("name", "path", "is_key"), STRING_CASES)
def test_nul_in_any_string_is_kept_or_refused_never_a_5xx(
    target: Target, name: str, path: tuple[Any, ...], is_key: bool
) -> None:
    method, route, credential, body = WRITES[name]
    hostile = _replaced(_fill(target, body), path, is_key, NUL)
    response = target.send(method, route, body=json.dumps(hostile).encode(), credential=credential)
    assert response.status_code in (200, 400, 404, 409)


def test_nul_reads_back_as_sent(target: Target) -> None:
    body = {"name": f"a{NUL}b"}
    created = target.send("POST", "/folders", body=json.dumps(body).encode()).json()
    assert created["data"]["folder"]["name"] == f"a{NUL}b"
    metric = {"client_event_id": "n", "name": f"m{NUL}", "value": 1, "step": 0}
    metric["metadata"] = {f"k{NUL}": f"v{NUL}"}
    target.send(
        "POST",
        "/experiments/{exp}/ingest?sync=true",
        body=json.dumps({"data": [metric]}).encode(),
        credential="ingestion_key",
    )
    rows = target.send("GET", "/experiments/{exp}/metrics").json()["data"]["rows"]
    assert [(r["metric_name"], json.loads(r["event_metadata_json"])) for r in rows] == [
        (f"m{NUL}", {f"k{NUL}": f"v{NUL}"})
    ]


DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize("name", list(WRITES))
@pytest.mark.parametrize("where", ["whole body", "a member", "metadata"])
@pytest.mark.parametrize("idempotency_key", [False, True])
def test_json_nested_1000_deep_is_a_400(
    target: Target, name: str, where: str, idempotency_key: bool
) -> None:
    method, route, credential, _ = WRITES[name]
    raw = {
        "whole body": DEEP,
        "a member": '{"name": ' + DEEP + "}",
        "metadata": '{"data": [{"metadata": {"k": ' + DEEP + '}}], "metadata": {}}',
    }[where]
    headers = {"Idempotency-Key": f"deep-{name}-{where}"} if idempotency_key else {}
    response = target.send(method, route, body=raw.encode(), credential=credential, headers=headers)
    assert response.status_code == 400
    assert "nested at most" in response.json()["error"]["message"]


def test_nesting_up_to_the_limit_is_accepted(target: Target) -> None:
    inside = MAX_JSON_DEPTH - 2  # the body object and the metadata object are two levels
    deep = "[" * inside + "]" * inside
    ok = target.send(
        "POST", "/experiments", body=f'{{"slug": "ok", "metadata": {{"k": {deep}}}}}'.encode()
    )
    assert ok.status_code == 200
    deeper = "[" * (inside + 1) + "]" * (inside + 1)
    refused = target.send(
        "POST", "/experiments", body=f'{{"slug": "no", "metadata": {{"k": {deeper}}}}}'.encode()
    )
    assert refused.status_code == 400
    assert error_field(refused.content) == "metadata.k" + "[0]" * inside


NON_FINITE = ["1e400", "-1e400", "NaN", "Infinity", "1" + "0" * 400]


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize("field", ["value", "step", "timestamp_ms", "metadata", "nested metadata"])
def test_non_finite_numbers_in_a_metric_are_a_400(target: Target, number: str, field: str) -> None:
    metric = '{"client_event_id": "c", "name": "m", "value": 1, "step": 0}'
    placed = {
        "value": metric.replace('"value": 1', f'"value": {number}'),
        "step": metric.replace('"step": 0', f'"step": {number}'),
        "timestamp_ms": metric[:-1] + f', "timestamp_ms": {number}}}',
        "metadata": metric[:-1] + f', "metadata": {{"x": {number}}}}}',
        "nested metadata": metric[:-1] + f', "metadata": {{"x": [{{"y": {number}}}]}}}}',
    }[field]
    response = target.send(
        "POST",
        "/experiments/{exp}/ingest",
        body=('{"data": [' + placed + "]}").encode(),
        credential="ingestion_key",
    )
    assert response.status_code == 400
    assert (error_field(response.content) or "").startswith("data[0]")
    rows = target.send("GET", "/experiments/{exp}/metrics").json()["data"]["rows"]
    assert rows == []


@pytest.mark.parametrize("number", ["NaN", "-Infinity", "1e400"])
def test_a_non_finite_number_is_named_where_it_stands(target: Target, number: str) -> None:
    body = f'{{"slug": "s", "metadata": {{"lr": [0.1, {number}]}}}}'.encode()
    response = target.send("POST", "/experiments", body=body)
    assert response.status_code == 400
    assert error_field(response.content) == "metadata.lr[1]"


JSON_FILTERS = [
    pytest.param("[" * 500 + "]" * 500, id="nested 500 deep"),
    pytest.param('{"a":' * 500 + "1" + "}" * 500, id="objects 500 deep"),
    pytest.param("1e400", id="1e400"),
    pytest.param("-1e400", id="-1e400"),
    pytest.param("1" + "0" * 400, id="10**400"),
    pytest.param("NaN", id="NaN"),
    pytest.param('"\\ud800"', id="lone surrogate"),
    pytest.param('{"\\udfff": 1}', id="lone surrogate key"),
    pytest.param("[1,", id="not JSON"),
]


@pytest.mark.parametrize("text", JSON_FILTERS)
def test_hostile_metadata_value_json_is_a_400(target: Target, text: str) -> None:
    listed = target.send(
        "GET",
        "/experiments/{exp}/metrics?metadata_key=k&metadata_value_json=" + quote(text, safe=""),
    )
    assert listed.status_code == 400
    assert error_field(listed.content) == "metadata_value_json"
    series = (
        '{"experiment_id":"' + target.experiment_id + '","metric_name":"m",'
        '"metadata_key":"k","metadata_value_json":' + json.dumps(text) + "}"
    )
    compared = target.send("GET", "/metrics?series=" + quote(series, safe=""))
    assert compared.status_code == 400
    assert (error_field(compared.content) or "").startswith("series")


@pytest.mark.parametrize(
    "series",
    [
        pytest.param("[" * 1000 + "]" * 1000, id="nested 1000 deep"),
        pytest.param('{"experiment_id":"\\ud800","metric_name":"m"}', id="surrogate id"),
        pytest.param('{"experiment_id":"e","metric_name":"m\\udc00"}', id="surrogate name"),
    ],
)
def test_hostile_series_is_a_400(target: Target, series: str) -> None:
    response = target.send("GET", "/metrics?series=" + quote(series, safe=""))
    assert response.status_code == 400
    assert (error_field(response.content) or "").startswith("series")


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("create_experiment", "metadata"),
        ("ingest_metrics", "data[0].metadata"),
        ("create_annotation", "metadata"),
    ],
)
def test_metadata_is_bounded(target: Target, name: str, field: str) -> None:
    method, route, credential, body = WRITES[name]
    body = _fill(target, body)
    holder = body["data"][0] if name == "ingest_metrics" else body
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    holder["metadata"] = {"k": "x" * (MAX_METADATA_BYTES - overhead + 1)}
    too_big = target.send(method, route, body=json.dumps(body).encode(), credential=credential)
    assert too_big.status_code == 400
    assert error_field(too_big.content) == field
    holder["metadata"] = {"k": "x" * (MAX_METADATA_BYTES - overhead)}
    fits = target.send(method, route, body=json.dumps(body).encode(), credential=credential)
    assert fits.status_code == 200


def test_a_multibyte_metadata_is_measured_in_bytes(target: Target) -> None:
    overhead = len('{"k":""}')
    text = "é" * ((MAX_METADATA_BYTES - overhead) // 2 + 1)  # fits in characters, not bytes
    body = {"slug": "wide", "metadata": {"k": text}}
    response = target.send("POST", "/experiments", body=json.dumps(body).encode())
    assert response.status_code == 400
    assert error_field(response.content) == "metadata"


@pytest.mark.parametrize("name", list(WRITES))
def test_a_body_past_the_limit_is_a_413(target: Target, name: str) -> None:
    method, route, credential, _ = WRITES[name]
    raw = b'{"name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = target.send(method, route, body=raw, credential=credential)
    assert response.status_code == 413
    assert response.json()["error"]["details"] == "code=payload_too_large"


def test_a_body_without_content_length_is_read_no_further_than_the_limit(
    target: Target,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = target.http.post(
        target.url + API + "/folders",
        data=chunks(),  # chunked: no Content-Length
        headers={"Authorization": f"Bearer {target.key}"},
        timeout=30,
    )
    assert check_envelope(response.status_code, response.content)
    assert response.status_code == 413
    assert target.send("GET", "/folders").json()["data"]["folders"][0]["name"] == "base"


def test_a_huge_declared_body_is_refused_at_its_headers(target: Target) -> None:
    host, port = target.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /api/v1/folders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
            b"Content-Length: 100000000000\r\n\r\n{"
        )
        status, body = _read_answer(raw)
    assert status == 413
    check_envelope(status, body)


def test_gzip_bodies_are_not_inflated(target: Target) -> None:
    import gzip

    bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]")  # 10 MB inflated, 10 KB sent
    response = target.send("POST", "/folders", body=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 415


def test_a_long_idempotency_key_is_a_400(target: Target) -> None:
    body = json.dumps({"name": "f"}).encode()
    response = target.send("POST", "/folders", body=body, headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 400
    assert error_field(response.content) == "Idempotency-Key"
    assert target.send("POST", "/folders", body=body, headers={"Idempotency-Key": "k" * 255})


def _read_answer(raw: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = raw.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = raw.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="not HTTP"),
        pytest.param(
            b"POST /api/v1/folders HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
            id="bad Content-Length",
        ),
        pytest.param(
            b"GET /api/v1/folders HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 300_000 + b"\r\n\r\n",
            id="headers too large",
        ),
        pytest.param(
            b"POST /api/v1/folders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            id="bad chunk",
        ),
    ],
)
def test_what_waitress_refuses_is_answered_in_the_envelope(
    target: Target, request_bytes: bytes
) -> None:
    host, port = target.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with contextlib.suppress(OSError):  # the server may stop reading once it has enough
            raw.sendall(request_bytes)
        status, body = _read_answer(raw)
    assert 400 <= status < 500
    check_envelope(status, body)


def test_idle_connections_do_not_starve_live_ones() -> None:
    # A small server: 8 connections at most, idle ones closed after 1 s.
    store = Store()
    [key] = store.use_api_keys(["ak_idle"])
    app = MetricsApp(store)
    server = make_server(app, idle_timeout=1, connections=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    idle: list[socket.socket] = []
    try:
        for _ in range(20):  # more than the limit: half-open requests that never end
            conn = socket.create_connection(("127.0.0.1", int(server.effective_port)))
            conn.sendall(b"GET /api/v1/auth/status HTTP/1.1\r\nHost: x\r\n")
            idle.append(conn)
        started = time.monotonic()
        response = requests.get(
            url + API + "/auth/status", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert response.status_code == 200
        # Served once the idle ones were closed: the timeout plus cleanup passes, with margin.
        assert time.monotonic() - started < 15
    finally:
        for conn in idle:
            conn.close()
        stop_server(server, thread, app.faults)
        store.close()


def test_many_idle_connections_leave_room_for_live_ones(target: Target) -> None:
    host, port = target.url.removeprefix("http://").rsplit(":", 1)
    count = min(150, connection_limit() - 16)  # well past waitress' default of 100 here
    idle = [socket.create_connection((host, int(port))) for _ in range(count)]
    try:
        for conn in idle:
            conn.sendall(b"GET /api/v1/auth/status HTTP/1.1\r\n")
        started = time.monotonic()
        assert target.send("GET", "/auth/status").status_code == 200
        assert time.monotonic() - started < 5  # not waiting for the idle ones to go
    finally:
        for conn in idle:
            conn.close()


# -- a bounded hypothesis run against the application ---------------------------------

_CHARACTERS = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.just(NUL),
)
_TEXT = st.text(_CHARACTERS, max_size=12)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@dataclass
class Fuzzed:
    client: Client
    key: str
    token: str
    experiment_id: str
    folder_id: str


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    logging.getLogger("syvain_metrics.server").disabled = True
    store = Store()
    [key] = store.use_api_keys(["ak_fuzz"])
    client = Client(MetricsApp(store))
    auth = {"Authorization": f"Bearer {key}"}
    exp = client.post(f"{API}/experiments", json={"slug": "fuzz"}, headers=auth).json
    experiment_id = exp["data"]["experiment"]["id"]
    folder = client.post(f"{API}/folders", json={"name": "fuzz"}, headers=auth).json
    token = client.post(
        f"{API}/experiments/{experiment_id}/ingestion-keys", json={}, headers=auth
    ).json["data"]["token"]
    yield Fuzzed(client, key, token, experiment_id, folder["data"]["folder"]["folder_id"])
    logging.getLogger("syvain_metrics.server").disabled = False
    store.close()


_HOSTILE_TEXT = st.text(
    st.sampled_from([SURROGATE, "\udfff", NUL, "\u2028", "\ufeff", "é"]), min_size=1, max_size=3
)
_HOSTILE_NUMBER = st.sampled_from([10**400, -(10**400), 2**64, float("inf"), float("nan"), -0.0])


def _mutate(body: Any, draw: st.DrawFn) -> Any:
    """One hostile change to ``body``: a place replaced by an arbitrary JSON value, hostile
    characters added to a string, a number beyond a double, a value nested deep, or a new
    member."""
    places: list[tuple[Any, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            places.extend((value, key) for key in value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            places.extend((value, index) for index in range(len(value)))
            for item in value:
                walk(item)

    walk(body)
    container, key = places[draw(st.integers(0, len(places) - 1))]
    kind = draw(st.sampled_from(["replace", "characters", "number", "nest", "member"]))
    old = container[key]
    if kind == "characters" and isinstance(old, str):
        container[key] = old + draw(_HOSTILE_TEXT)
    elif kind == "number":
        container[key] = draw(_HOSTILE_NUMBER)
    elif kind == "nest":
        depth = draw(st.integers(1, 600))
        for _ in range(depth):
            old = [old] if draw(st.booleans()) else {"k": old}
        container[key] = old
    elif kind == "member" and isinstance(container, dict):
        container[draw(_TEXT)] = draw(_JSON)
    else:
        container[key] = draw(_JSON)
    return body


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, str, str, bytes | None, dict[str, str]]:
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(st.sampled_from(["k1", "k2", "k3"]))
    if draw(st.integers(0, 3)) == 0:  # a read with hostile query values
        path = draw(
            st.sampled_from(
                [
                    "/experiments/{exp}/metrics",
                    "/metrics",
                    "/experiments",
                    "/experiments/{exp}/catalog/m",
                    "/experiments/{exp}/annotations",
                    "/folders",
                ]
            )
        )
        name = draw(
            st.sampled_from(
                [
                    "metadata_key",
                    "metadata_value",
                    "metadata_value_json",
                    "series",
                    "limit",
                    "step",
                    "from",
                    "sort_by",
                    "key",
                    "path",
                    "search",
                    "status",
                ]
            )
        )
        value = draw(st.one_of(_TEXT, _JSON.map(lambda v: json.dumps(v))))
        encoded = quote(value.encode("utf-8", "surrogatepass"), safe="")
        return "GET", f"{path}?metadata_key=k&{name}={encoded}", "api_key", None, headers
    name = draw(st.sampled_from(list(WRITES)))
    method, route, credential, body = WRITES[name]
    mutated = _mutate(json.loads(json.dumps(body)), draw)
    try:
        raw = json.dumps(mutated).encode()  # ASCII, NaN as NaN, surrogates escaped
    except RecursionError:  # nested past what json.dumps itself can write
        raw = json.dumps(body).encode()
    return method, route, credential, raw, headers


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=hostile_requests())
def test_fuzzed_requests_get_no_5xx_and_an_envelope(
    fuzzed: Fuzzed, request: tuple[str, str, str, bytes | None, dict[str, str]]
) -> None:
    method, route, credential, raw, headers = request
    bearer = fuzzed.token if credential == "ingestion_key" else fuzzed.key
    path = API + route.format(exp=fuzzed.experiment_id, folder=fuzzed.folder_id)
    response = fuzzed.client.open(
        path,
        method=method,
        data=raw,
        headers={
            "Authorization": f"Bearer {bearer}",
            "Content-Type": "application/json",
            **headers,
        },
    )
    check_envelope(response.status_code, response.get_data())


def test_only_a_few_large_bodies_are_handled_at_once(
    metrics_server: LocalServer, target: Target
) -> None:
    from syvain_metrics.server.limits import LARGE_BODIES_AT_ONCE, LARGE_BODY_BYTES

    faults = metrics_server.faults
    faults.delay("create_folder", seconds=30, times=LARGE_BODIES_AT_ONCE + 1)
    padding = " " * (LARGE_BODY_BYTES + 1)  # whitespace: a valid body, and a large one
    answers: list[int] = []

    def create(index: int) -> None:
        body = f'{{"name": "large-{index}"{padding}}}'.encode()
        with requests.Session() as http:
            response = http.post(
                target.url + API + "/folders",
                data=body,
                headers={"Authorization": f"Bearer {target.key}"},
                timeout=60,
            )
        answers.append(response.status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(LARGE_BODIES_AT_ONCE + 1)]
    for thread in threads:
        thread.start()
    assert faults.wait_fired(LARGE_BODIES_AT_ONCE, timeout=20)
    time.sleep(0.5)  # room for one more to start, were it allowed to
    assert faults.fired == LARGE_BODIES_AT_ONCE
    faults.wake_all()  # the delayed ones answer; the last one gets its turn
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [200] * (LARGE_BODIES_AT_ONCE + 1)
    names = {f["name"] for f in target.send("GET", "/folders").json()["data"]["folders"]}
    assert {f"large-{i}" for i in range(LARGE_BODIES_AT_ONCE + 1)} <= names


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**320), max_value=10**320),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0xDFFF), max_size=6),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["metadata", "a", "\ud800", "b"]), inner, max_size=3),
    ),
    max_leaves=40,
)


def _nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = {"metadata": value} if levels % 2 else [value]
    return value


@settings(max_examples=400, deadline=None, derandomize=True)
@given(value=_VALUES, levels=st.integers(min_value=0, max_value=MAX_JSON_DEPTH + 2))
def test_the_quick_input_check_refuses_what_the_full_pass_refuses(value: Any, levels: int) -> None:
    # parse_json skips the full pass for text with no suspect escape or number: it must
    # still refuse exactly what check_json refuses, naming the same place.
    from syvain_metrics.server.inputs import BadJsonError, check_json, parse_json

    value = _nested(value, levels)
    text = json.dumps(value)  # NaN, Infinity and 1e400-sized integers as Python writes them
    try:
        check_json(json.loads(text, parse_constant=float))
        expected = None
    except (BadJsonError, RecursionError) as error:
        expected = str(error) if isinstance(error, BadJsonError) else "deep"
    try:
        parse_json(text)
        got = None
    except BadJsonError as error:
        got = str(error)
    if expected == "deep":
        assert got is not None
    else:
        assert got == expected
