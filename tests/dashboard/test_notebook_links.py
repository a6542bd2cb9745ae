"""The links of a notebook's runs table in a real browser (headless chromium, see
test_browser.py): after one sign-in through the link ``LocalServer`` shows in the notebook,
they open their runs' pages, also from a notebook served by another site (Jupyter at
``localhost:8888`` is not the site of ``127.0.0.1``), where the browser holds the
``SameSite=Strict`` cookie back."""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.dashboard.test_browser import Tab


class Notebook:
    """A stand-in for a notebook server: one page holding a runs table's HTML."""

    def __init__(self, body: str) -> None:
        page = f"<!doctype html><html><body>{body}</body></html>".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def notebook_server() -> Iterator[tuple[LocalServer, sm.Experiment, Notebook]]:
    sm.set_default_session(None)
    server = sm.start_local_server(":memory:")
    exp = sm.Experiment.create("from-the-notebook")
    notebook = Notebook(sm.Experiment.list()._repr_html_())
    try:
        yield server, exp, notebook
    finally:
        notebook.close()
        server.close()


def _sign_in_link(server: LocalServer) -> str:
    found = re.search(r"href='([^']+)'", server._repr_html_())
    assert found is not None
    return html.unescape(found.group(1))


def _click_run_link(tab: Tab, notebook_url: str) -> Any:
    notebook = tab.context.new_page()
    notebook.goto(notebook_url)
    with tab.context.expect_page() as opened:
        notebook.get_by_role("link", name="from-the-notebook").click()
    return opened.value


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["same site", "other site"])
def test_after_one_sign_in_the_runs_table_links_open_their_pages(
    tab: Tab, notebook_server: tuple[LocalServer, sm.Experiment, Notebook], host: str
) -> None:
    server, exp, notebook = notebook_server
    tab.sign_in(_sign_in_link(server))
    page = _click_run_link(tab, f"http://{host}:{notebook.port}/")
    page.wait_for_url(exp.url)
    assert page.locator("h1.slug").inner_text().startswith("from-the-notebook")
    assert page.locator("header .org").inner_text() == "organization Local"
    assert tab.errors == []


def test_without_a_sign_in_a_link_from_another_site_ends_on_the_login_page(
    tab: Tab, notebook_server: tuple[LocalServer, sm.Experiment, Notebook]
) -> None:
    server, exp, notebook = notebook_server
    page = _click_run_link(tab, f"http://localhost:{notebook.port}/")
    page.wait_for_url(re.compile(r".*/dashboard/login\?next="))
    page.locator("input[name=api_key]").wait_for()
    assert page.url == f"{server.url}/dashboard/login?next=/dashboard/experiments/{exp.id}"
