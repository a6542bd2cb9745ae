"""Dashboard sessions: kept and capped per organization (in memory, and in the database that
``serve --processes`` shares), and a ``Secure`` cookie behind a configured TLS proxy only."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import requests
from werkzeug.test import Client

from syvain_metrics.server import MetricsApp, Store, make_server, stop_server
from syvain_metrics.server.dashboard import access
from syvain_metrics.server.dashboard.access import COOKIE_NAME

KEY_A = "ak_sessions_org_a"
KEY_B = "ak_sessions_org_b"
LIMIT = 5


@pytest.fixture(params=["in memory", "shared database"])
def app(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MetricsApp]:
    """The application of a server with two organizations, keeping ``LIMIT`` sessions each."""
    monkeypatch.setattr(access, "SESSIONS_PER_ORGANIZATION", LIMIT)
    if request.param == "in memory":
        store = Store()
    else:  # as each process of serve --processes keeps them
        store = Store(str(tmp_path / "metrics.sqlite"), shared=True)
    store.use_api_keys([KEY_A, KEY_B])
    yield MetricsApp(store)
    store.close()


def sign_in(app: MetricsApp, key: str) -> Client:
    """A browser that pasted ``key`` on the login page."""
    browser = Client(app)
    reply = browser.post("/dashboard/login", data={"api_key": key})
    assert reply.status_code == 303
    return browser


def signed_in(browser: Client) -> bool:
    return browser.get("/dashboard/").status_code == 200


def test_sign_ins_of_one_organization_end_only_its_own_oldest_sessions(app: MetricsApp) -> None:
    other = sign_in(app, KEY_B)
    first = sign_in(app, KEY_A)
    later = [sign_in(app, KEY_A) for _ in range(LIMIT)]  # one past the limit
    assert signed_in(other)  # another organization's browser stays signed in
    assert not signed_in(first)  # the organization's oldest session made room
    assert all(signed_in(browser) for browser in later)
    # Many more of the same organization still end none of the other's.
    for _ in range(3 * LIMIT):
        sign_in(app, KEY_A)
    assert signed_in(other)
    sign_in(app, KEY_B)
    assert signed_in(other)


def test_login_links_of_one_organization_end_only_its_own_oldest(app: MetricsApp) -> None:
    other = app.dashboard.login_path(KEY_B)
    first = app.dashboard.login_path(KEY_A)
    later = [app.dashboard.login_path(KEY_A) for _ in range(LIMIT)]
    assert Client(app).get(other).status_code == 200
    assert Client(app).get(first).status_code == 401  # the organization's oldest made room
    assert all(Client(app).get(link).status_code == 200 for link in later)


def test_signing_out_ends_only_that_session(app: MetricsApp) -> None:
    kept, leaving = sign_in(app, KEY_A), sign_in(app, KEY_A)
    assert leaving.post("/dashboard/logout").status_code == 303
    assert not signed_in(leaving)
    assert signed_in(kept)


def test_each_port_of_a_host_has_a_session_cookie_of_its_own(app: MetricsApp) -> None:
    # Browsers send a host's cookies to all its ports: two local servers on 127.0.0.1 would
    # otherwise overwrite each other's sign-in.
    first = Client(app)
    reply = first.post(
        "/dashboard/login", data={"api_key": KEY_A}, base_url="http://127.0.0.1:8765"
    )
    assert reply.headers["Set-Cookie"].startswith(f"{COOKIE_NAME}_8765=")
    session_id = reply.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert first.get("/dashboard/", base_url="http://127.0.0.1:8765").status_code == 200
    # The same browser on another port: that cookie is not this port's.
    other = Client(app)
    other.set_cookie(f"{COOKIE_NAME}_8765", session_id, domain="127.0.0.1")
    assert other.get("/dashboard/", base_url="http://127.0.0.1:8766").status_code == 303
    other.post("/dashboard/logout", base_url="http://127.0.0.1:8766")
    assert first.get("/dashboard/", base_url="http://127.0.0.1:8765").status_code == 200


@pytest.mark.parametrize(
    ("asked", "target"),
    [
        ("/dashboard/experiments/e1", "/dashboard/experiments/e1"),
        ("https://evil.example/", "/dashboard/"),
    ],
)
def test_the_login_page_reached_from_another_site_moves_on_by_itself(
    app: MetricsApp, asked: str, target: str
) -> None:
    # A link from a notebook on another site comes without the SameSite=Strict cookie: the
    # page goes on with a navigation of its own, which carries it.
    browser = Client(app)
    reply = browser.get(
        "/dashboard/login", query_string={"next": asked}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert reply.status_code == 200
    text = reply.get_data(as_text=True)
    assert f'<meta http-equiv="refresh" content="0; url={target}">' in text
    assert 'name="api_key"' not in text
    assert "Set-Cookie" not in reply.headers
    # Reached from this site (or typed), it is the login form.
    for fetched_from in ("same-origin", "none"):
        plain = browser.get(
            "/dashboard/login",
            query_string={"next": asked},
            headers={"Sec-Fetch-Site": fetched_from},
        )
        assert 'name="api_key"' in plain.get_data(as_text=True)


# -- behind a reverse proxy --------------------------------------------------------------------

FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "metrics.example",
    "Origin": "https://metrics.example",  # what the browser sends, with the proxy's origin
}


@pytest.fixture
def served() -> Iterator[Callable[..., str]]:
    """Start a real local server (in this process) with the given trusted proxies; its URL."""
    running: list[tuple[Store, object, threading.Thread, MetricsApp]] = []

    def start(*trusted: str) -> str:
        store = Store()
        store.use_api_keys([KEY_A])
        app = MetricsApp(store, trusted_proxies=trusted)
        server = make_server(app, "127.0.0.1", 0, threads=2)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((store, server, thread, app))
        return f"http://127.0.0.1:{server.effective_port}"

    yield start
    for store, server, thread, app in running:
        stop_server(server, thread, app.faults)
        store.close()


def login(url: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{url}/dashboard/login",
        data={"api_key": KEY_A},
        headers=headers,
        allow_redirects=False,
        timeout=30,
    )


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(served: Callable[..., str]) -> None:
    url = served("127.0.0.1")  # this test is the proxy
    reply = login(url, FORWARDED)
    assert reply.status_code == 303
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "Secure" in cookie.split("; ")
    # Without the proxy's headers (a request the proxy did not forward), no Secure flag.
    plain = login(url, {})
    assert plain.status_code == 303
    assert "Secure" not in plain.headers["Set-Cookie"].split("; ")


@pytest.mark.parametrize("trusted", [(), ("10.0.0.1",)], ids=["no proxy", "another proxy"])
def test_forwarded_headers_of_an_untrusted_peer_are_ignored(
    served: Callable[..., str], trusted: tuple[str, ...]
) -> None:
    url = served(*trusted)
    # The claimed https origin is not this server's: the login is refused, no cookie set.
    refused = login(url, FORWARDED)
    assert refused.status_code == 403
    assert "Set-Cookie" not in refused.headers
    claimed = login(url, {"X-Forwarded-Proto": "https"})
    assert claimed.status_code == 303
    assert "Secure" not in claimed.headers["Set-Cookie"].split("; ")


def test_serve_processes_pass_the_trusted_proxy_to_every_worker(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "syvain_metrics.cli", "serve", "--port", "0"),
            *("--db", str(tmp_path / "m.sqlite"), "--processes", "2", "--api-key", KEY_A),
            *("--trusted-proxy", "127.0.0.1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        found = re.search(r"at (http://127\.0\.0\.1:\d+)", process.stdout.readline())
        assert found is not None
        # Connections held open at once go to different workers (a new connection goes to
        # the worker holding the fewest): each believes the proxy.
        with requests.Session() as first, requests.Session() as second:
            for browser in (first, second, first, second):
                reply = browser.post(
                    f"{found.group(1)}/dashboard/login",
                    data={"api_key": KEY_A},
                    headers=FORWARDED,
                    allow_redirects=False,
                    timeout=30,
                )
                assert reply.status_code == 303
                assert "Secure" in reply.headers["Set-Cookie"].split("; ")
    finally:
        process.terminate()
        process.wait(60)


@pytest.mark.parametrize("value", ["proxy.example", "127.0.0.300", ""])
def test_a_trusted_proxy_that_is_not_an_address_is_refused(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syvain_metrics.cli", "serve", "--trusted-proxy", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--trusted-proxy: not an IP address or network" in done.stderr
    assert done.stdout == ""
