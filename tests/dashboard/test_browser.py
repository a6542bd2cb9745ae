"""The dashboard in a real browser: Debian's headless chromium, driven by playwright's Python
API (no browser download: the system binary). Screenshots of each page go to the test's
temporary directory.

Without chromium (or playwright) these tests skip and say how to install it; with ``CI=true``
they fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import os
import pty
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import syvain_metrics as sm
from syvain_metrics.server import wire
from syvain_metrics.testing import LocalServer
from tests.conftest import service_setting as _service_setting

CHROMIUM = os.environ.get("SYVAIN_METRICS_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = (
    "browser tests need Debian's chromium at /usr/bin/chromium (as root: apt-get install -y "
    "chromium) and playwright (pip install -e '.[dev]'; no browser download needed)"
)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
XSS_SLUG = '<img src=x onerror="window.__xss=1">run'
XSS_NOTE = "<script>window.__xss=2</script>"
XSS_FOLDER = 'vision <img src=x onerror="window.__xss=3">'


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


class Tab:
    """A fresh browser context (no cookies) and its page, recording script errors and
    console errors (a Content-Security-Policy violation is one)."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )

    def sign_in(self, link: str) -> None:
        """Open a login link and wait for the page it lands on."""
        reply = self.page.goto(link)
        assert reply is not None
        assert reply.ok
        self.page.wait_for_url(lambda url: "/dashboard/login" not in url)

    def wait_for_charts(self) -> None:
        self.page.wait_for_function(
            "() => [...document.querySelectorAll('section.chart')]"
            ".every(s => s.dataset.state === 'drawn')",
            timeout=15_000,
        )

    def hover_tooltip(self, chart: str, fraction: float) -> str:
        overlay = self.page.locator(f"{chart} rect.overlay")
        box = overlay.bounding_box()
        assert box is not None
        self.page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
        tip = self.page.locator(f"{chart} .tooltip")
        tip.wait_for(state="visible", timeout=5_000)
        return str(tip.inner_text())


def _ingest(exp: sm.Experiment, rows: list[tuple[str, int, float, dict[str, Any]]]) -> None:
    exp.ingest(
        [
            {
                "client_event_id": f"{name}/{step}/{meta}",
                "name": name,
                "value": value,
                "step": step,
                "metadata": meta,
            }
            for name, step, value, meta in rows
        ],
        sync=True,
    )


@pytest.fixture
def runs(metrics_server: LocalServer) -> dict[str, Any]:
    """Two runs in a folder (loss in two splits on one, one split on the other), a run
    whose slug, description and metadata carry markup, and another organization's run."""
    session = metrics_server.session()
    folder = sm.Folder.create(XSS_FOLDER, session=session)
    run_a = folder.create_experiment("run-a", metadata={"lr": 0.1})
    run_b = folder.create_experiment("run-b", metadata={"lr": 0.3})
    _ingest(
        run_a,
        [("loss", s, 2.0 * s, {"split": "train"}) for s in range(100)]
        + [("loss", s, 2.0 * s + 1, {"split": "valid"}) for s in range(100)]
        + [("accuracy", s, s / 100, {}) for s in range(100)]
        + [("test_accuracy", 99, 0.875, {})],
    )
    _ingest(run_b, [("loss", s, 3.0 * s, {"split": "train"}) for s in range(100)])
    run_a.start()
    run_a.annotate("checkpoint <em>saved</em>", metadata={"path": XSS_NOTE})
    run_a.finish()
    marked = sm.Experiment.create(
        XSS_SLUG, description=XSS_NOTE, metadata={"note": XSS_NOTE}, session=session
    )
    other = sm.Session(metrics_server.add_organization(), host=metrics_server.url)
    hidden = sm.Experiment.create("other-org-run", session=other)
    other.close()
    return {"a": run_a, "b": run_b, "marked": marked, "other": hidden, "session": session}


def test_login_link_list_experiment_compare(
    tab: Tab, metrics_server: LocalServer, runs: dict[str, Any], tmp_path: Path
) -> None:
    page = tab.page
    tab.sign_in(metrics_server.dashboard_url)
    assert page.url == f"{metrics_server.url}/dashboard/"
    assert page.locator("h1").inner_text() == "All experiments"
    slugs = page.locator("table.runs td.slug a").all_inner_texts()
    assert slugs == [XSS_SLUG, "run-b", "run-a"]  # newest first
    [cookie] = tab.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True,
        "Strict",
        "/dashboard",
    )
    page.screenshot(path=str(tmp_path / "list.png"), full_page=True)

    # The folder tree narrows the list to the folder.
    page.locator("nav.folders").get_by_role("link", name=XSS_FOLDER).click()
    page.wait_for_url(re.compile(r".*\?folder="))
    assert page.locator("table.runs td.slug a").all_inner_texts() == ["run-b", "run-a"]

    page.get_by_role("link", name="run-a", exact=True).click()
    page.wait_for_url(f"**/dashboard/experiments/{runs['a'].id}")
    assert page.url == runs["a"].url
    tab.wait_for_charts()
    assert page.locator("h1.slug").inner_text().startswith("run-a")
    assert page.locator(".status").first.inner_text() == "done"
    loss = 'section.chart[data-metric="loss"]'
    labels = [p.get_attribute("data-label") for p in page.locator(f"{loss} path.series").all()]
    assert labels == ["split=train", "split=valid"]  # one path per series
    assert page.locator('section.chart[data-metric="accuracy"] path.series').count() == 1
    # A metric of one point draws that point as a marker (a line of one point is nothing).
    lone = 'section.chart[data-metric="test_accuracy"]'
    assert page.locator(f"{lone} circle.marker").count() == 1
    assert page.locator(f"{lone} .chart-note").inner_text() == "1 point, drawn as 1"
    assert page.locator(f"{loss} .chart-note").inner_text() == "200 points, drawn as 200"
    text = tab.hover_tooltip(loss, 0.5)
    step = int(re.search(r"step (\d+)", text).group(1))  # type: ignore[union-attr]
    assert f"split=train: {2 * step}\n" in text + "\n"
    assert f"split=valid: {2 * step + 1}\n" in text + "\n"
    assert "checkpoint <em>saved</em>" in page.locator(".annotations").inner_text()
    page.screenshot(path=str(tmp_path / "experiment.png"), full_page=True)

    # The log scale redraws the same series; the values at 0 are left out and said so.
    page.locator(".log-scale").check()
    assert page.locator(f"{loss} path.series").count() == 2
    assert (
        "1 values ≤ 0 left out of the log scale" in page.locator(f"{loss} .chart-note").inner_text()
    )
    page.locator(".log-scale").uncheck()
    # Time on the x axis: a new request, the same points (logged within a few milliseconds
    # of each other, so they share a few slices).
    page.locator(".x-axis").select_option("time")
    page.wait_for_function(
        "() => document.querySelector('section.chart[data-metric=\"loss\"] .tick.x')"
        ".textContent.includes(':')"
    )
    note = page.locator(f"{loss} .chart-note").inner_text()
    assert re.fullmatch(r"200 points, drawn as \d+", note), note

    # Back to the list: tick two runs and compare them.
    page.goto(f"{metrics_server.url}/dashboard/")
    page.get_by_label("compare run-a").check()
    page.get_by_label("compare run-b").check()
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url(re.compile(r".*/dashboard/compare\?experiments=.*"))
    page.wait_for_function("() => document.getElementById('compare').dataset.state === 'ready'")
    slugs = [r["slug"] for r in page.evaluate("window.syvainCompare.state().runs")]
    drawn = {
        c["label"]: sorted(slugs[r] for r in c["runs"])
        for c in page.evaluate("window.syvainCompare.charts()")
    }
    assert drawn == {
        "accuracy": ["run-a"],
        "loss[split=train]": ["run-a", "run-b"],
        "loss[split=valid]": ["run-a"],
        "test_accuracy": ["run-a"],
    }
    overlay = page.locator(".cmp-chart", has_text="loss[split=train]").locator(".cmp-over")
    box = overlay.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)
    page.locator("#cmp-tooltip").wait_for(state="visible")
    text = page.locator("#cmp-tooltip").inner_text()
    step = int(re.search(r"step (\d+)", text).group(1))  # type: ignore[union-attr]
    assert f"run-b: {3 * step}\n" in text + "\n"
    assert f"run-a: {2 * step}\n" in text + "\n"
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert tab.errors == []
    assert all(
        (tmp_path / name).stat().st_size > 0
        for name in ("list.png", "experiment.png", "compare.png")
    )


def test_markup_in_slugs_and_metadata_renders_as_text(
    tab: Tab, metrics_server: LocalServer, runs: dict[str, Any], tmp_path: Path
) -> None:
    page = tab.page
    tab.sign_in(metrics_server.dashboard_link(runs["marked"].url))
    assert page.url == runs["marked"].url
    assert page.locator("h1.slug").inner_text().startswith(XSS_SLUG)
    assert page.locator("h1.slug img").count() == 0
    assert page.locator("table.metadata td").inner_text() == XSS_NOTE
    assert page.locator("p.description").inner_text() == XSS_NOTE
    page.goto(f"{metrics_server.url}/dashboard/")
    assert XSS_SLUG in page.locator("table.runs").inner_text()
    assert XSS_FOLDER in page.locator("nav.folders").inner_text()
    assert page.locator("nav.folders img, table.runs img, main script:not([src])").count() == 0
    assert page.evaluate("window.__xss") is None
    page.screenshot(path=str(tmp_path / "markup.png"), full_page=True)
    assert tab.errors == []


def test_the_content_security_policy_blocks_inline_scripts_and_other_origins(
    tab: Tab, metrics_server: LocalServer, runs: dict[str, Any]
) -> None:
    page = tab.page
    tab.sign_in(metrics_server.dashboard_link(runs["a"].url))
    tab.wait_for_charts()
    assert tab.errors == []
    # Even markup that got into the page could not run: an inline script is refused...
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__inline = 1'; document.body.appendChild(s); }"
    )
    assert page.evaluate("window.__inline") is None
    # ...and so is a request to any other origin (here another port of this machine).
    outcome = page.evaluate(
        "() => fetch('http://127.0.0.1:9/').then(() => 'sent', () => 'refused')"
    )
    assert outcome == "refused"
    refusals = [e for e in tab.errors if "Content Security Policy" in e]
    assert any("inline script" in e for e in refusals), tab.errors
    assert any("Refused to connect" in e for e in refusals), tab.errors


def test_another_organizations_experiment_is_not_found(
    tab: Tab, metrics_server: LocalServer, runs: dict[str, Any]
) -> None:
    page = tab.page
    tab.sign_in(metrics_server.dashboard_url)
    reply = page.goto(runs["other"].url)
    assert reply is not None
    assert reply.status == 404
    assert "other-org-run" not in page.content()
    data = page.request.get(
        f"{metrics_server.url}/dashboard/data/chart?experiments={runs['other'].id}&metric=loss"
    )
    assert data.status == 404
    compare = page.goto(
        f"{metrics_server.url}/dashboard/compare?experiments={runs['a'].id}"
        f"&experiments={runs['other'].id}"
    )
    assert compare is not None
    assert compare.status == 404


def test_pasting_an_api_key_signs_in_and_login_links_work_once(
    tab: Tab, metrics_server: LocalServer, runs: dict[str, Any]
) -> None:
    page = tab.page
    page.goto(runs["a"].url)  # not signed in: the login page, which remembers where to go
    page.wait_for_url(re.compile(r".*/dashboard/login\?next="))
    page.get_by_label("API key").fill("ak_not_a_key_of_this_server")
    page.get_by_role("button", name="Sign in").click()
    assert "does not accept that API key" in page.locator(".notice").inner_text()
    assert tab.context.cookies() == []
    page.get_by_label("API key").fill(metrics_server.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(runs["a"].url)
    assert page.locator("h1.slug").inner_text().startswith("run-a")

    link = metrics_server.dashboard_url
    fresh = Tab(page.context.browser)
    try:
        fresh.sign_in(link)
        assert fresh.page.url == f"{metrics_server.url}/dashboard/"
        again = Tab(page.context.browser)
        try:
            reply = again.page.goto(link)  # the same link a second time
            assert reply is not None
            assert reply.status == 401
            assert "already used" in again.page.locator(".notice").inner_text()
            assert again.context.cookies() == []
        finally:
            again.context.close()
    finally:
        fresh.context.close()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/dashboard/login$"))
    page.goto(runs["a"].url)
    page.wait_for_url(re.compile(r".*/dashboard/login\?next="))


def test_a_large_metric_draws_reduced_and_says_so(
    tab: Tab, metrics_server: LocalServer, tmp_path: Path
) -> None:
    store = metrics_server.store
    org = store.authenticate(metrics_server.api_key).org_id
    exp = wire.experiment(store.create_experiment(org, {"slug": "large"}), metrics_server.url)
    total = 200_000
    for start in range(0, total, 20_000):
        store.ingest(
            org,
            exp["id"],
            [
                {"client_event_id": str(i), "name": "loss", "value": (i % 100) / 100, "step": i}
                for i in range(start, start + 20_000)
            ],
        )
    page = tab.page
    tab.sign_in(metrics_server.dashboard_link(exp["url"]))
    assert page.url == exp["url"]
    tab.wait_for_charts()
    note = page.locator(".chart-note").inner_text()
    found = re.fullmatch(r"200,000 points, drawn as ([\d,]+)", note)
    assert found is not None, note
    drawn = int(found.group(1).replace(",", ""))
    width = page.locator("rect.overlay").bounding_box()["width"]  # type: ignore[index]
    assert drawn <= 2 * round(width) + 2
    assert page.locator("path.series").count() == 1
    # Every slice holds several points, so the tooltip gives its lowest and highest value.
    text = tab.hover_tooltip("section.chart", 0.5)
    assert re.search(r"\(no metadata\): 0 … 0\.99 \(\d+ points\)", text), text
    page.screenshot(path=str(tmp_path / "large.png"), full_page=True)


def test_the_quickstart_prints_a_link_to_the_run_it_made(browser: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not _service_setting(k)}
    env["SYVAIN_METRICS_SPOOL_DIR"] = str(tmp_path / "spool")
    controller, terminal = pty.openpty()  # a terminal on stdin: the example keeps serving
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    os.close(terminal)
    try:
        assert process.stdout is not None
        # Lines come through a thread: select() on a buffered pipe misses lines already read
        # into the buffer (the example flushes its whole output with the link at once).
        received: queue.Queue[str] = queue.Queue()
        stdout = process.stdout

        def read() -> None:
            for line in stdout:
                received.put(line)
            received.put("")  # the end

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 120
        lines: list[str] = []
        link = None
        while link is None and time.monotonic() < deadline:
            try:
                line = received.get(timeout=1.0)
            except queue.Empty:
                continue
            if not line:
                break
            lines.append(line)
            if line.startswith("dashboard: "):
                link = line.removeprefix("dashboard: ").strip()
        if link is None:
            process.kill()
            _, errors = process.communicate(timeout=30)
            pytest.fail(f"no dashboard link in:\n{''.join(lines)}\nstderr:\n{errors}")
        slug = re.search(r"^(quickstart-\S+-lr0\.01): done", "".join(lines), re.M)
        assert slug is not None
        tab = Tab(browser)
        try:
            tab.sign_in(link)
            assert re.fullmatch(
                r"http://127\.0\.0\.1:\d+/dashboard/experiments/[0-9a-f-]+", tab.page.url
            )
            tab.wait_for_charts()
            assert tab.page.locator("h1.slug").inner_text().startswith(slug.group(1))
            assert tab.page.locator("path.series").count() == 2  # loss: train and valid
            assert tab.page.locator(".chart-note").inner_text() == "220 points, drawn as 220"
            tab.page.screenshot(path=str(tmp_path / "quickstart.png"), full_page=True)
        finally:
            tab.context.close()
        os.write(controller, b"\n")
        assert process.wait(timeout=30) == 0
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_link_serve_prints_opens_the_dashboard(tab: Tab, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syvain_metrics.cli",
            "serve",
            "--port",
            "0",
            "--db",
            str(tmp_path / "runs.sqlite"),
            "--api-key",
            "ak_local_browser",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner, printed = process.stdout.readline(), process.stdout.readline()
        origin = re.search(r"at (http://127\.0\.0\.1:\d+)", banner).group(1)  # type: ignore[union-attr]
        link = printed.removeprefix("Dashboard: ").strip()
        assert link.startswith(f"{origin}/dashboard/login?token=")
        with sm.Session("ak_local_browser", host=origin) as session:
            exp = sm.Experiment.create("served-run", session=session)
            _ingest(exp, [("loss", s, 1 / (s + 1), {}) for s in range(50)])
        tab.sign_in(link)
        assert tab.page.url == f"{origin}/dashboard/"
        tab.page.get_by_role("link", name="served-run").click()
        tab.page.wait_for_url(exp.url)
        tab.wait_for_charts()
        assert tab.page.locator("path.series").count() == 1
        assert tab.page.locator(".chart-note").inner_text() == "50 points, drawn as 50"
        tab.page.screenshot(path=str(tmp_path / "served.png"), full_page=True)
        assert tab.errors == []
    finally:
        process.terminate()
        process.wait(timeout=30)
