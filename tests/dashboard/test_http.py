"""The dashboard over HTTP (no browser): signing in, what every answer carries, what it
refuses, chart data, and the pages' escaping. The browser side is test_browser.py."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import requests
from werkzeug.test import Client

import syvain_metrics as sm
from syvain_metrics.server import wire
from syvain_metrics.server.app import MetricsApp
from syvain_metrics.server.dashboard.access import COOKIE_NAME
from syvain_metrics.server.dashboard.charts import chart_data
from syvain_metrics.server.store import Store
from syvain_metrics.testing import LocalServer

API_KEY = "ak_dashboard_test"


class Site:
    """A server application, one organization's experiment with metrics, and a client."""

    def __init__(self) -> None:
        self.store = Store()
        [self.key] = self.store.use_api_keys([API_KEY])
        self.app = MetricsApp(self.store)
        self.org = self.store.authenticate(self.key).org_id
        made = self.store.create_experiment(self.org, {"slug": "run-1", "metadata": {"lr": 0.1}})
        self.exp = wire.experiment(made, "http://localhost")
        self.client = Client(self.app)

    def ingest(self, experiment_id: str, rows: list[dict[str, Any]]) -> None:
        for start in range(0, len(rows), 1000):
            self.store.ingest(self.org, experiment_id, rows[start : start + 1000])

    def sign_in(self, client: Client | None = None) -> Client:
        client = client or self.client
        reply = client.get(self.app.dashboard.login_path(self.key))
        assert reply.status_code == 200
        return client

    def page(self, path: str) -> str:
        reply = self.client.get(path)
        assert reply.status_code == 200, reply.get_data(as_text=True)
        return reply.get_data(as_text=True)


@pytest.fixture
def site() -> Site:
    return Site()


def points(n: int, name: str = "loss", **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "client_event_id": f"{name}{extra}-{i}",
            "name": name,
            "value": float(i),
            "step": i,
            **extra,
        }
        for i in range(n)
    ]


# -- signing in -------------------------------------------------------------------------------


def test_pages_need_a_signed_in_browser(site: Site) -> None:
    path = f"/dashboard/experiments/{site.exp['id']}"
    reply = site.client.get(path)
    assert reply.status_code == 303
    assert reply.headers["Location"] == f"/dashboard/login?next={path}"
    data = site.client.get(f"/dashboard/data/chart?experiments={site.exp['id']}&metric=loss")
    assert data.status_code == 401
    assert data.json == {"error": "Sign in first."}


def test_a_login_link_sets_a_strict_http_only_cookie_and_works_once(site: Site) -> None:
    link = site.app.dashboard.login_path(site.key, site.exp["url"])
    reply = site.client.get(link)
    assert reply.status_code == 200
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/dashboard"):
        assert flag in cookie
    assert site.key not in cookie
    # The page moves on by itself (a same-site navigation), to the page the link names.
    target = f"/dashboard/experiments/{site.exp['id']}"
    assert f'<meta http-equiv="refresh" content="0; url={target}">' in reply.get_data(as_text=True)
    assert site.client.get(target).status_code == 200
    second = Client(site.app).get(link)
    assert second.status_code == 401
    assert "already used" in second.get_data(as_text=True)
    assert "Set-Cookie" not in second.headers


def test_pasting_an_api_key_signs_in_and_a_wrong_one_does_not(site: Site) -> None:
    reply = site.client.post(
        "/dashboard/login", data={"api_key": "ak_wrong", "next": "/dashboard/"}
    )
    assert reply.status_code == 401
    assert "does not accept that API key" in reply.get_data(as_text=True)
    assert "ak_wrong" not in reply.get_data(as_text=True)
    assert "Set-Cookie" not in reply.headers
    target = f"/dashboard/experiments/{site.exp['id']}"
    reply = site.client.post("/dashboard/login", data={"api_key": f" {site.key} ", "next": target})
    assert reply.status_code == 303
    assert reply.headers["Location"] == target
    assert site.client.get(target).status_code == 200


def test_an_ingestion_token_does_not_sign_in(site: Site) -> None:
    _, token = site.store.create_ingestion_key(site.org, site.exp["id"], "k", None)
    reply = site.client.post("/dashboard/login", data={"api_key": token})
    assert reply.status_code == 401
    with pytest.raises(ValueError, match="Not an API key"):
        site.app.dashboard.login_path(token)


def test_a_login_from_another_origin_is_refused(site: Site) -> None:
    reply = site.client.post(
        "/dashboard/login",
        data={"api_key": site.key},
        headers={"Origin": "http://evil.example"},
    )
    assert reply.status_code == 403
    assert "Set-Cookie" not in reply.headers


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/dashboard//evil.example",
        "/api/v1/folders",
        "/dashboard/../api",
    ],
)
def test_login_never_sends_the_browser_elsewhere(site: Site, target: str) -> None:
    reply = site.client.post("/dashboard/login", data={"api_key": site.key, "next": target})
    assert reply.headers["Location"] == "/dashboard/"


def test_signing_out_forgets_the_session(site: Site) -> None:
    site.sign_in()
    assert site.client.get("/dashboard/").status_code == 200
    reply = site.client.post("/dashboard/logout")
    assert reply.status_code == 303
    assert site.client.get("/dashboard/").status_code == 303


def test_a_login_form_too_large_is_refused(site: Site) -> None:
    reply = site.client.post("/dashboard/login", data={"api_key": "x" * 100_000})
    assert reply.status_code == 413


# -- every answer -------------------------------------------------------------------------------


def test_every_answer_carries_the_content_security_policy(site: Site) -> None:
    site.sign_in()
    paths = [
        "/dashboard/",
        f"/dashboard/experiments/{site.exp['id']}",
        f"/dashboard/compare?experiments={site.exp['id']}",
        f"/dashboard/data/chart?experiments={site.exp['id']}&metric=loss",
        "/dashboard/static/dashboard.js",
        "/dashboard/login",
        "/dashboard/nothing-here",
    ]
    for path in paths:
        reply = site.client.get(path)
        csp = reply.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp, path
        assert "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp, path
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script_or_style(site: Site) -> None:
    site.sign_in()
    site.ingest(site.exp["id"], points(10))
    for path in ("/dashboard/", f"/dashboard/experiments/{site.exp['id']}", "/dashboard/login"):
        text = site.page(path)
        scripts = re.findall(r"<script[^>]*>(.*?)</script>", text, re.S)
        assert scripts, path
        assert all(script == "" for script in scripts), path  # the package's own files, by src
        assert " style=" not in text
        assert "<style" not in text
        assert "http://" not in text.replace("http://www.w3.org", "")  # no other origin


def test_the_dashboard_only_reads(site: Site) -> None:
    site.sign_in()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/dashboard/", f"/dashboard/experiments/{site.exp['id']}"):
            assert site.client.open(path, method=method).status_code == 405


def test_static_files_are_the_packages_own(site: Site) -> None:
    js = site.client.get("/dashboard/static/dashboard.js")
    assert js.status_code == 200
    assert js.headers["Content-Type"].startswith("text/javascript")
    assert "textContent" in js.get_data(as_text=True)
    assert "innerHTML" not in js.get_data(as_text=True)
    assert site.client.get("/dashboard/static/../web.py").status_code == 404
    assert site.client.get("/dashboard/static/templates/base.html").status_code == 404


def test_the_api_is_unchanged_beside_the_dashboard(site: Site) -> None:
    reply = site.client.get("/api/v1/auth/status", headers={"Authorization": f"Bearer {site.key}"})
    assert reply.status_code == 200
    site.sign_in()
    # A dashboard cookie is no API credential.
    assert site.client.get("/api/v1/experiments").status_code == 401


# -- pages ----------------------------------------------------------------------------------------


def test_every_user_string_is_escaped(site: Site) -> None:
    markup = '<img src=x onerror="alert(1)">'
    folder = site.store.create_folder(site.org, f"f{markup}", None)
    exp = site.store.create_experiment(
        site.org,
        {
            "slug": f"s{markup}",
            "description": f"d{markup}",
            "metadata": {f"k{markup}": f"v{markup}"},
            "folder_id": folder.id,
        },
    )
    site.store.create_annotation(
        site.org, exp.id, {"annotation": f"a{markup}", "metadata": {"m": markup}}
    )
    site.ingest(exp.id, points(3, metadata={"split": markup}))
    site.ingest(exp.id, [{"client_event_id": "n", "name": f"n{markup}", "value": 1.0}])
    site.store.update_status(
        site.org, exp.id, {"status": "error", "error": {"name": markup, "detail": markup}}
    )
    site.sign_in()
    for path in (
        "/dashboard/",
        f"/dashboard/?folder={folder.id}",
        f"/dashboard/experiments/{exp.id}",
    ):
        text = site.page(path)
        assert "<img" not in text, path
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in text, path
    # The compare page hands the runs to its script as JSON, where no < or > survives.
    text = site.page(f"/dashboard/compare?experiments={exp.id}")
    assert "<img" not in text
    assert 's\\u003cimg src=x onerror=\\"alert(1)\\"\\u003e' in text
    chart = site.client.get(f"/dashboard/data/chart?experiments={exp.id}&metric=loss")
    assert chart.json["series"][0]["label"] == f"split={markup}"  # JSON, drawn as text


def test_another_organizations_ids_are_not_found(site: Site) -> None:
    other_key = site.store.add_api_key()
    other_org = site.store.authenticate(other_key).org_id
    hidden = site.store.create_experiment(other_org, {"slug": "secret-run"})
    folder = site.store.create_folder(other_org, "secret-folder", None)
    site.ingest(site.exp["id"], points(3))
    site.sign_in()
    for path in (
        f"/dashboard/experiments/{hidden.id}",
        f"/dashboard/?folder={folder.id}",
        f"/dashboard/compare?experiments={site.exp['id']}&experiments={hidden.id}",
        f"/dashboard/data/chart?experiments={hidden.id}&metric=loss",
        f"/dashboard/data/chart?experiments={site.exp['id']},{hidden.id}&metric=loss",
    ):
        reply = site.client.get(path)
        assert reply.status_code == 404, path
        assert "secret" not in reply.get_data(as_text=True)
    assert "secret" not in site.page("/dashboard/")


def test_the_list_filters_by_folder_status_and_text(site: Site) -> None:
    folder = site.store.create_folder(site.org, "vision", None)
    child = site.store.create_folder(site.org, "resnet", folder.id)
    for slug, status, where in (
        ("cat-detector", "done", folder.id),
        ("dog-detector", "running", folder.id),
        ("deep-cat", "done", child.id),
    ):
        exp = site.store.create_experiment(site.org, {"slug": slug, "folder_id": where})
        site.store.update_status(site.org, exp.id, {"status": status})
    site.sign_in()

    def slugs(query: str) -> list[str]:
        return re.findall(r'<td class="slug"><a href="[^"]+">([^<]+)</a>', site.page(query))

    assert slugs("/dashboard/") == ["deep-cat", "dog-detector", "cat-detector", "run-1"]
    assert slugs(f"/dashboard/?folder={folder.id}") == ["dog-detector", "cat-detector"]
    assert slugs(f"/dashboard/?folder={folder.id}&status=done") == ["cat-detector"]
    assert slugs("/dashboard/?q=CAT") == ["deep-cat", "cat-detector"]
    assert slugs("/dashboard/?status=done&q=deep") == ["deep-cat"]
    tree = site.page("/dashboard/")
    assert tree.index(">vision</a>") < tree.index(">resnet</a>")  # the child under its parent
    assert re.search(r'<th scope="col" class="sortable meta-col"[^>]*><a [^>]*>lr</a>', tree)


def test_the_experiment_page_shows_the_run_and_never_a_token(site: Site) -> None:
    key, token = site.store.create_ingestion_key(site.org, site.exp["id"], "trainer", None)
    site.store.create_annotation(site.org, site.exp["id"], {"annotation": "ckpt saved"})
    site.ingest(site.exp["id"], points(5) + points(5, "acc"))
    site.store.update_status(
        site.org, site.exp["id"], {"status": "error", "error": {"name": "OOM", "detail": "x"}}
    )
    site.sign_in()
    text = site.page(f"/dashboard/experiments/{site.exp['id']}")
    assert token not in text
    assert key.id in text
    assert ">trainer<" in text
    assert "ckpt saved" in text
    assert "<strong>OOM</strong>" in text
    assert re.findall(r'data-metric="([^"]+)"', text) == ["acc", "loss"]


def test_compare_lists_every_metric_with_how_many_runs_have_it(site: Site) -> None:
    other = site.store.create_experiment(site.org, {"slug": "run-2"})
    site.ingest(site.exp["id"], points(3, "acc") + points(3))
    site.ingest(other.id, points(3))
    site.sign_in()
    text = site.page(f"/dashboard/compare?experiments={site.exp['id']},{other.id}")
    assert '{"name":"acc","runs":1},{"name":"loss","runs":2}' in text
    assert site.client.get("/dashboard/compare").status_code == 400


# -- chart data ----------------------------------------------------------------------------------


def test_a_small_series_is_sent_point_by_point(site: Site) -> None:
    site.ingest(site.exp["id"], points(100, metadata={"split": "train"}))
    site.sign_in()
    reply = site.client.get(
        f"/dashboard/data/chart?experiments={site.exp['id']}&metric=loss&width=800"
    )
    data = reply.json
    assert (data["points"], data["drawn"], data["x_range"]) == (100, 100, [0, 99])
    [series] = data["series"]
    assert series["label"] == "split=train"
    assert series["n"] == [1] * 100
    assert series["x0"] == list(range(100))
    assert series["lo"] == series["hi"] == [float(i) for i in range(100)]


def test_a_point_on_its_own_is_sent_exactly(site: Site) -> None:
    values = [9.990878206452569e75, 8.392670011577009e-298, 0.1, -1 / 3, 5e-324]
    site.ingest(
        site.exp["id"],
        [
            {"client_event_id": str(i), "name": "loss", "value": v, "step": i * 10}
            for i, v in enumerate(values)
        ],
    )
    [series] = chart_data(site.store, site.org, [site.exp["id"]], "loss", width=100)["series"]
    assert series["n"] == [1] * 5
    assert series["lo"] == series["hi"] == values


def test_a_large_series_keeps_every_extreme(site: Site) -> None:
    rows = [
        {"client_event_id": str(i), "name": "loss", "value": float((i * 7919) % 1000), "step": i}
        for i in range(50_000)
    ]
    rows[12_345]["value"] = -5.0  # a spike a prefix or a sample could miss
    rows[40_000]["value"] = 5000.0
    site.ingest(site.exp["id"], rows)
    data = chart_data(site.store, site.org, [site.exp["id"]], "loss", width=200)
    [series] = data["series"]
    assert data["points"] == series["points"] == 50_000
    assert sum(series["n"]) == 50_000
    assert len(series["n"]) == 200
    assert data["drawn"] == 400
    assert min(series["lo"]) == -5.0
    assert max(series["hi"]) == 5000.0
    spike = next(i for i, lo in enumerate(series["lo"]) if lo == -5.0)
    assert series["x0"][spike] <= 12_345 <= series["x1"][spike]
    assert all(a <= b for a, b in zip(series["x1"], series["x0"][1:], strict=False))


def test_series_split_by_metadata_and_points_without_a_step_are_counted(site: Site) -> None:
    site.ingest(
        site.exp["id"],
        points(10, metadata={"split": "train", "seed": 1})
        + [
            {
                **p,
                "metadata": {"seed": 1, "split": "train"},
                "client_event_id": f"b{i}",
                "step": 10 + i,
            }
            for i, p in enumerate(points(5))
        ]
        + points(4, metadata={"split": "valid"})
        + [{"client_event_id": "nostep", "name": "loss", "value": 1.0}],
    )
    by_step = chart_data(site.store, site.org, [site.exp["id"]], "loss", width=800)
    labels = {s["label"]: s for s in by_step["series"]}
    assert sorted(labels) == ["(no metadata)", "seed=1 split=train", "split=valid"]
    assert labels["seed=1 split=train"]["points"] == 15  # the same metadata in any key order
    assert labels["(no metadata)"]["unplaced"] == 1
    assert by_step["points"] == 20
    by_time = chart_data(site.store, site.org, [site.exp["id"]], "loss", x="time", width=800)
    assert by_time["points"] == 20
    assert all(s["unplaced"] == 0 for s in by_time["series"])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("metric=loss", "Choose at least one experiment"),
        ("experiments={id}", "Name the metric"),
        ("experiments={id}&metric=loss&x=seq", "x is 'step' or 'time'"),
        ("experiments={id}&metric=loss&width=wide", "width is a number"),
    ],
)
def test_chart_data_refuses_bad_queries(site: Site, query: str, message: str) -> None:
    site.sign_in()
    reply = site.client.get("/dashboard/data/chart?" + query.format(id=site.exp["id"]))
    assert reply.status_code == 400
    assert message in reply.json["error"]


def test_a_compared_series_is_labelled_with_its_run(site: Site) -> None:
    other = site.store.create_experiment(site.org, {"slug": "run-2"})
    site.ingest(site.exp["id"], points(3))
    site.ingest(other.id, points(30))
    site.sign_in()
    query = f"experiments={site.exp['id']}&experiments={other.id}&metric=loss"
    data = site.client.get(f"/dashboard/data/chart?{query}").json
    assert [s["label"] for s in data["series"]] == ["run-1", "run-2"]
    assert data["x_range"] == [0, 29]  # one x range for every run


# -- from Python ----------------------------------------------------------------------------------


def test_open_opens_the_dashboard_pages(
    metrics_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    session = metrics_server.session()
    folder = sm.Folder.create("runs", session=session)
    exp = folder.create_experiment("run-open")
    assert exp.open() == exp.url
    folder_page = f"{metrics_server.url}/dashboard/?folder={quote(folder.id)}"
    assert folder.open() == folder_page
    assert opened == [exp.url, folder_page]
    browser = requests.Session()  # what the browser sees, once signed in
    assert browser.get(metrics_server.dashboard_link(), timeout=10).status_code == 200
    page = browser.get(folder_page, timeout=10)
    assert page.status_code == 200
    assert ">run-open</a>" in page.text
    assert browser.get(exp.url, timeout=10).status_code == 200
    session.close()


def test_dashboard_url_is_a_new_one_time_link_each_time(metrics_server: LocalServer) -> None:
    first, second = metrics_server.dashboard_url, metrics_server.dashboard_url
    assert first != second
    assert first.startswith(f"{metrics_server.url}/dashboard/login?token=")
    assert metrics_server.api_key not in first
    assert requests.get(first, timeout=10).status_code == 200
    assert requests.get(first, timeout=10).status_code == 401


def test_serve_prints_a_login_link(tmp_path: Any) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syvain_metrics.cli",
            "serve",
            "--port",
            "0",
            "--api-key",
            "ak_serve_a",
            "--api-key",
            "ak_serve_b",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        origin = re.search(r"at (http://127\.0\.0\.1:\d+)", lines[0]).group(1)  # type: ignore[union-attr]
        links = [re.search(r"(http://\S+login\?token=\S+)", line) for line in lines[1:3]]
        assert "ak_serve_a" in lines[1]
        assert "ak_serve_b" in lines[2]
        assert "paste an API key" in lines[3]
        for found in links:
            assert found is not None
            browser = requests.Session()
            assert browser.get(found.group(1), timeout=10).status_code == 200
            assert browser.get(f"{origin}/dashboard/", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_unexpected_failure_is_a_500_page_without_details(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(site.store, "metric_names", broken)
    site.sign_in()
    reply = site.client.get(f"/dashboard/experiments/{site.exp['id']}")
    assert reply.status_code == 500
    assert "secret detail" not in reply.get_data(as_text=True)
    assert "Internal server error" in reply.get_data(as_text=True)
    assert "unexpected error in the dashboard" in caplog.text
