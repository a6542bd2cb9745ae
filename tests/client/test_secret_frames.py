"""No API key or ingestion token in what an error reporter records on any error path: the
local variables of every frame of the traceback (read as ``traceback`` with
``capture_locals=True`` or Sentry do: through containers, by ``repr`` otherwise), the
error's attributes, and every ``__cause__`` / ``__context__`` with their own frames.

Each path is driven against the local server (its fault switches), a raw socket server for
answers no honest server gives, or a broken ``auth.json``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.client.test_transport import RawServer, _answer

TESTS = str(Path(__file__).parents[1])


def _found(value: Any, secrets: list[str], where: str, seen: set[int], out: list[str]) -> None:
    if id(value) in seen or len(seen) > 100_000:
        return
    seen.add(id(value))
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        out.extend(f"{where}: {secret[:6]}..." for secret in secrets if secret in value)
        return
    if isinstance(value, dict):
        for key, item in list(value.items()):
            _found(key, secrets, where, seen, out)
            _found(item, secrets, f"{where}[{key!r}]", seen, out)
        return
    if isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(list(value)):
            _found(item, secrets, f"{where}[{index}]", seen, out)
        return
    try:
        text = repr(value)
    except Exception:
        return
    out.extend(f"{where} (repr): {secret[:6]}..." for secret in secrets if secret in text)


def leaks(error: BaseException, secrets: list[str]) -> list[str]:
    """Where any of ``secrets`` shows in what a reporter records of ``error`` (empty: nowhere).
    The test's own frames are left out: they hold what the test set up."""
    secrets = [s for s in secrets if s]
    assert secrets
    out: list[str] = []
    seen: set[int] = set()
    errors: list[BaseException] = [error]
    done: set[int] = set()
    while errors:
        current = errors.pop()
        if id(current) in done:
            continue
        done.add(id(current))
        name = type(current).__name__
        _found([str(current), repr(current), current.args], secrets, name, seen, out)
        _found(vars(current), secrets, f"{name} attributes", seen, out)
        tb = current.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if not code.co_filename.startswith(TESTS):
                for local, value in tb.tb_frame.f_locals.items():
                    _found(value, secrets, f"{name} in {code.co_name}(): {local}", seen, out)
            tb = tb.tb_next
        errors.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    recorded: traceback.TracebackException | None = traceback.TracebackException(
        type(error), error, error.__traceback__, capture_locals=True
    )
    while recorded is not None:
        for frame in recorded.stack:
            if not frame.filename.startswith(TESTS):
                text = repr(frame.locals)
                out.extend(
                    f"capture_locals in {frame.name}(): {secret[:6]}..."
                    for secret in secrets
                    if secret in text
                )
        out.extend(
            f"capture_locals, message: {secret[:6]}..."
            for secret in secrets
            if secret in "".join(recorded.format_exception_only())
        )
        recorded = recorded.__cause__ or recorded.__context__
    return out


# -- against the local server ------------------------------------------------------------------


@pytest.fixture
def server(metrics_server: LocalServer) -> LocalServer:
    return metrics_server


class Minted:
    """Every ingestion token a session minted (a spy on its token cache)."""

    def __init__(self, session: sm.Session) -> None:
        self.tokens: list[str] = []
        mint = session.tokens._mint

        def spy(experiment_id: str) -> Any:
            token, expires = mint(experiment_id)
            self.tokens.append(token.reveal() if hasattr(token, "reveal") else token)
            return token, expires

        session.tokens._mint = spy


@pytest.fixture
def session(server: LocalServer) -> Iterator[sm.Session]:
    retry = sm.RetryPolicy(attempts=2, sleep=lambda seconds: None)
    created = server.session(retry=retry, spool_dir=None, timeout=0.5)
    yield created
    with contextlib.suppress(sm.MetricsApiError):
        created.close()


Path_ = Callable[[LocalServer, sm.Session], Any]

SERVER_PATHS: dict[str, Path_] = {
    "401": lambda server, session: (
        server.faults.fail_next("auth_status", status=401),
        sm.whoami(session=session),
    ),
    "403 on create": lambda server, session: (
        server.faults.fail_next("create_experiment", status=403),
        sm.Experiment.create("x", session=session),
    ),
    "404": lambda server, session: sm.Experiment.get("nope", session=session),
    "409 taken slug": lambda server, session: (
        sm.Experiment.create("taken", session=session),
        sm.Experiment.create("taken", session=session),
    ),
    "429": lambda server, session: (
        server.faults.fail_next("list_experiments", status=429, times=5),
        sm.Experiment.list(session=session),
    ),
    "500": lambda server, session: (
        server.faults.fail_next("create_folder", status=500, times=5),
        sm.Folder.create("f", session=session),
    ),
    "503 then connection dropped": lambda server, session: (
        server.faults.fail_next("auth_status", status=503),
        server.faults.drop_connection("auth_status", when="before_commit"),
        sm.whoami(session=session),
    ),
    "timeout": lambda server, session: (
        server.faults.delay("auth_status", seconds=3, times=5),
        sm.whoami(session=session),
    ),
    "token minting fails": lambda server, session: (
        exp := sm.Experiment.create("mint", session=session),
        server.faults.fail_next("POST /api/v1/experiments/*/ingestion-keys", status=500, times=5),
        exp.annotate("note"),
    ),
    "token minting refused": lambda server, session: (
        exp := sm.Experiment.create("mint-403", session=session),
        server.faults.fail_next("POST /api/v1/experiments/*/ingestion-keys", status=403, times=5),
        exp.ingest([{"client_event_id": "a", "name": "loss", "value": 1.0, "step": 0}]),
    ),
    "token refused, renewed, refused": lambda server, session: (
        exp := sm.Experiment.create("renew", session=session),
        server.faults.fail_next("ingest_metrics", status=401, times=5),
        exp.ingest([{"client_event_id": "a", "name": "loss", "value": 1.0, "step": 0}]),
    ),
    "ingest 500 with a token": lambda server, session: (
        exp := sm.Experiment.create("ingest-500", session=session),
        exp.ingest([{"client_event_id": "a", "name": "loss", "value": 1.0, "step": 0}]),
        server.faults.fail_next("ingest_metrics", status=500, times=5),
        exp.ingest([{"client_event_id": "b", "name": "loss", "value": 1.0, "step": 1}]),
    ),
    "flush after refused log() events": lambda server, session: (
        exp := sm.Experiment.create("flush", session=session),
        exp.ingest([{"client_event_id": "a", "name": "loss", "value": 1.0, "step": 0}]),
        server.faults.fail_next("ingest_metrics", status=403, times=5),
        exp.log("loss", 2.0, step=1),
        exp.flush(timeout=30),
    ),
}


@pytest.mark.parametrize("path", list(SERVER_PATHS))
def test_no_key_or_token_in_the_frames_of_a_server_error(
    server: LocalServer, session: sm.Session, path: str
) -> None:
    minted = Minted(session)
    with pytest.raises(sm.MetricsApiError) as caught:
        SERVER_PATHS[path](server, session)
    server.faults.wake_all()
    assert leaks(caught.value, [server.api_key, *minted.tokens]) == []


def test_no_key_in_the_frames_when_the_service_cannot_be_reached() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    key = "ak_unreachable_secret_0123"
    retry = sm.RetryPolicy(attempts=2, sleep=lambda seconds: None)
    with sm.Session(key, host=f"http://127.0.0.1:{port}", retry=retry, spool_dir=None) as session:
        with pytest.raises(sm.MetricsApiConnectionError) as caught:
            sm.whoami(session=session)
        assert leaks(caught.value, [key]) == []


def test_no_key_in_the_frames_of_a_failure_below_the_transport(
    server: LocalServer, session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    def urlopen(self: Any, *args: Any, **kwargs: Any) -> Any:
        headers = kwargs.get("headers") or {}
        raise TypeError(f"unexpected keyword argument 'police_officer' for {headers}")

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", urlopen)
    with pytest.raises(sm.MetricsApiError) as caught:
        sm.whoami(session=session)
    assert leaks(caught.value, [server.api_key]) == []


def test_no_key_in_the_frames_of_a_ctrl_c_during_a_call(
    server: LocalServer, session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Interrupted while the request is under way: urllib3's urlopen() frame, above, holds
    # the request's headers (Authorization included) in its locals.
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "_make_request", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        sm.whoami(session=session)
    assert leaks(caught.value, [server.api_key]) == []


# -- answers no honest server gives ---------------------------------------------------------------

KEY = "ak_raw_server_secret_0123"
TOKEN = "ing_raw_server_token_secret_4567"
KEY_WIRE = {
    "id": "k1",
    "experiment_id": "e1",
    "name": "n",
    "created_at_ms": 1,
    "expires_at_ms": "not a number",  # breaks the reply, after the token is in hand
    "revoked_at_ms": None,
}


def _raw_session(url: str) -> sm.Session:
    retry = sm.RetryPolicy(attempts=2, sleep=lambda seconds: None)
    return sm.Session(KEY, host=url, retry=retry, spool_dir=None)


RAW_PATHS: dict[str, bytes] = {
    "not JSON": _answer(200, b"<html>oops</html>"),
    "not an envelope": _answer(200, b"[1, 2]"),
    "the key echoed in an error": _answer(
        401, json.dumps({"data": None, "error": f"bad key {KEY}"}).encode()
    ),
    "a redirect": _answer(302, b"", "Location: http://127.0.0.1:9/\r\n"),
    "a broken mint reply holding a token": _answer(
        200, json.dumps({"data": {"key": KEY_WIRE, "token": TOKEN}, "error": None}).encode()
    ),
}


@pytest.mark.parametrize("path", list(RAW_PATHS))
def test_no_key_or_token_in_the_frames_of_a_broken_answer(path: str) -> None:
    raw = RawServer(lambda conn: conn.sendall(RAW_PATHS[path]))
    try:
        with _raw_session(raw.url) as session:
            experiment = sm.Experiment(
                {
                    "id": "e1",
                    "slug": "s",
                    "name": "n",
                    "status": "running",
                    "folder_id": None,
                    "metadata": {},
                    "tags": [],
                    "created_at_ms": 1,
                    "updated_at_ms": 1,
                },
                session=session,
            )
            call = (
                (lambda: experiment.annotate("note"))
                if "mint" in path
                else (lambda: sm.whoami(session=session))
            )
            with pytest.raises(sm.MetricsApiError) as caught:
                call()
        assert leaks(caught.value, [KEY, TOKEN]) == []
    finally:
        raw.close()


# -- a broken auth.json ---------------------------------------------------------------------------

FILE_KEY = "ak_from_the_file_secret_89"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"apiKey": "' + FILE_KEY + '", oops}', "not valid JSON"),
        ('{"apiKey": "' + FILE_KEY + '"' + "[" * 5_000, "not valid JSON"),
        (json.dumps([FILE_KEY]), "JSON object"),
        (json.dumps({"apiKey": FILE_KEY, "host": "ftp://metrics.example"}), "http or https"),
        (json.dumps({"apiKey": FILE_KEY + "\n"}), None),  # stripped: a good key
        (json.dumps({"apiKey": FILE_KEY + "\u0007x"}), "control character"),
    ],
)
def test_no_key_in_the_frames_or_contexts_of_a_broken_auth_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, match: str | None
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = tmp_path / "syvain-metrics" / "auth.json"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    if match is None:
        sm.Session("local", spool_dir=None).close()
        return
    with pytest.raises(sm.MetricsApiAuthError, match=match) as caught:
        sm.Session("local", spool_dir=None)
    assert leaks(caught.value, [FILE_KEY]) == []


# -- a key from the environment beside a bad setting ------------------------------------------


@pytest.mark.parametrize(
    ("key", "host", "match"),
    [
        ("ak_env_secret_key_0123", "https://metrics.example.com/api", "origin"),
        ("ak_env_secret_key_0123", "ftp://metrics.example.com", "http or https"),
        ("ak_env_secret\u0007key_0123", "", "control character"),
    ],
)
def test_no_key_from_the_environment_in_the_frames_of_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, key: str, host: str, match: str
) -> None:
    monkeypatch.setenv("SYVAIN_METRICS_API_KEY", key)
    monkeypatch.setenv("SYVAIN_METRICS_HOST", host)
    with pytest.raises(sm.MetricsApiAuthError, match=match) as caught:
        sm.Session(spool_dir=None)
    assert leaks(caught.value, [key, key.replace("\u0007", "")[:13]]) == []


# -- a key passed by the user beside a bad setting ------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda key: sm.Session(key, timeout=-1, spool_dir=None), "seconds"),
        (lambda key: sm.Session(key, host="ftp://metrics.example.com"), "http or https"),
        (lambda key: sm.Session(key + "\u0007", spool_dir=None), "control character"),
        (lambda key: sm.connect(key, host="https://metrics.example.com/api"), "origin"),
        (lambda key: sm.connect(key, pool_size=0), "whole number"),
    ],
)
def test_no_key_passed_by_the_user_in_the_frames_of_a_bad_setting(make: Any, match: str) -> None:
    key = "ak_org_passed_secret_0123"
    with pytest.raises((sm.MetricsApiAuthError, sm.MetricsValidationError), match=match) as caught:
        make(key)
    assert leaks(caught.value, [key]) == []
