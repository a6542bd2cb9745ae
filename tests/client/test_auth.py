"""Credentials (contract sections 1 and 7): explicit keys, the CLI's ``auth.json`` files,
the environment, the default host, and ``sm.connect()``'s default session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from tests.conftest import HOST, envelope

PRODUCTION = "https://metrics.syvain.com"
DEVELOPMENT = "https://syvain-metrics-app-dev.syvaintech.workers.dev"
FILE_KEY = "ak_from_file_secret_5a4b3c2d1e"
ENV_KEY = "ak_from_env_secret_0f1e2d3c"


def auth_ok() -> dict[str, Any]:
    return envelope({"auth": {"kind": "api_key"}, "organization": {"id": "org-1", "name": "Local"}})


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty XDG config directory, no SYVAIN_METRICS_* variables, and no default session
    left behind."""
    home = tmp_path / "config"
    home.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("SYVAIN_METRICS_API_KEY", raising=False)
    monkeypatch.delenv("SYVAIN_METRICS_HOST", raising=False)
    sm.set_default_session(None)
    yield home
    sm.set_default_session(None)


def write_auth(home: Path, content: Any, app: str = "syvain-metrics", *, raw: bool = False) -> Path:
    folder = home / app
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "auth.json"
    path.write_text(content if raw else json.dumps(content), encoding="utf-8")
    path.chmod(0o600)  # as a login writes it
    return path


def sent_key(mocked: responses.RequestsMock) -> str:
    value: str = mocked.calls[-1].request.headers["Authorization"]
    return value.removeprefix("Bearer ")


def chain_texts(error: BaseException) -> list[str]:
    texts: list[str] = []
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.extend([str(current), repr(current)])
        current = current.__cause__ or current.__context__
    return texts


# -- explicit keys ---------------------------------------------------------------------------


def test_explicit_key_is_stripped(config_home: Path, mocked: responses.RequestsMock) -> None:
    mocked.get(f"{HOST}/api/v1/auth/status", json=auth_ok())
    with sm.Session("  ak_padded_key \n", host=HOST) as session:
        sm.whoami(session=session)
    assert sent_key(mocked) == "ak_padded_key"


@pytest.mark.parametrize("key", ["", "   ", "\t\n "])
def test_empty_key_is_an_auth_error(
    config_home: Path, mocked: responses.RequestsMock, key: str
) -> None:
    with pytest.raises(sm.MetricsApiAuthError):
        sm.Session(key, host=HOST)
    assert len(mocked.calls) == 0


def test_default_host_is_production(config_home: Path) -> None:
    with sm.Session("ak_x") as session:
        assert session.host == PRODUCTION


def test_explicit_host_is_used(config_home: Path, mocked: responses.RequestsMock) -> None:
    mocked.get("http://127.0.0.1:9999/api/v1/auth/status", json=auth_ok())
    with sm.Session("ak_x", host="http://127.0.0.1:9999") as session:
        assert session.host == "http://127.0.0.1:9999"
        sm.whoami(session=session)
    assert mocked.calls[0].request.url == "http://127.0.0.1:9999/api/v1/auth/status"


# -- "local" and "local-dev" ------------------------------------------------------------------


def test_local_reads_the_cli_file(config_home: Path, mocked: responses.RequestsMock) -> None:
    write_auth(
        config_home,
        {"apiKey": FILE_KEY, "host": HOST, "orgId": "org-42", "loginAt": 1_795_716_950_000},
    )
    mocked.get(f"{HOST}/api/v1/auth/status", json=auth_ok())
    with sm.Session("local") as session:
        assert session.host == HOST
        assert session.org_id == "org-42"
        assert len(mocked.calls) == 0
        sm.whoami(session=session)
        assert FILE_KEY not in repr(session)
    assert sent_key(mocked) == FILE_KEY


def test_local_without_host_uses_production(config_home: Path) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY})
    with sm.Session("local") as session:
        assert session.host == PRODUCTION


def test_local_file_host_with_trailing_slash_is_normalised(config_home: Path) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY, "host": "http://127.0.0.1:8765/"})
    with sm.Session("local") as session:
        assert session.host == "http://127.0.0.1:8765"


def test_local_dev_reads_its_own_file_and_defaults_to_the_dev_host(
    config_home: Path, mocked: responses.RequestsMock
) -> None:
    write_auth(config_home, {"apiKey": "ak_production_file_key", "host": HOST})
    write_auth(config_home, {"apiKey": FILE_KEY}, app="syvain-metrics-dev")
    mocked.get(f"{DEVELOPMENT}/api/v1/auth/status", json=auth_ok())
    with sm.Session("local-dev") as session:
        assert session.host == DEVELOPMENT
        sm.whoami(session=session)
    assert mocked.calls[0].request.url == f"{DEVELOPMENT}/api/v1/auth/status"
    assert sent_key(mocked) == FILE_KEY


def test_local_dev_honours_the_file_host(config_home: Path) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY, "host": HOST}, app="syvain-metrics-dev")
    with sm.Session("local-dev") as session:
        assert session.host == HOST


def test_local_without_xdg_reads_home_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_home: Path
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    write_auth(home / ".config", {"apiKey": FILE_KEY, "host": HOST})
    with sm.Session("local") as session:
        assert session.host == HOST


def test_explicit_host_overrides_the_file_host(
    config_home: Path, mocked: responses.RequestsMock
) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY, "host": "http://127.0.0.1:1111"})
    mocked.get("http://127.0.0.1:2222/api/v1/auth/status", json=auth_ok())
    with sm.Session("local", host="http://127.0.0.1:2222") as session:
        assert session.host == "http://127.0.0.1:2222"
        sm.whoami(session=session)
    assert mocked.calls[0].request.url == "http://127.0.0.1:2222/api/v1/auth/status"
    assert sent_key(mocked) == FILE_KEY


def test_explicit_host_overrides_the_dev_default(config_home: Path) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY}, app="syvain-metrics-dev")
    with sm.Session("local-dev", host="http://127.0.0.1:2222") as session:
        assert session.host == "http://127.0.0.1:2222"


def test_missing_file_names_its_path(config_home: Path, mocked: responses.RequestsMock) -> None:
    with pytest.raises(sm.MetricsApiAuthError) as info:
        sm.Session("local")
    assert str(config_home / "syvain-metrics" / "auth.json") in str(info.value)
    assert len(mocked.calls) == 0


def test_missing_dev_file_names_its_path(config_home: Path) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY})  # the production file does not count
    with pytest.raises(sm.MetricsApiAuthError) as info:
        sm.Session("local-dev")
    assert str(config_home / "syvain-metrics-dev" / "auth.json") in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        f'{{"apiKey": "{FILE_KEY}", ',
        f'{{"apiKey": "{FILE_KEY}"}} trailing',
        "",
        json.dumps([FILE_KEY]),
        json.dumps(FILE_KEY),
        json.dumps(42),
        json.dumps(None),
        json.dumps({"api_key": FILE_KEY, "host": HOST}),
        json.dumps({"apiKey": "", "host": HOST}),
        json.dumps({"apiKey": "   ", "host": HOST}),
        json.dumps({"apiKey": None}),
        json.dumps({"apiKey": 12345}),
        json.dumps({"apiKey": [FILE_KEY]}),
    ],
    ids=[
        "truncated-json",
        "trailing-garbage",
        "empty-file",
        "json-list",
        "json-string",
        "json-number",
        "json-null",
        "no-apiKey",
        "empty-apiKey",
        "blank-apiKey",
        "null-apiKey",
        "number-apiKey",
        "list-apiKey",
    ],
)
@pytest.mark.parametrize("mode", ["local", "local-dev"])
def test_broken_file_is_an_auth_error_naming_the_path(
    config_home: Path, mocked: responses.RequestsMock, mode: str, content: str
) -> None:
    app = "syvain-metrics" if mode == "local" else "syvain-metrics-dev"
    path = write_auth(config_home, content, app=app, raw=True)
    with pytest.raises(sm.MetricsApiAuthError) as info:
        sm.Session(mode)
    assert str(path) in str(info.value)
    for text in chain_texts(info.value):
        assert FILE_KEY not in text
    assert len(mocked.calls) == 0


@pytest.mark.parametrize(
    "host",
    ["ftp://x", "http://user:pw@h", "http://h/path", "http://h?q=1", "http://h#f", "not a url"],
)
def test_bad_host_in_the_file_is_an_auth_error(
    config_home: Path, mocked: responses.RequestsMock, host: str
) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY, "host": host})
    with pytest.raises(sm.MetricsApiAuthError) as info:
        sm.Session("local")
    for text in chain_texts(info.value):
        assert FILE_KEY not in text
    assert len(mocked.calls) == 0


# -- sm.connect() and the environment ------------------------------------------------------------


def test_connect_reads_the_environment(
    config_home: Path, monkeypatch: pytest.MonkeyPatch, mocked: responses.RequestsMock
) -> None:
    monkeypatch.setenv("SYVAIN_METRICS_API_KEY", f"  {ENV_KEY}  ")
    monkeypatch.setenv("SYVAIN_METRICS_HOST", HOST)
    write_auth(config_home, {"apiKey": FILE_KEY, "host": "http://127.0.0.1:1111"})
    mocked.get(f"{HOST}/api/v1/auth/status", json=auth_ok())
    session = sm.connect()
    try:
        assert session.host == HOST
        assert len(mocked.calls) == 0
        sm.whoami()
        assert sent_key(mocked) == ENV_KEY
    finally:
        session.close()


def test_connect_env_key_without_env_host_uses_production(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYVAIN_METRICS_API_KEY", ENV_KEY)
    session = sm.connect()
    try:
        assert session.host == PRODUCTION
    finally:
        session.close()


def test_connect_explicit_host_beats_the_env_host(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYVAIN_METRICS_API_KEY", ENV_KEY)
    monkeypatch.setenv("SYVAIN_METRICS_HOST", "http://127.0.0.1:1111")
    session = sm.connect(host="http://127.0.0.1:2222")
    try:
        assert session.host == "http://127.0.0.1:2222"
    finally:
        session.close()


def test_connect_without_env_falls_back_to_local(
    config_home: Path, mocked: responses.RequestsMock
) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY, "host": HOST})
    mocked.get(f"{HOST}/api/v1/auth/status", json=auth_ok())
    session = sm.connect()
    try:
        assert session.host == HOST
        sm.whoami()
        assert sent_key(mocked) == FILE_KEY
    finally:
        session.close()


def test_connect_with_nothing_configured_names_the_local_path(
    config_home: Path, mocked: responses.RequestsMock
) -> None:
    with pytest.raises(sm.MetricsApiAuthError) as info:
        sm.connect()
    assert str(config_home / "syvain-metrics" / "auth.json") in str(info.value)
    assert len(mocked.calls) == 0
    with pytest.raises(sm.MetricsApiError):
        sm.get_session()  # a failed connect leaves no default session


def test_blank_env_key_falls_back_to_local(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYVAIN_METRICS_API_KEY", "   ")
    with pytest.raises(sm.MetricsApiAuthError) as info:
        sm.connect()
    assert str(config_home / "syvain-metrics" / "auth.json") in str(info.value)


def test_connect_makes_the_default_session(
    config_home: Path, mocked: responses.RequestsMock
) -> None:
    first = sm.connect("ak_first", host=HOST)
    second = None
    try:
        assert sm.get_session() is first
        second = sm.connect("ak_second", host=HOST)
        assert sm.get_session() is second
        mocked.get(f"{HOST}/api/v1/auth/status", json=auth_ok())
        sm.whoami()
        assert sent_key(mocked) == "ak_second"
    finally:
        first.close()
        if second is not None:
            second.close()


def test_connect_accepts_local(config_home: Path) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY, "host": HOST})
    session = sm.connect("local")
    try:
        assert sm.get_session() is session
        assert session.host == HOST
    finally:
        session.close()


def test_constructing_sessions_sends_no_request(
    config_home: Path, monkeypatch: pytest.MonkeyPatch, mocked: responses.RequestsMock
) -> None:
    write_auth(config_home, {"apiKey": FILE_KEY, "host": HOST})
    write_auth(config_home, {"apiKey": FILE_KEY, "host": HOST}, app="syvain-metrics-dev")
    sessions = [
        sm.Session("ak_x", host=HOST),
        sm.Session("local"),
        sm.Session("local-dev"),
        sm.connect("ak_y", host=HOST),
        sm.connect(),
    ]
    for session in sessions:
        session.close()
    assert len(mocked.calls) == 0
