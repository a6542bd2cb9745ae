"""The compare page over HTTP, against the real local server: its page data, the JSON of
every sub-series, the bound of the server-side reduction, the reductions kept between
requests (and dropped when a run's events change), and the queries it refuses. The browser
side is test_compare_browser.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import requests

import syvain_metrics as sm
from syvain_metrics.server.dashboard.compare import MAX_COMPARED_RUNS
from syvain_metrics.server.dashboard.series_cache import SeriesCache
from syvain_metrics.testing import LocalServer

T0 = 1_790_000_000_000


def rows(
    name: str, count: int, *, every_ms: int = 10, tag: str = "", **metadata: Any
) -> list[dict[str, Any]]:
    return [
        {
            "client_event_id": f"{tag}{name}/{metadata}/{s}",
            "name": name,
            "value": float(s) + (0.5 if metadata.get("split") == "valid" else 0.0),
            "step": s,
            "metadata": metadata,
            "timestamp_ms": T0 + s * every_ms,
        }
        for s in range(count)
    ]


class Compare:
    """Two runs of one organization, and a browser-like session signed in to the dashboard."""

    def __init__(self, server: LocalServer, session: sm.Session) -> None:
        self.server = server
        self.a = sm.Experiment.create(
            "run-a", metadata={"lr": 0.01, "opt": "adam"}, session=session
        )
        self.b = sm.Experiment.create("run-b", metadata={"lr": 0.1, "opt": "sgd"}, session=session)
        self.a.ingest(
            rows("loss", 50, split="train") + rows("loss", 50, split="valid") + rows("acc", 5),
            sync=True,
        )
        self.b.ingest(rows("loss", 30, split="train"), sync=True)
        self.http = requests.Session()
        reply = self.http.get(server.dashboard_link())
        assert reply.ok

    def data(self, query: str) -> requests.Response:
        return self.http.get(f"{self.server.url}/dashboard/data/compare?{query}", timeout=30)

    def ids(self) -> str:
        return f"{self.a.id},{self.b.id}"


@pytest.fixture
def site(metrics_server: LocalServer, metrics_session: sm.Session) -> Compare:
    return Compare(metrics_server, metrics_session)


def test_the_page_carries_the_runs_metrics_and_colour_keys(site: Compare) -> None:
    reply = site.http.get(f"{site.server.url}/dashboard/compare?experiments={site.ids()}")
    assert reply.status_code == 200
    text = reply.text
    block = re.search(r'<script type="application/json" id="compare-data">(.*?)</script>', text)
    assert block is not None
    data = json.loads(block.group(1))
    assert [r["slug"] for r in data["runs"]] == ["run-a", "run-b"]
    assert data["runs"][1]["metadata"] == {"lr": 0.1, "opt": "sgd"}
    assert data["metrics"] == [{"name": "acc", "runs": 1}, {"name": "loss", "runs": 2}]
    assert data["color_keys"] == ["lr", "opt"]
    assert "/dashboard/static/compare.js" in text
    assert "/dashboard/static/compare.css" in text
    # The only script elements: the page's files and the data block (no inline code).
    assert re.findall(r"<script(?: [^>]*)?>", text) == [
        re.search(r'<script src="[^"]*dashboard\.js[^"]*" defer>', text).group(0),  # type: ignore[union-attr]
        re.search(r'<script src="[^"]*compare\.js[^"]*" defer>', text).group(0),  # type: ignore[union-attr]
        '<script type="application/json" id="compare-data">',
    ]
    for name in ("compare.js", "compare.css"):
        static = site.http.get(f"{site.server.url}/dashboard/static/{name}")
        assert static.status_code == 200
        assert len(static.content) > 1000


def test_markup_in_a_slug_cannot_close_the_data_block(
    site: Compare, metrics_session: sm.Session
) -> None:
    slug = "</script><script>window.__x=1</script>"
    marked = sm.Experiment.create(slug, metadata={"note": "<b>&"}, session=metrics_session)
    marked.ingest(rows("loss", 2), sync=True)
    reply = site.http.get(f"{site.server.url}/dashboard/compare?experiments={marked.id}")
    assert reply.status_code == 200
    assert "window.__x=1</script>" not in reply.text
    block = re.search(r'id="compare-data">(.*?)</script>', reply.text)
    assert block is not None
    data = json.loads(block.group(1))
    assert data["runs"][0]["slug"] == slug
    assert data["runs"][0]["metadata"] == {"note": "<b>&"}


def test_every_sub_series_of_every_run_is_sent_labelled_as_the_sdk_does(site: Compare) -> None:
    reply = site.data(f"experiments={site.ids()}&metric=loss&width=800")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    data = reply.json()
    assert (data["metric"], data["x"], data["width"]) == ("loss", "step", 800)
    assert (data["points"], data["drawn"]) == (130, 130)
    [a, b] = data["runs"]
    assert (a["run"], b["run"]) == (0, 1)
    assert [s["label"] for s in a["series"]] == ["loss[split=train]", "loss[split=valid]"]
    assert [s["label"] for s in b["series"]] == ["loss[split=train]"]
    valid = a["series"][1]
    assert valid["experiment_id"] == site.a.id
    assert valid["metadata"] == {"split": "valid"}
    assert valid["key"] == '{"split":"valid"}'
    assert valid["x0"] == valid["x1"] == list(range(50))
    assert valid["lo"] == valid["hi"] == [s + 0.5 for s in range(50)]
    assert valid["n"] == [1] * 50
    assert (valid["points"], valid["drawn"], valid["unplaced"], valid["start"]) == (50, 50, 0, 0)
    acc = site.data(f"experiments={site.ids()}&metric=acc").json()
    assert [s["label"] for s in acc["runs"][0]["series"]] == ["acc"]
    assert acc["runs"][1]["series"] == []  # run-b has no acc


def test_time_is_sent_since_each_runs_first_event(site: Compare) -> None:
    data = site.data(f"experiments={site.ids()}&metric=loss&x=time&width=800").json()
    train = data["runs"][0]["series"][0]
    assert train["start"] == T0
    assert train["x0"][0] == 0
    assert train["x1"][-1] == 49 * 10
    assert sum(train["n"]) == 50


def test_each_series_is_reduced_to_the_width_and_keeps_its_extremes(
    site: Compare, metrics_session: sm.Session
) -> None:
    big = sm.Experiment.create("big", session=metrics_session)
    events = rows("loss", 20_000, every_ms=1, split="train")
    events[7_777]["value"] = -1000.0
    events[15_000]["value"] = 1e6
    big.ingest(events, sync=True)
    data = site.data(f"experiments={big.id},{site.a.id}&metric=loss&width=100").json()
    [series] = data["runs"][0]["series"]
    assert len(series["n"]) <= 100
    assert series["drawn"] <= 200
    assert sum(series["n"]) == series["points"] == 20_000
    assert min(series["lo"]) == -1000.0
    assert max(series["hi"]) == 1e6
    spike = series["lo"].index(-1000.0)
    assert series["x0"][spike] <= 7_777 <= series["x1"][spike]
    # The small run beside it is still sent point by point: each run has its own x range.
    assert data["runs"][1]["series"][0]["n"] == [1] * 50


def test_kept_reductions_follow_new_events(site: Compare) -> None:
    query = f"experiments={site.ids()}&metric=loss&width=400"
    first = site.data(query).json()
    assert site.data(query).json() == first  # the same answer from what was kept
    site.b.ingest(rows("loss", 40, tag="more", split="train"), sync=True)  # steps 0..39 again
    after = site.data(query).json()
    assert after["runs"][1]["series"][0]["points"] == 70
    assert after["runs"][0] == first["runs"][0]


def test_the_cache_drops_only_what_changed(metrics_server: LocalServer) -> None:
    store = metrics_server.store
    org = store.authenticate(metrics_server.api_key).org_id
    one = store.create_experiment(org, {"slug": "one"})
    two = store.create_experiment(org, {"slug": "two"})
    cache = SeriesCache()
    made: list[Any] = []

    def reduce(key: Any) -> tuple[str, int, int]:
        made.append(key[1:3])
        return "[]", 0, 0

    keys = [(org, one.id, "loss", "step", 100), (org, two.id, "loss", "step", 100)]
    cache.get_many(store, keys, reduce)
    cache.get_many(store, keys, reduce)
    assert made == [(one.id, "loss"), (two.id, "loss")]
    store.ingest(org, two.id, [{"client_event_id": "x", "name": "acc", "value": 1.0, "step": 0}])
    cache.get_many(store, keys, reduce)  # another metric of run two: nothing to redo
    assert len(made) == 2
    store.ingest(org, two.id, [{"client_event_id": "y", "name": "loss", "value": 1.0, "step": 0}])
    cache.get_many(store, keys, reduce)
    assert made[2:] == [(two.id, "loss")]
    assert len(cache) == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("metric=loss", "Choose at least one experiment"),
        ("experiments={ids}", "Name the metric"),
        ("experiments={ids}&metric=loss&x=wall", "x is 'step' or 'time'"),
        ("experiments={ids}&metric=loss&width=wide", "width is a number"),
        ("experiments={many}&metric=loss", f"at most {MAX_COMPARED_RUNS} experiments"),
    ],
)
def test_bad_queries_are_refused_and_change_nothing(
    site: Compare, metrics_session: sm.Session, query: str, message: str
) -> None:
    before = [e.id for e in sm.Experiment.list(session=metrics_session)]
    many = ",".join(f"id{i}" for i in range(MAX_COMPARED_RUNS + 1))
    reply = site.data(query.format(ids=site.ids(), many=many))
    assert reply.status_code == 400
    assert message in reply.json()["error"]
    assert [e.id for e in sm.Experiment.list(session=metrics_session)] == before
    assert len(site.a.metrics("loss")) == 100


def test_unknown_and_other_organizations_runs_are_not_found(site: Compare) -> None:
    other = sm.Session(site.server.add_organization(), host=site.server.url)
    hidden = sm.Experiment.create("hidden", session=other)
    hidden.ingest(rows("loss", 3), sync=True)
    other.close()
    for ids in (f"{site.a.id},{hidden.id}", "no-such-id"):
        reply = site.data(f"experiments={ids}&metric=loss")
        assert reply.status_code == 404
        assert "hidden" not in reply.text
        page = site.http.get(f"{site.server.url}/dashboard/compare?experiments={ids}")
        assert page.status_code == 404


def test_the_data_route_needs_a_signed_in_browser(site: Compare) -> None:
    reply = requests.get(
        f"{site.server.url}/dashboard/data/compare?experiments={site.ids()}&metric=loss",
        timeout=30,
    )
    assert reply.status_code == 401
    assert reply.json() == {"error": "Sign in first."}
