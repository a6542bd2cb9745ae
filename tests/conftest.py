"""Shared fixtures: a session pointed at a loopback address that ``responses`` intercepts,
a recorder of retry sleeps, a fake clock, and the contract's wire examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from syvain_metrics.client import session as session_module

HOST = "http://127.0.0.1:8765"
API = f"{HOST}/api/v1"
API_KEY = "ak_test_secret_key_0123456789"
EXAMPLES = Path(__file__).with_name("wire_examples.json")


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, start: float = 1_795_716_950.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session", autouse=True)
def _spool_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Sessions made by tests spool under a temporary directory, never the user's cache.
    Runs they create record no environment unless a test asks for it (tests check exact
    creation bodies; tests/lifecycle/test_context.py checks the capture and its default)."""
    root = tmp_path_factory.mktemp("spool")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYVAIN_METRICS_SPOOL_DIR", str(root))
        patch.setenv("SYVAIN_METRICS_CAPTURE_ENV", "0")
        yield root


def service_setting(name: str) -> bool:
    """An environment variable that points the SDK at a service or spool, which a child
    process of a test gets from the test instead; ``SYVAIN_METRICS_HOME`` stays inherited,
    so that no child writes the user's per-user data file.

    Example:
        >>> service_setting("SYVAIN_METRICS_HOST"), service_setting("SYVAIN_METRICS_HOME")
        (True, False)
    """
    return name.startswith("SYVAIN_METRICS_") and name != "SYVAIN_METRICS_HOME"


@pytest.fixture(autouse=True)
def local_data_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``start_local_server()`` and the examples keep their per-user data file under a
    temporary directory of this test (inherited by the processes it starts: scripts,
    notebook kernels), never in the user's home."""
    home = tmp_path_factory.mktemp("syvain-metrics-home")
    monkeypatch.setenv("SYVAIN_METRICS_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _stop_senders_left_running() -> Iterator[None]:
    """Stop the log() senders a test left running, so none outlives its test (and its
    mocked or stopped server) or holds up the interpreter's exit."""
    yield
    for live in list(session_module._sessions):
        if live.logs.started and not live.closed:
            live.logs.close(timeout=0)


@pytest.fixture
def sleeps() -> list[float]:
    """Every wait the session's retry policy asked for, in order."""
    return []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    """A ``responses`` mock; registered answers need not all be used."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def session(sleeps: list[float], clock: FakeClock) -> Iterator[sm.Session]:
    """A session with a recording sleep and a fake clock; also the default session."""
    created = sm.Session(
        API_KEY, host=HOST, retry=sm.RetryPolicy(sleep=sleeps.append, jitter=0), clock=clock
    )
    sm.set_default_session(created)
    yield created
    sm.set_default_session(None)


@pytest.fixture(scope="session")
def wire_examples() -> dict[str, list[dict[str, Any]]]:
    """The contract's example exchanges, by operation name (the part before any space)."""
    data = json.loads(EXAMPLES.read_text())
    by_name: dict[str, list[dict[str, Any]]] = {}
    for op in data["operations"]:
        by_name.setdefault(op["operation"].split(" ")[0], []).extend(op["exchanges"])
    by_name["_errors"] = data["errors"]
    return by_name


def envelope(data: Any) -> dict[str, Any]:
    return {"data": data, "error": None}


def error_body(message: str, code: str | None = None, **details: str) -> dict[str, Any]:
    parts = ([f"code={code}"] if code else []) + [f"{k}={v}" for k, v in details.items()]
    return {"data": None, "error": {"message": message, "details": "; ".join(parts) or None}}


def folder_wire(
    folder_id: str = "f-1", name: str = "runs", parents: list[str] | None = None
) -> dict[str, Any]:
    parents = parents or []
    return {
        "folder_id": folder_id,
        "org_id": "org-1",
        "name": name,
        "parent_id_path": parents,
        "path_name": name,
    }


def experiment_wire(
    experiment_id: str = "exp-1", slug: str = "run-1", **overrides: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": experiment_id,
        "org_id": "org-1",
        "folder": None,
        "url": f"/dashboard/experiments/{experiment_id}",
        "slug": slug,
        "description": "",
        "metadata": {},
        "status": "created",
        "error_name": None,
        "error_detail": None,
        "created_at_ms": 1_795_716_952_000,
        "updated_at_ms": 1_795_716_952_000,
        "started_at_ms": None,
        "done_at_ms": None,
        "last_heartbeat_at_ms": None,
        "last_event_at_ms": None,
    }
    data.update(overrides)
    return data


def key_wire(
    experiment_id: str = "exp-1", key_id: str = "key-1", expires_at_ms: int = 1_795_720_550_000
) -> dict[str, Any]:
    return {
        "id": key_id,
        "experiment_id": experiment_id,
        "name": "SDK ingestion key",
        "created_at_ms": 1_795_716_950_000,
        "expires_at_ms": expires_at_ms,
        "revoked_at_ms": None,
        "last_used_at_ms": None,
    }


def row_wire(
    event_id: str,
    step: int | None,
    value: float,
    ts: int,
    *,
    name: str = "loss",
    experiment_id: str = "exp-1",
    metadata: str = "{}",
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "org_id": "org-1",
        "experiment_id": experiment_id,
        "experiment_slug": "run-1",
        "experiment_description": None,
        "experiment_metadata_json": None,
        "metric_name": name,
        "metric_value": value,
        "step": None if step is None else float(step),
        "event_metadata_json": metadata,
        "client_timestamp_ms": ts,
        "server_timestamp_ms": ts + 5,
    }
