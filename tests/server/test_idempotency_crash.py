"""A crash between a write and its answer: the retry finds exactly one write.

The local server's write, its ingestion key's use and its idempotency record commit in one
transaction. ``faults.crash`` makes the server "die" after the write (before its record
and the commit) or after the commit (before the answer); the retry with the same
``Idempotency-Key`` runs once or replays, and nothing is stored twice. The last tests
end a real server process at those points (``os._exit``) and start it again on the same
database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import syvain_metrics as sm
from syvain_metrics.server.faults import CRASH_EXIT_STATUS, Faults
from syvain_metrics.testing import LocalServer

API = "/api/v1"
WHEN = ["after_write", "after_commit"]


class Raw:
    """Plain HTTP to a server, with its API key."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.http = requests.Session()

    def post(
        self, path: str, body: dict[str, Any], *, key: str, token: str | None = None
    ) -> requests.Response:
        return self.http.post(
            self.url + API + path,
            json=body,
            headers={"Authorization": f"Bearer {token or self.key}", "Idempotency-Key": key},
            timeout=10,
        )

    def get(self, path: str) -> Any:
        response = self.http.get(
            self.url + API + path, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]


@pytest.fixture
def raw(metrics_server: LocalServer) -> Iterator[Raw]:
    client = Raw(metrics_server.url, metrics_server.api_key)
    yield client
    client.http.close()


def _setup(raw: Raw) -> tuple[str, str]:
    exp = raw.post("/experiments", {"slug": "base"}, key="setup-exp").json()["data"]["experiment"]
    token = raw.post(f"/experiments/{exp['id']}/ingestion-keys", {}, key="-").json()["data"]
    return exp["id"], token["token"]


# operation -> (path, body, uses the ingestion token, how many objects it made)
def _cases(exp_id: str) -> dict[str, tuple[str, dict[str, Any], bool, Callable[[Raw], int]]]:
    return {
        "create_experiment": (
            "/experiments",
            {"slug": "crashed"},
            False,
            lambda r: sum(e["slug"] == "crashed" for e in r.get("/experiments")["experiments"]),
        ),
        "create_folder": (
            "/folders",
            {"name": "crashed"},
            False,
            lambda r: len(r.get("/folders?path=crashed")["folders"]),
        ),
        "create_annotation": (
            f"/experiments/{exp_id}/annotations",
            {"annotation": "checkpoint", "metadata": {}},
            True,
            lambda r: len(r.get(f"/experiments/{exp_id}/annotations")["annotations"]),
        ),
        "ingest_metrics": (
            f"/experiments/{exp_id}/ingest?sync=true",
            {"data": [{"client_event_id": "c1", "name": "loss", "value": 1.0, "step": 0}]},
            True,
            lambda r: len(r.get(f"/experiments/{exp_id}/metrics")["rows"]),
        ),
    }


OPERATIONS = ["create_experiment", "create_folder", "create_annotation", "ingest_metrics"]


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_retry_after_a_crash_finds_exactly_one_write(
    metrics_server: LocalServer, raw: Raw, operation: str, when: str
) -> None:
    exp_id, token = _setup(raw)
    path, body, ingestion, count = _cases(exp_id)[operation]
    metrics_server.faults.crash(operation, when=when)  # type: ignore[arg-type]
    credential = token if ingestion else None
    with pytest.raises(requests.exceptions.RequestException):
        raw.post(path, body, key="one-call", token=credential)
    assert metrics_server.faults.fired == 1
    assert count(raw) == (1 if when == "after_commit" else 0)
    retry = raw.post(path, body, key="one-call", token=credential)
    assert retry.status_code == 200, retry.text  # never 409 slug_exists / folder_exists
    replayed = retry.headers.get("Idempotency-Replayed") == "true"
    assert replayed is (when == "after_commit")
    assert count(raw) == 1
    again = raw.post(path, body, key="one-call", token=credential)
    assert again.headers.get("Idempotency-Replayed") == "true"
    assert again.json() == retry.json()
    assert count(raw) == 1


def test_the_replayed_answer_is_the_one_committed(metrics_server: LocalServer, raw: Raw) -> None:
    metrics_server.faults.crash("create_experiment", when="after_commit")
    with pytest.raises(requests.exceptions.RequestException):
        raw.post("/experiments", {"slug": "crashed"}, key="k")
    [stored] = raw.get("/experiments")["experiments"]
    retry = raw.post("/experiments", {"slug": "crashed"}, key="k").json()["data"]["experiment"]
    assert retry == stored


@pytest.mark.parametrize("when", WHEN)
def test_the_sdk_retries_through_a_crash(metrics_server: LocalServer, when: str) -> None:
    session = metrics_server.session(spool_dir=None, retry=sm.RetryPolicy(sleep=lambda s: None))
    try:
        metrics_server.faults.crash("create_experiment", when=when)  # type: ignore[arg-type]
        exp = sm.Experiment.create("crash-run", session=session)  # no MetricsApiRequestError 409
        metrics_server.faults.crash("create_annotation", when=when)  # type: ignore[arg-type]
        exp.annotate("checkpoint")
        assert metrics_server.faults.fired == 2
        assert [e.id for e in sm.Experiment.list(session=session)] == [exp.id]
        assert [a.text for a in exp.annotations()] == ["checkpoint"]
    finally:
        session.close()


def test_crash_switch_validation() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="when"):
        faults.crash("create_folder", when="later")  # type: ignore[arg-type]
    faults.crash("create_folder", times=2)
    assert faults.pending == 2


# -- a real process, ended at the crash point and started again -------------------------

SERVER = """
import sys
from syvain_metrics.server import MetricsApp, Store, make_server
db, key, operation, when = sys.argv[1:5]
store = Store(db)
store.use_api_keys([key])
app = MetricsApp(store)
if operation != "-":
    app.faults.crash(operation, when=when, exit_process=True)
server = make_server(app, "127.0.0.1", 0, threads=2)
print(f"http://127.0.0.1:{server.effective_port}", flush=True)
server.run()
"""


def _start(db: Path, operation: str = "-", when: str = "-") -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(db), "ak_crash", operation, when],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=10)


@pytest.mark.parametrize("when", WHEN)
def test_a_killed_server_process_replays_or_reruns(tmp_path: Path, when: str) -> None:
    db = tmp_path / "metrics.sqlite"
    process, url = _start(db, "create_annotation", when)
    try:
        first = Raw(url, "ak_crash")
        exp_id, token = _setup(first)
        body = {"annotation": "checkpoint", "metadata": {"step": 7}}
        with pytest.raises(requests.exceptions.RequestException):
            first.post(f"/experiments/{exp_id}/annotations", body, key="one-call", token=token)
        assert process.wait(timeout=10) == CRASH_EXIT_STATUS
    finally:
        _stop(process)
    process, url = _start(db)
    try:
        again = Raw(url, "ak_crash")
        retry = again.post(f"/experiments/{exp_id}/annotations", body, key="one-call", token=token)
        assert retry.status_code == 200, retry.text
        assert (retry.headers.get("Idempotency-Replayed") == "true") is (when == "after_commit")
        annotations = again.get(f"/experiments/{exp_id}/annotations")["annotations"]
        assert [(a["annotation"], a["metadata"]) for a in annotations] == [
            ("checkpoint", {"step": 7})
        ]
        assert json.loads(retry.content)["data"]["annotation"] == annotations[0]
    finally:
        _stop(process)
