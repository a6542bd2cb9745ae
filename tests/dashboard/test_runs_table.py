"""The list page's runs table over HTTP against the real local server: metric columns per
sub-series (numbers computed here from what the test logged), sorting, filters, the state in
the URL, subfolders, refused query values, and the parallel-coordinates page. The browser side
is test_runs_table_browser.py."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser
from typing import Any

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import requests

import syvain_metrics as sm
from syvain_metrics.server.dashboard.runs_query import RunsQuery
from syvain_metrics.testing import LocalServer

LOSS_VALID_MIN = "loss[split=valid]:min"


class Table(HTMLParser):
    """The runs table of a page: its header texts, each row's cell texts, and the sort links."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self.links: dict[str, str] = {}
        self.error = ""
        self._in = ""
        self._cell: list[str] | None = None
        self._href = ""
        self._inside_table = False
        self._in_error = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and "runs" in (found.get("class") or "").split():
            self._inside_table = True
        if not self._inside_table:
            if tag == "p" and found.get("class") == "error-message":
                self._in_error = True
            return
        if tag == "thead":
            self._in = "head"
        elif tag == "tbody":
            self._in = "body"
        elif tag == "tr" and self._in == "body":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = []
        elif tag == "a" and self._in == "head":
            self._href = found.get("href") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_error = False
        if not self._inside_table:
            return
        if tag == "table":
            self._inside_table = False
        elif tag in ("th", "td") and self._cell is not None:
            text = " ".join("".join(self._cell).split()).rstrip(" ▲▼")
            if self._in == "head":
                self.headers.append(text)
                if self._href:
                    self.links[text] = self._href
                self._href = ""
            else:
                self.rows[-1].append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error += data
        if self._cell is not None:
            self._cell.append(data)

    def column(self, header: str) -> list[str]:
        at = self.headers.index(header)
        return [row[at] for row in self.rows]

    @property
    def slugs(self) -> list[str]:
        return self.column("Slug")


class Browser:
    """A signed-in ``requests`` session on the dashboard."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.http = requests.Session()
        assert self.http.get(server.dashboard_url, timeout=10).ok

    def get(self, path: str, status: int = 200) -> Table:
        reply = self.http.get(f"{self.server.url}{path}", timeout=30)
        assert reply.status_code == status, reply.text[:2000]
        return Table(reply.text)

    def text(self, path: str) -> str:
        reply = self.http.get(f"{self.server.url}{path}", timeout=30)
        assert reply.status_code == 200, reply.text[:2000]
        return reply.text


def _log(exp: sm.Experiment, rows: list[tuple[str, int | None, float, dict[str, Any]]]) -> None:
    exp.ingest(
        [
            {"client_event_id": f"{i}", "name": n, "value": v, "step": s, "metadata": m}
            for i, (n, s, v, m) in enumerate(rows)
        ],
        sync=True,
    )


@pytest.fixture
def sweep(metrics_server: LocalServer) -> dict[str, Any]:
    """Six runs in a folder (one in a subfolder), lr x optimizer, with loss in train and
    valid splits logged in a shuffled order, and a run without the valid split."""
    session = metrics_server.session()
    rng = random.Random(23)
    folder = sm.Folder.create("sweep", session=session)
    inner = folder.create_subfolder("more")
    logged: dict[str, dict[str, list[tuple[int, float]]]] = {}
    runs = {}
    grid = [(0.1, "adam"), (0.01, "adam"), (0.001, "adam"), (0.1, "sgd"), (0.01, "sgd")]
    for index, (lr, optimizer) in enumerate([*grid, (0.003, "sgd")]):
        where = inner if index == 5 else folder
        slug = f"lr{lr}-{optimizer}"
        exp = where.create_experiment(slug, metadata={"lr": lr, "optimizer": optimizer})
        points: list[tuple[str, int | None, float, dict[str, Any]]] = []
        series: dict[str, list[tuple[int, float]]] = {"train": [], "valid": []}
        for split in ("train",) if index == 4 else ("train", "valid"):
            for step in range(20):
                # values spanning 1 to 1,000, so text order is not number order
                value = round(rng.uniform(1, 1000), 3)
                points.append(("loss", step, value, {"split": split}))
                series[split].append((step, value))
        rng.shuffle(points)  # the last value is the last step's, not the last sent
        _log(exp, points)
        logged[slug] = series
        runs[slug] = exp
        if index % 2 == 0:
            exp.start()
            exp.finish()
    return {"folder": folder, "inner": inner, "runs": runs, "logged": logged, "session": session}


def _expected(logged: dict[str, list[tuple[int, float]]], split: str, how: str) -> str:
    values = logged[split]
    if not values:
        return ""
    if how == "last":
        value = max(values)[1]
    else:
        value = (min if how == "min" else max)(v for _, v in values)
    return f"{value:.6g}"


def _query(*pairs: tuple[str, str]) -> str:
    return "?" + "&".join(f"{k}={requests.utils.quote(v, safe='')}" for k, v in pairs)


def test_metric_columns_show_last_min_and_max_of_each_sub_series(
    metrics_server: LocalServer, sweep: dict[str, Any]
) -> None:
    browser = Browser(metrics_server)
    columns = [f"loss[split={s}]:{h}" for s in ("train", "valid") for h in ("last", "min", "max")]
    table = browser.get("/dashboard/" + _query(*[("col", c) for c in columns]))
    at = table.headers.index(columns[0])
    assert table.headers[at : at + 6] == columns
    assert table.headers[at + 6 :] == ["lr", "optimizer"]  # metadata after the metrics
    assert sorted(table.slugs) == sorted(sweep["logged"])
    for row, slug in zip(table.rows, table.slugs, strict=True):
        logged = sweep["logged"][slug]
        expected = [
            _expected(logged, s, h) for s in ("train", "valid") for h in ("last", "min", "max")
        ]
        assert row[at : at + 6] == expected, slug
    # Without col, the first sub-series' last values; an empty col alone, none.
    assert [h for h in browser.get("/dashboard/").headers if h.startswith("loss")] == [
        "loss[split=train]:last",
        "loss[split=valid]:last",
    ]
    assert not any("loss" in h for h in browser.get("/dashboard/?col=").headers)


def test_sorting_by_a_metric_puts_numbers_in_order_and_empty_cells_last(
    metrics_server: LocalServer, sweep: dict[str, Any]
) -> None:
    browser = Browser(metrics_server)
    base = _query(("col", LOSS_VALID_MIN))
    unsorted = browser.get("/dashboard/" + base)
    link = unsorted.links[LOSS_VALID_MIN]  # a header links to its ascending sort
    ascending = browser.get(link)
    values = ascending.column(LOSS_VALID_MIN)
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers)
    assert len(numbers) == 5
    assert values[-1] == ""  # the run without a valid split, last
    assert ascending.slugs[-1] == "lr0.01-sgd"
    best = min(
        sweep["logged"], key=lambda s: float(_expected(sweep["logged"][s], "valid", "min") or "inf")
    )
    assert ascending.slugs[0] == best
    descending = browser.get(ascending.links[LOSS_VALID_MIN])  # the same header again
    values = descending.column(LOSS_VALID_MIN)
    assert [float(v) for v in values if v] == sorted(numbers, reverse=True)
    assert values[-1] == ""  # still last
    # Metadata sorts as numbers too, and slugs as text.
    by_lr = browser.get(ascending.links["lr"])
    assert [float(v) for v in by_lr.column("lr")] == sorted(float(v) for v in by_lr.column("lr"))
    # Sorting by a column the URL's col leaves out shows that column too.
    shown = browser.get(f"/dashboard/?col=loss[split=train]:last&sort=metric:{LOSS_VALID_MIN}")
    assert [h for h in shown.headers if h.startswith("loss")] == [
        "loss[split=train]:last",
        LOSS_VALID_MIN,
    ]
    assert shown.column(LOSS_VALID_MIN) == ascending.column(LOSS_VALID_MIN)
    by_slug = browser.get("/dashboard/?sort=slug&order=desc")
    assert by_slug.slugs == sorted(sweep["logged"], reverse=True)


def test_filters_by_metadata_status_and_text(
    metrics_server: LocalServer, sweep: dict[str, Any]
) -> None:
    browser = Browser(metrics_server)
    assert sorted(browser.get("/dashboard/?meta.lr=0.010").slugs) == ["lr0.01-adam", "lr0.01-sgd"]
    assert browser.get("/dashboard/?meta.lr=0.01&meta.optimizer=adam").slugs == ["lr0.01-adam"]
    either = browser.get("/dashboard/?meta.lr=0.1&meta.lr=0.001&meta.optimizer=adam")
    assert sorted(either.slugs) == ["lr0.001-adam", "lr0.1-adam"]
    done = browser.get("/dashboard/?status=done")
    assert sorted(done.slugs) == ["lr0.001-adam", "lr0.01-sgd", "lr0.1-adam"]
    assert sorted(browser.get("/dashboard/?q=SGD").slugs) == [
        "lr0.003-sgd",
        "lr0.01-sgd",
        "lr0.1-sgd",
    ]
    assert browser.get("/dashboard/?meta.nothing=1").rows == []
    # In a folder, the same filters apply to its runs.
    folder = sweep["folder"].id
    assert browser.get(f"/dashboard/?folder={folder}&meta.optimizer=sgd&status=done").slugs == [
        "lr0.01-sgd"
    ]


def test_the_url_keeps_columns_sort_and_filters(
    metrics_server: LocalServer, sweep: dict[str, Any]
) -> None:
    browser = Browser(metrics_server)
    path = "/dashboard/" + _query(
        ("meta.optimizer", "adam"), ("col", LOSS_VALID_MIN), ("sort", f"metric:{LOSS_VALID_MIN}")
    )
    first = browser.get(path)
    again = browser.get(path)  # a reload (or the URL shared) shows the same table
    assert (first.headers, first.rows) == (again.headers, again.rows)
    assert len(first.rows) == 3
    # Every header's link keeps the filter and the columns.
    for header in ("Slug", "lr", LOSS_VALID_MIN):
        kept = RunsQuery.parse(_params(first.links[header]))
        assert kept.filters == (("optimizer", ("adam",)),)
        assert kept.columns == [LOSS_VALID_MIN]
    html = browser.text(path)
    assert re.search(r'value="loss\[split=valid\]:min"[^>]* checked', html)
    assert not re.search(r'value="loss\[split=valid\]:max"[^>]* checked', html)
    assert re.search(r'<option value="adam" selected>', html)


def _params(url: str) -> dict[str, list[str]]:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_a_folder_page_includes_its_subfolders_runs_when_asked(
    metrics_server: LocalServer, sweep: dict[str, Any]
) -> None:
    browser = Browser(metrics_server)
    folder = sweep["folder"].id
    own = browser.get(f"/dashboard/?folder={folder}")
    assert "lr0.003-sgd" not in own.slugs
    assert len(own.slugs) == 5
    assert "Folder" not in own.headers
    html = browser.text(f"/dashboard/?folder={folder}")
    toggle = re.search(r'class="subfolders-toggle" href="([^"]+)"', html)
    assert toggle is not None
    every = browser.get(toggle.group(1).replace("&amp;", "&"))
    assert sorted(every.slugs) == sorted(sweep["logged"])
    assert every.column("Folder")[every.slugs.index("lr0.003-sgd")] == "sweep/more"
    inner = browser.get(f"/dashboard/?folder={sweep['inner'].id}&sub=1")
    assert inner.slugs == ["lr0.003-sgd"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("order=up", "order is 'asc' or 'desc'"),
        ("status=zombie", "status is one of"),
        ("sub=2", "sub is 1"),
        ("col=loss", "is not '<metric>[<metadata>]:<how>'"),
        ("col=loss:median", "is not '<metric>[<metadata>]:<how>'"),
        ("sort=bogus", "sort is one of"),
        ("sort=metric:loss[split=valid]", "is not '<metric>[<metadata>]:<how>'"),
        ("meta.=1", "names its key"),
    ],
)
def test_bad_query_values_are_a_clear_400_and_change_nothing(
    metrics_server: LocalServer, sweep: dict[str, Any], query: str, message: str
) -> None:
    browser = Browser(metrics_server)
    before = browser.get("/dashboard/?sort=slug")
    events = metrics_server.store._db.execute("SELECT count(*) FROM events").fetchone()[0]
    refused = browser.get(f"/dashboard/?{query}", status=400)
    assert message in refused.error.replace("&#39;", "'"), refused.error
    after = browser.get("/dashboard/?sort=slug")
    assert (after.headers, after.rows) == (before.headers, before.rows)
    assert metrics_server.store._db.execute("SELECT count(*) FROM events").fetchone()[0] == events


def test_parallel_coordinates_draw_one_line_per_selected_run(
    metrics_server: LocalServer, sweep: dict[str, Any]
) -> None:
    browser = Browser(metrics_server)
    runs = sweep["runs"]
    chosen = ["lr0.1-adam", "lr0.01-adam", "lr0.001-adam", "lr0.01-sgd"]
    ids = ",".join(runs[s].id for s in chosen)
    html = browser.text(f"/dashboard/parallel?experiments={ids}&summary={LOSS_VALID_MIN}")
    lines = re.findall(r'<path class="run" [^>]*data-slug="([^"]+)" data-value="([^"]*)"', html)
    assert sorted(slug for slug, _ in lines) == sorted(chosen)
    values = {slug: value for slug, value in lines}
    for slug in chosen:
        assert values[slug] == _expected(sweep["logged"][slug], "valid", "min")
    axes = re.findall(r'<g class="axis[^"]*" data-key="([^"]+)"', html)
    assert axes == ["lr", "optimizer", LOSS_VALID_MIN]  # the keys that vary, then the metric
    # The lowest value takes the scale's first colour, the highest its last; no value: grey.
    colours = dict(
        re.findall(r'stroke="(#[0-9a-f]{6})" fill="none" [^>]*data-slug="([^"]+)"', html)
    )
    by_slug = {slug: colour for colour, slug in colours.items()}
    present = {s: float(v) for s, v in values.items() if v}
    assert by_slug[min(present, key=present.__getitem__)] == "#440154"
    assert by_slug[max(present, key=present.__getitem__)] == "#fde725"
    assert by_slug["lr0.01-sgd"] == "#9aa3ad"
    # The list's selection form sends its runs here and to the compare page.
    listing = browser.text("/dashboard/")
    assert 'formaction="/dashboard/parallel"' in listing
    assert re.search(r'<button type="submit" class="compare-button">Compare selected', listing)
    refused = browser.get("/dashboard/parallel?experiments=", status=400)
    assert "Select at least one run" in refused.error
    refused = browser.get(f"/dashboard/parallel?experiments={ids}&summary=loss:median", status=400)
    assert "is not '<metric>" in refused.error.replace("&#39;", "'")
    refused = browser.get(f"/dashboard/parallel?experiments={ids}&summary=acc:min", status=400)
    assert "None of these runs has a sub-series 'acc'" in refused.error.replace("&#39;", "'")


def test_summaries_follow_the_reads_order_and_use_index_seeks(metrics_server: LocalServer) -> None:
    session = metrics_server.session()
    exp = sm.Experiment.create("order", session=session)
    # Two events at step 3 (the later client time wins), null steps first, a late step 1.
    exp.ingest(
        [
            {"client_event_id": "a", "name": "x", "value": 5.0, "step": 3, "timestamp_ms": 2_000},
            {"client_event_id": "b", "name": "x", "value": 7.0, "step": 3, "timestamp_ms": 1_000},
            {
                "client_event_id": "c",
                "name": "x",
                "value": 9.0,
                "step": None,
                "timestamp_ms": 9_000,
            },
            {"client_event_id": "d", "name": "x", "value": -1.0, "step": 1, "timestamp_ms": 8_000},
        ],
        sync=True,
    )
    store = metrics_server.store
    org = store.authenticate(metrics_server.api_key).org_id
    [summary] = store.series_summaries(org, [(exp.id, "x", "{}")]).values()
    assert (summary.last, summary.min, summary.max) == (5.0, -1.0, 9.0)
    assert exp.metrics("x").values[-1] == summary.last  # the SDK's read agrees
    with store.recording() as statements:
        store.series_catalog(org, [exp.id])
        store.series_summaries(org, [(exp.id, "x", "{}")])
    plans = [step for s in statements if "FROM events" in s for step in store.query_plan(s)]
    # Only seeks of the events' indexes (SCAN of a CTE's rows is not a scan of events).
    assert plans
    assert not any(step.startswith("SCAN events") for step in plans), plans
    assert any("events_by_series" in step for step in plans)
    # The charts' slices of a step range keep their own index (events_by_series, ordered by
    # metadata, would have them scan the whole series once per slice).
    from syvain_metrics.server.sql import SeriesFilter

    with store.recording() as statements:
        store.metric_buckets(org, [SeriesFilter(exp.id, "x")], "step", 100)
        store.catalog_values(org, exp.id, "x", None, 10)
    plans = [step for s in statements if "FROM events" in s for step in store.query_plan(s)]
    assert plans
    assert not any("events_by_series" in step for step in plans), plans
    session.close()
