"""The compare page in headless Chromium: each control is driven as a person would and what
it changed is asserted through the values the page drew (``window.syvainCompare``), never
through pixels. Skips without chromium or playwright, fails under ``CI=true``
(test_browser.py's rules)."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.dashboard.test_browser import Tab

T0 = 1_790_000_000_000
LRS = {"lr-mid": 0.01, "lr-high": 0.1, "lr-low": 0.001}
STEPS = 40
EVERY_MS = 50  # 40 points over 1.95 s: a two-second run


def value(run: int, step: int, split: str) -> float:
    # Noisy enough that smoothing changes every drawn value but the first.
    return 1.0 / (1 + step) + run + (0.3 if step % 2 else 0.0) + (0.05 if split == "valid" else 0)


@pytest.fixture
def sweep(metrics_server: LocalServer, metrics_session: sm.Session) -> list[sm.Experiment]:
    """Three runs of a learning-rate sweep, lr not in the runs' order: loss in two splits
    and accuracy, 40 steps logged over two seconds."""
    runs = []
    for index, (slug, lr) in enumerate(LRS.items()):
        exp = sm.Experiment.create(slug, metadata={"lr": lr}, session=metrics_session)
        events = []
        for step in range(STEPS):
            at = T0 + index * 600_000 + step * EVERY_MS
            for split in ("train", "valid"):
                events.append(
                    {
                        "client_event_id": f"loss/{split}/{step}",
                        "name": "loss",
                        "value": value(index, step, split),
                        "step": step,
                        "metadata": {"split": split},
                        "timestamp_ms": at,
                    }
                )
            events.append(
                {
                    "client_event_id": f"acc/{step}",
                    "name": "accuracy",
                    "value": step / STEPS,
                    "step": step,
                    "timestamp_ms": at,
                }
            )
        exp.ingest(events, sync=True)
        runs.append(exp)
    return runs


def open_compare(tab: Tab, server: LocalServer, runs: list[sm.Experiment], query: str = "") -> str:
    url = f"{server.url}/dashboard/compare?experiments={','.join(r.id for r in runs)}"
    url += f"&{query}" if query else ""
    tab.sign_in(server.dashboard_link(url))
    wait_ready(tab)
    return url


def wait_ready(tab: Tab) -> None:
    tab.page.wait_for_function(
        "() => document.getElementById('compare').dataset.state === 'ready'", timeout=15_000
    )


def charts(tab: Tab) -> list[dict[str, Any]]:
    return list(tab.page.evaluate("window.syvainCompare.charts()"))


def shown(tab: Tab) -> dict[str, dict[str, Any]]:
    return {c["label"]: c for c in charts(tab) if c["shown"]}


def redrawn(tab: Tab, before: str) -> None:
    tab.page.wait_for_function(
        f"() => document.getElementById('compare').dataset.draws !== '{before}'"
    )


def draws(tab: Tab) -> str:
    return str(tab.page.get_attribute("#compare", "data-draws"))


def test_one_chart_per_sub_series_with_a_line_per_run(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    found = shown(tab)
    assert list(found) == ["accuracy", "loss[split=train]", "loss[split=valid]"]
    assert all(sorted(c["runs"]) == [0, 1, 2] for c in found.values())
    # Unsmoothed, a run's drawn line is its points as logged.
    assert found["loss[split=valid]"]["drawn"]["1"] == [value(1, s, "valid") for s in range(STEPS)]
    assert tab.page.locator("#cmp-runs button.cmp-run").count() == 3
    assert tab.errors == []


def test_the_legend_toggles_a_run_in_every_chart_and_the_url_keeps_it(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    before = draws(tab)
    tab.page.locator('#cmp-runs button.cmp-run[data-run="1"]').click()
    redrawn(tab, before)
    assert all(sorted(c["runs"]) == [0, 2] for c in shown(tab).values())
    assert "hide=1" in tab.page.url
    tab.page.reload()
    wait_ready(tab)
    assert all(sorted(c["runs"]) == [0, 2] for c in shown(tab).values())
    assert tab.page.get_attribute('#cmp-runs button[data-run="1"]', "aria-pressed") == "false"
    tab.page.locator('#cmp-runs button.cmp-run[data-run="1"]').click()
    tab.page.wait_for_function(
        "() => window.syvainCompare.charts().every(c => Object.keys(c.drawn).length === 3)"
    )
    assert "hide=" not in tab.page.url


def test_the_split_filter_leaves_only_the_valid_charts(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    boxes = tab.page.locator("#cmp-meta input")
    assert boxes.evaluate_all("(all) => all.map(b => b.value)") == ["split=train", "split=valid"]
    tab.page.get_by_label("split=train").uncheck()
    assert list(shown(tab)) == ["accuracy", "loss[split=valid]"]
    assert "off=split%3Dtrain" in tab.page.url
    # And the charts' filter narrows to the metric.
    tab.page.locator("#cmp-filter").fill("loss")
    tab.page.wait_for_function("() => location.search.includes('filter=loss')")
    assert list(shown(tab)) == ["loss[split=valid]"]


def ema(values: list[float], weight: float) -> list[float]:
    out, last = [], 0.0
    for k, v in enumerate(values, 1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**k))
    return out


def test_the_smoothing_slider_changes_the_drawn_values(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    raw = shown(tab)["loss[split=train]"]["drawn"]["0"]
    before = draws(tab)
    tab.page.locator("#cmp-smooth").fill("0.9")
    redrawn(tab, before)
    smoothed = shown(tab)["loss[split=train]"]["drawn"]["0"]
    assert smoothed != raw
    # TensorBoard's debiased EMA: the first value is the first point, the rest follow it.
    assert smoothed == pytest.approx(ema(raw, 0.9), rel=1e-12)
    assert smoothed[0] == pytest.approx(raw[0])
    assert tab.page.locator("#cmp-smooth-value").inner_text() == "0.9"
    assert "smooth=0.9" in tab.page.url


def drag(tab: Tab, chart: int, start: float, end: float) -> None:
    box = tab.page.locator(".cmp-over").nth(chart).bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    tab.page.mouse.move(box["x"] + box["width"] * start, y)
    tab.page.mouse.down()
    tab.page.mouse.move(box["x"] + box["width"] * (start + end) / 2, y)
    tab.page.mouse.move(box["x"] + box["width"] * end, y)
    tab.page.mouse.up()


def test_drag_zooms_every_chart_and_reset_restores_it(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    full = shown(tab)["loss[split=train]"]["domain"]
    assert full == [0, STEPS - 1]
    before = draws(tab)
    drag(tab, 1, 0.4, 0.7)
    redrawn(tab, before)
    zoomed = shown(tab)
    lo, hi = zoomed["loss[split=train]"]["domain"]
    assert 0 < lo < hi < STEPS - 1
    assert hi - lo < (STEPS - 1) * 0.45
    assert all(c["domain"] == [lo, hi] for c in zoomed.values())  # one zoom for all charts
    assert "xmin=" in tab.page.url
    before = draws(tab)
    tab.page.locator("#cmp-reset").click()
    redrawn(tab, before)
    assert shown(tab)["loss[split=train]"]["domain"] == full
    assert "xmin=" not in tab.page.url


def test_the_hover_lists_every_visible_run(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    box = tab.page.locator(".cmp-over").nth(2).bounding_box()
    assert box is not None
    tab.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    tip = tab.page.locator("#cmp-tooltip")
    tip.wait_for(state="visible")
    rows = tip.locator(".tip-row")
    assert sorted(rows.evaluate_all("(r) => r.map(x => x.dataset.run)")) == ["0", "1", "2"]
    text = tip.inner_text()
    step = int(re.search(r"step (\d+)", text).group(1))  # type: ignore[union-attr]
    assert f"lr-high: {value(1, step, 'valid')}" in text
    tab.page.mouse.move(0, 0)
    before = draws(tab)
    tab.page.locator('#cmp-runs button.cmp-run[data-run="0"]').click()
    redrawn(tab, before)
    tab.page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    tip.wait_for(state="visible")
    assert sorted(rows.evaluate_all("(r) => r.map(x => x.dataset.run)")) == ["1", "2"]


def test_relative_time_ticks_differ_for_a_two_second_run(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    tab.page.locator("#cmp-x").select_option("relative")
    wait_ready(tab)
    tab.page.wait_for_function(
        "() => window.syvainCompare.charts().some(c => c.ticks.some(t => t.endsWith(' s')))"
    )
    chart = shown(tab)["loss[split=train]"]
    ticks = chart["ticks"]
    assert len(ticks) >= 3
    assert len(set(ticks)) == len(ticks)
    assert all(re.fullmatch(r"[\d.]+ s", t) for t in ticks), ticks
    assert chart["domain"] == [0, (STEPS - 1) * EVERY_MS]  # each run from its own start
    # Wall time: the runs ten minutes apart, ticks still distinct.
    tab.page.locator("#cmp-x").select_option("wall")
    tab.page.wait_for_function("() => location.search.includes('x=wall')")
    wall = shown(tab)["loss[split=train]"]
    assert wall["domain"][0] == T0
    assert len(set(wall["ticks"])) == len(wall["ticks"]) >= 3
    assert tab.errors == []


def test_colour_by_a_numeric_hyperparameter_follows_its_order(
    tab: Tab, metrics_server: LocalServer, sweep: list[sm.Experiment]
) -> None:
    open_compare(tab, metrics_server, sweep)
    default = tab.page.evaluate("window.syvainCompare.state().runs")
    assert len({r["color"] for r in default}) == 3
    tab.page.locator("#cmp-color").select_option("lr")
    tab.page.wait_for_function("() => location.search.includes('color=lr')")
    runs = tab.page.evaluate("window.syvainCompare.state().runs")
    by_lr = sorted(runs, key=lambda r: r["value"])
    assert [r["slug"] for r in by_lr] == ["lr-low", "lr-mid", "lr-high"]
    # lr spans 100x: a log scale, so 0.01 sits half way.
    assert [r["t"] for r in by_lr] == pytest.approx([0.0, 0.5, 1.0])
    assert len({r["color"] for r in runs}) == 3
    # The legend lists the runs along the scale, each with its value.
    legend = tab.page.locator("#cmp-runs li").all_inner_texts()
    assert [re.sub(r"\s+", " ", t).replace("↗", "").strip() for t in legend] == [
        "lr-low 0.001",
        "lr-mid 0.01",
        "lr-high 0.1",
    ]
    tab.page.reload()
    wait_ready(tab)
    assert tab.page.locator("#cmp-color").input_value() == "lr"
    assert math.isclose(tab.page.evaluate("window.syvainCompare.state().runs[0].t"), 0.5)


def test_every_run_of_a_larger_sweep_is_drawn_as_its_own(
    tab: Tab, metrics_server: LocalServer, metrics_session: sm.Session
) -> None:
    # More runs than one request of the page carries: each answer's runs land in place.
    runs = []
    for index in range(57):
        exp = sm.Experiment.create(
            f"r{index:02d}", metadata={"seed": index}, session=metrics_session
        )
        exp.ingest(
            [
                {"client_event_id": str(s), "name": "loss", "value": index * 10.0 + s, "step": s}
                for s in range(4)
            ],
            sync=True,
        )
        runs.append(exp)
    open_compare(tab, metrics_server, runs)
    [chart] = charts(tab)
    assert sorted(chart["runs"]) == list(range(57))
    assert all(chart["drawn"][str(i)] == [i * 10.0 + s for s in range(4)] for i in range(57))
    slugs = [r["slug"] for r in tab.page.evaluate("window.syvainCompare.state().runs")]
    assert slugs == [f"r{i:02d}" for i in range(57)]
    assert tab.errors == []
