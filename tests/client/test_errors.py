"""The error tree: a class per common failure (against the local server), every error
pickled with its fields, and no chained cause that carries file contents or headers."""

from __future__ import annotations

import json
import os
import pickle
import stat
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.errors import RejectedEvent
from syvain_metrics.resources import paging
from syvain_metrics.testing import LocalServer

# -- pickle ---------------------------------------------------------------------------------

CAUSE = sm.MetricsApiRateLimitError(
    "HTTP 429: slow down",
    status_code=429,
    error_code="rate_limited",
    retryable=True,
    retry_after=2.5,
)
ERRORS: list[sm.MetricsApiError] = [
    sm.MetricsApiError("plain"),
    sm.MetricsApiRequestError(
        "HTTP 500: boom", status_code=500, error_code="internal", retryable=True, retry_after=1.0
    ),
    sm.MetricsApiNotFoundError("HTTP 404: gone", status_code=404, error_code="not_found"),
    sm.MetricsApiPermissionError("HTTP 403: no", status_code=403, error_code="forbidden"),
    sm.MetricsApiConflictError("HTTP 409: taken", status_code=409, error_code="conflict"),
    sm.MetricsApiRequestError(
        "HTTP 422: bad value", status_code=422, error_code="validation_error", field="data[3].value"
    ),
    CAUSE,
    sm.MetricsApiTimeoutError("timed out", retryable=True),
    sm.MetricsApiConnectionError("could not reach", retryable=True),
    sm.MetricsApiTransportError("TypeError: inside the HTTP client"),
    sm.PartialIngestError(
        "stopped",
        stored=1_000,
        pending=[{"client_event_id": "e", "name": "loss", "value": 1.0}],
        cause=CAUSE,
    ),
    sm.FlushError(
        stored=3,
        pending=2,
        rejected=[RejectedEvent({"name": "x"}, "HTTP 400: bad", 400)],
        timed_out=True,
        spool_dir="/tmp/spool",
    ),
    sm.MetricsApiResponseError("broken answer"),
    sm.PagingError("cannot page"),
    sm.MetricsApiAuthError("no key"),
    sm.MetricsValidationError({"data[3].value": ["Must be a number."]}),
    sm.MetricsValidationError("bad"),
]


def _fields(error: BaseException) -> dict[str, Any]:
    return {"type": type(error), "args": error.args, **vars(error)}


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_round_trips_through_pickle_with_its_fields(error: sm.MetricsApiError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert _fields(copy) == _fields(error)
    assert str(copy) == str(error)


def test_the_pickled_errors_cover_every_public_error_class() -> None:
    public = {
        value
        for value in vars(sm).values()
        if isinstance(value, type) and issubclass(value, sm.MetricsApiError)
    }
    assert public <= {type(error) for error in ERRORS}


def _fail_in_a_worker(stored: int) -> None:
    raise sm.PartialIngestError(
        "stopped",
        stored=stored,
        pending=[{"name": "loss", "value": 2.0}],
        cause=sm.MetricsApiRequestError("HTTP 503", status_code=503, retryable=True),
    )


def test_a_partial_ingest_raised_in_a_process_pool_arrives_whole() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_fail_in_a_worker, 7)
        with pytest.raises(sm.PartialIngestError) as caught:
            future.result(timeout=60)
    assert caught.value.stored == 7
    assert caught.value.pending == [{"name": "loss", "value": 2.0}]
    assert caught.value.status_code == 503


# -- the tree -------------------------------------------------------------------------------


def test_the_new_classes_are_request_errors_so_existing_excepts_still_catch_them() -> None:
    for cls in (
        sm.MetricsApiNotFoundError,
        sm.MetricsApiPermissionError,
        sm.MetricsApiConflictError,
        sm.MetricsApiRateLimitError,
        sm.MetricsApiTimeoutError,
        sm.MetricsApiConnectionError,
    ):
        assert issubclass(cls, sm.MetricsApiRequestError)
    assert issubclass(sm.PagingError, sm.MetricsApiError)
    assert paging.PagingError is sm.PagingError  # the old import path keeps working


def test_statuses_from_the_local_server_map_to_their_classes(
    metrics_server: LocalServer,
) -> None:
    with metrics_server.session() as session:
        with pytest.raises(sm.MetricsApiNotFoundError) as missing:
            sm.Experiment.get("no-such-experiment", session=session)
        assert missing.value.status_code == 404
        sm.Experiment.create("taken", session=session)
        with pytest.raises(sm.MetricsApiConflictError) as taken:
            sm.Experiment.create("taken", session=session)
        assert taken.value.status_code == 409
    with (
        sm.Session("ak_not_a_key", host=metrics_server.url, spool_dir=None) as stranger,
        pytest.raises(sm.MetricsApiPermissionError) as refused,
    ):
        sm.whoami(session=stranger)
    assert refused.value.status_code == 401


def test_the_field_an_answer_names_is_an_attribute(metrics_server: LocalServer) -> None:
    with (
        metrics_server.session() as session,
        pytest.raises(sm.MetricsApiRequestError) as refused,
    ):
        sm.Folder.create("runs", parent="no-such-folder", session=session)
    assert refused.value.field == "parent_id"
    copy = pickle.loads(pickle.dumps(refused.value))
    assert copy.field == "parent_id"


def test_a_rate_limit_from_the_local_server_is_its_class(metrics_server: LocalServer) -> None:
    policy = sm.RetryPolicy(attempts=1)
    with metrics_server.session(retry=policy) as session:
        metrics_server.faults.fail_next("create_folder", status=429, retry_after=3)
        with pytest.raises(sm.MetricsApiRateLimitError) as caught:
            sm.Folder.create("busy", session=session)
    assert caught.value.retry_after == 3.0


def test_an_unreachable_host_is_a_connection_error_and_names_no_key() -> None:
    with (
        sm.Session(
            "ak_secret_for_this_test",
            host="http://127.0.0.1:9",
            spool_dir=None,
            retry=sm.RetryPolicy(attempts=1),
        ) as session,
        pytest.raises(sm.MetricsApiConnectionError) as caught,
    ):
        sm.whoami(session=session)
    assert caught.value.status_code is None
    assert caught.value.retryable
    assert caught.value.__cause__ is None
    assert "ak_secret_for_this_test" not in "".join(traceback.format_exception(caught.value))


# -- auth.json --------------------------------------------------------------------------------


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("SYVAIN_METRICS_API_KEY", raising=False)
    monkeypatch.delenv("SYVAIN_METRICS_HOST", raising=False)
    return tmp_path


def _login_file(config_home: Path, text: str, mode: int) -> Path:
    path = config_home / "syvain-metrics" / "auth.json"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_an_auth_file_readable_by_others_warns_with_the_fix(config_home: Path, mode: int) -> None:
    path = _login_file(config_home, json.dumps({"apiKey": "ak_from_file_secret"}), mode)
    with pytest.warns(UserWarning, match="chmod 600") as caught:
        sm.Session("local", spool_dir=None).close()
    assert str(path) in str(caught[0].message)
    assert "ak_from_file_secret" not in str(caught[0].message)


def test_a_private_auth_file_is_used_without_a_word(
    config_home: Path, recwarn: pytest.WarningsRecorder
) -> None:
    _login_file(config_home, json.dumps({"apiKey": "ak_from_file_secret"}), 0o600)
    sm.Session("local", spool_dir=None).close()
    assert [w for w in recwarn if "chmod" in str(w.message)] == []


@pytest.mark.parametrize(
    "text",
    ['{"apiKey": "ak_from_file_secret", oops}', '{"apiKey": "ak_from_file_secret"' + "[" * 5_000],
)
def test_a_broken_auth_file_chains_nothing_that_holds_its_contents(
    config_home: Path, text: str
) -> None:
    _login_file(config_home, text, 0o600)
    with pytest.raises(sm.MetricsApiAuthError, match="not valid JSON") as caught:
        sm.Session("local", spool_dir=None)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None  # a JSONDecodeError holds the whole text
    shown = "".join(traceback.format_exception(caught.value))
    assert "ak_from_file_secret" not in shown


def test_a_key_in_the_auth_file_with_a_line_break_is_refused_unseen(config_home: Path) -> None:
    _login_file(config_home, json.dumps({"apiKey": "ak_line\nbreak_secret"}), 0o600)
    with pytest.raises(sm.MetricsApiAuthError, match="control character") as caught:
        sm.Session("local", spool_dir=None)
    assert "break_secret" not in str(caught.value)


# -- the spool --------------------------------------------------------------------------------


def test_spool_files_are_private_whatever_the_umask(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    old = os.umask(0o000)
    try:
        session = metrics_server.session(spool_dir=tmp_path / "spool")
        exp = sm.Experiment.create("spooled", session=session)
        exp.log("loss", 1.0, step=0)
        session.logs.sender.wait([], timeout=10)  # a mark: the spooler has spooled the event
        spool = Path(session.spool_dir or "")
        files = [p for p in spool.rglob("*") if p.is_file()]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        directory_mode = stat.S_IMODE(spool.stat().st_mode)
        session.close()
    finally:
        os.umask(old)
    assert files
    assert set(modes.values()) == {0o600}, modes
    assert directory_mode == 0o700
