"""The runs table and parallel coordinates in headless Chromium (see test_browser.py for the
browser set-up, skipped without chromium and failing under ``CI=true``): a header click sorts,
a filter narrows, a chosen column survives a reload, and the selected runs draw one line
each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.dashboard.test_browser import Tab

VALID_MIN = "loss[split=valid]:min"
# (lr, optimizer, valid loss scale): created in this order, so newest first is not sorted
GRID = [
    (0.1, "adam", 3.0),
    (0.01, "adam", 1.0),
    (0.001, "adam", 20.0),
    (0.1, "sgd", 9.0),
    (0.01, "sgd", 2.0),
    (0.001, "sgd", 100.0),
]


@pytest.fixture
def sweep(metrics_server: LocalServer) -> dict[str, float]:
    """Six runs, loss in train and valid splits; returns each run's valid minimum."""
    session = metrics_server.session()
    minima = {}
    for lr, optimizer, scale in GRID:
        slug = f"lr{lr}-{optimizer}"
        exp = sm.Experiment.create(
            slug, metadata={"lr": lr, "optimizer": optimizer}, session=session
        )
        events = [
            {
                "client_event_id": f"{split}/{step}",
                "name": "loss",
                "value": scale * (2.0 + (-1) ** step / (step + 1)),
                "step": step,
                "metadata": {"split": split},
            }
            for split in ("train", "valid")
            for step in range(10)
        ]
        exp.ingest(events, sync=True)
        minima[slug] = min(e["value"] for e in events if e["metadata"]["split"] == "valid")
    session.close()
    return minima


def _slugs(tab: Tab) -> list[str]:
    return [str(t) for t in tab.page.locator("table.runs td.slug a").all_inner_texts()]


def _column(tab: Tab, header: str) -> list[str]:
    headers = [h.strip(" ▲▼") for h in tab.page.locator("table.runs thead th").all_inner_texts()]
    at = headers.index(header) + 1
    return [
        str(t) for t in tab.page.locator(f"table.runs tbody td:nth-child({at})").all_inner_texts()
    ]


def test_a_header_click_sorts_and_a_filter_narrows(
    tab: Tab, metrics_server: LocalServer, sweep: dict[str, float], tmp_path: Path
) -> None:
    page = tab.page
    tab.sign_in(metrics_server.dashboard_link(f"{metrics_server.url}/dashboard/?col={VALID_MIN}"))
    before = _slugs(tab)
    assert before == [f"lr{lr}-{o}" for lr, o, _ in reversed(GRID)]  # newest first
    page.locator("table.runs th", has_text=VALID_MIN).get_by_role("link").click()
    page.wait_for_url(re.compile(r".*sort=metric.*order=asc"))
    ascending = _slugs(tab)
    assert ascending == sorted(sweep, key=sweep.__getitem__)
    assert ascending != before
    values = [float(v) for v in _column(tab, VALID_MIN)]
    assert values == sorted(values)
    page.locator("table.runs th", has_text=VALID_MIN).get_by_role("link").click()
    page.wait_for_url(re.compile(r".*order=desc"))
    assert _slugs(tab) == list(reversed(ascending))

    # A metadata filter applies when chosen (the script submits the form); the sort stays.
    page.locator("select[name='meta.optimizer']").select_option("sgd")
    page.wait_for_url(re.compile(r".*meta\.optimizer=sgd.*"))
    sgd = [s for s in reversed(ascending) if s.endswith("sgd")]
    assert _slugs(tab) == sgd
    page.get_by_label("Text").fill("lr0.0")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*q=lr0\.0.*"))
    assert _slugs(tab) == [s for s in sgd if s.startswith("lr0.0")]
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
    assert tab.errors == []


def test_a_chosen_column_is_kept_on_reload(
    tab: Tab, metrics_server: LocalServer, sweep: dict[str, float]
) -> None:
    page = tab.page
    tab.sign_in(metrics_server.dashboard_url)
    headers = page.locator("table.runs thead th").all_inner_texts()
    assert "loss[split=train]:max" not in headers
    page.locator("details.column-chooser summary").click()
    page.get_by_label("loss[split=train]:max").check()
    page.wait_for_url(re.compile(r".*col=loss%5Bsplit%3Dtrain%5D%3Amax.*"))
    assert "loss[split=train]:max" in page.locator("table.runs thead th").all_inner_texts()
    page.reload()
    assert "loss[split=train]:max" in page.locator("table.runs thead th").all_inner_texts()
    assert page.get_by_label("loss[split=train]:max").is_checked()
    expected = {
        slug: f"{max(scale * (2.0 + (-1) ** s / (s + 1)) for s in range(10)):.6g}"
        for (lr, o, scale), slug in zip(GRID, sweep, strict=True)
    }
    cells = dict(zip(_slugs(tab), _column(tab, "loss[split=train]:max"), strict=True))
    assert cells == expected
    assert tab.errors == []


def test_selected_runs_draw_parallel_coordinates(
    tab: Tab, metrics_server: LocalServer, sweep: dict[str, float], tmp_path: Path
) -> None:
    page = tab.page
    tab.sign_in(metrics_server.dashboard_link(f"{metrics_server.url}/dashboard/?col={VALID_MIN}"))
    parallel = page.get_by_role("button", name="Parallel coordinates")
    assert parallel.is_disabled()  # nothing selected yet
    chosen = ["lr0.1-adam", "lr0.01-adam", "lr0.01-sgd", "lr0.001-sgd"]
    for slug in chosen:
        page.get_by_label(f"compare {slug}").check()
    assert page.locator(".selection-count").inner_text() == "4 runs selected"
    parallel.click()
    page.wait_for_url(re.compile(r".*/dashboard/parallel\?.*"))
    lines = page.locator("svg.parallel path.run")
    assert lines.count() == len(chosen)
    assert sorted(str(lines.nth(i).get_attribute("data-slug")) for i in range(4)) == sorted(chosen)
    axes = page.locator("svg.parallel g.axis").evaluate_all("gs => gs.map(g => g.dataset.key)")
    assert axes == ["lr", "optimizer", VALID_MIN]
    # Hovering a line (a point on its stroke, between two axes) names its run.
    best = min(chosen, key=sweep.__getitem__)
    x, y = page.locator(f'svg.parallel path.run[data-slug="{best}"]').evaluate(
        "p => { const at = p.getPointAtLength(p.getTotalLength() * 0.93);"
        " const m = p.getScreenCTM(); return [at.x * m.a + m.e, at.y * m.d + m.f]; }"
    )
    page.mouse.move(x, y)
    hovered = page.locator("svg.parallel path.run.hover")
    hovered.wait_for(timeout=5_000)
    slug = hovered.get_attribute("data-slug")
    assert slug in chosen
    value = hovered.get_attribute("data-value")
    assert page.locator(".pc-hover").inner_text().startswith(f"{slug}: {VALID_MIN} = {value}")
    page.screenshot(path=str(tmp_path / "parallel.png"), full_page=True)
    # Another metric summary, from the page's own choice.
    page.locator("select[name=summary]").select_option("loss[split=train]:last")
    page.wait_for_url(re.compile(r".*summary=loss%5Bsplit%3Dtrain%5D%3Alast.*"))
    assert page.locator("svg.parallel g.metric-axis").get_attribute("data-key") == (
        "loss[split=train]:last"
    )
    assert page.locator("svg.parallel path.run").count() == len(chosen)
    assert tab.errors == []
