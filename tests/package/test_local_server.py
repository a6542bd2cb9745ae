"""``sm.start_local_server()`` as a notebook uses it: the runs kept in the per-user data
file (in memory only when asked), the running server returned by a second call, several
processes on one file, and a sign-in link after which the runs' links open their pages."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("waitress", reason="the local server needs the 'local' extra")
pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import requests

import syvain_metrics as sm
from syvain_metrics import local_data
from syvain_metrics.testing import LocalServer


@pytest.fixture(autouse=True)
def started() -> Iterator[None]:
    """No default session before the test; every server the test started closed after it."""
    sm.set_default_session(None)
    yield
    from syvain_metrics import testing

    for server in list(testing._started.values()):
        server.close()
    sm.set_default_session(None)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _log_and_finish(slug: str, points: int = 3) -> sm.Experiment:
    exp = sm.Experiment.create(slug)
    with exp.run():
        for step in range(points):
            exp.log("loss", 1.0 / (step + 1), step=step)
    return exp


def _server_threads() -> int:
    return sum(t.name.startswith("syvain-metrics-server:") for t in threading.enumerate())


def test_the_default_keeps_its_runs_in_the_per_user_data_file(local_data_home: Path) -> None:
    server = sm.start_local_server()
    assert server.db == str(local_data_home / "local.sqlite")
    _log_and_finish("kept")
    key_file = local_data_home / "local.sqlite.key"
    assert _mode(key_file) == 0o600
    assert key_file.read_text().strip() == server.api_key
    assert _mode(local_data_home / "local.sqlite") == 0o600
    # The database itself keeps only the key's hash.
    assert server.api_key.encode() not in (local_data_home / "local.sqlite").read_bytes()


def test_the_data_file_follows_xdg_then_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYVAIN_METRICS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert local_data.default_database() == tmp_path / "xdg" / "syvain-metrics" / "local.sqlite"
    server = sm.start_local_server()
    assert server.db == str(tmp_path / "xdg" / "syvain-metrics" / "local.sqlite")
    assert _mode(tmp_path / "xdg" / "syvain-metrics") == 0o700  # made by the SDK: private
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    expected = tmp_path / "me" / ".local" / "share" / "syvain-metrics" / "local.sqlite"
    assert local_data.default_database() == expected


def test_a_second_call_returns_the_running_server_and_its_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = sm.start_local_server()
    _log_and_finish("first-cell")
    threads = _server_threads()
    sm.set_default_session(None)  # whatever happened in between, the call makes it default
    with caplog.at_level(logging.INFO, logger="syvain_metrics"):
        again = sm.start_local_server()
    assert again is server
    assert sm.get_session() is server.default_session
    assert _server_threads() == threads  # no second thread, no second port
    assert "already running at " + server.url in caplog.text
    [exp] = sm.Experiment.list()
    assert (exp.slug, exp.status) == ("first-cell", "done")
    assert [p.value for p in exp.metrics("loss")] == [1.0, 0.5, 1 / 3]


def test_calls_from_many_threads_start_one_server() -> None:
    servers: list[LocalServer] = []
    threads = [
        threading.Thread(target=lambda: servers.append(sm.start_local_server())) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(servers) == 6
    assert len({id(server) for server in servers}) == 1


def test_another_database_starts_another_server(tmp_path: Path) -> None:
    default = sm.start_local_server()
    _log_and_finish("in-default")
    other = sm.start_local_server(tmp_path / "project.sqlite")
    assert other is not default
    assert other.url != default.url
    assert sm.get_session() is other.default_session
    assert sm.Experiment.list() == []
    assert (tmp_path / "project.sqlite.key").exists()
    assert sm.start_local_server() is default  # and its session is the default again
    assert [e.slug for e in sm.Experiment.list()] == ["in-default"]


def test_a_closed_server_is_replaced_and_the_file_keeps_its_runs() -> None:
    first = sm.start_local_server()
    _log_and_finish("before-close")
    first.close()
    with pytest.raises(sm.MetricsApiError, match="No session"):
        sm.get_session()
    second = sm.start_local_server()
    assert second is not first
    assert not second.closed
    assert second.api_key == first.api_key  # the key kept beside the file
    [exp] = sm.Experiment.list()
    assert len(exp.metrics("loss")) == 3


def test_in_memory_only_when_asked_and_then_nothing_is_kept(local_data_home: Path) -> None:
    server = sm.start_local_server(":memory:")
    assert server.db == ":memory:"
    assert "in memory" in server._repr_html_()
    _log_and_finish("forgotten")
    assert sm.start_local_server(":memory:") is server
    server.close()
    assert sm.start_local_server(":memory:").store.path == ":memory:"
    assert sm.Experiment.list() == []
    assert list(local_data_home.iterdir()) == []


def test_another_process_uses_the_same_file_at_the_same_time_and_after(
    local_data_home: Path,
) -> None:
    server = sm.start_local_server()
    _log_and_finish("from-this-kernel")
    script = textwrap.dedent(
        """
        import syvain_metrics as sm
        server = sm.start_local_server()
        print(sorted(e.slug for e in sm.Experiment.list()))
        exp = sm.Experiment.create("from-another-kernel")
        with exp.run():
            for step in range(50):
                exp.log("loss", float(step), step=step)
        server.close()
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for attempt in range(2):  # while this process serves the file, then after it closed it
        done = subprocess.run(
            [sys.executable, "-c", script.replace("from-another-kernel", f"other-{attempt}")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert server.api_key not in done.stdout + done.stderr
        if attempt == 0:
            assert done.stdout.strip() == "['from-this-kernel']"
            # This process reads what the other one wrote, while both serve the file.
            runs = {e.slug: e for e in sm.Experiment.list()}
            assert runs["other-0"].status == "done"
            assert len(runs["other-0"].metrics("loss")) == 50
            server.close()
        else:
            assert done.stdout.strip() == "['from-this-kernel', 'other-0']"


def test_a_lost_key_file_is_a_clear_error_and_the_key_opens_it_again(
    local_data_home: Path,
) -> None:
    server = sm.start_local_server()
    _log_and_finish("locked-away")
    key = server.api_key
    server.close()
    (local_data_home / "local.sqlite.key").unlink()
    with pytest.raises(ValueError, match="keeps its API keys only as hashes: pass one") as error:
        sm.start_local_server()
    assert key not in str(error.value)
    assert not (local_data_home / "local.sqlite.key").exists()  # nothing made up instead
    again = sm.start_local_server(api_key=key)
    assert [e.slug for e in sm.Experiment.list()] == ["locked-away"]
    assert again.api_key == key


def test_neither_repr_nor_the_notebook_view_shows_the_api_key() -> None:
    server = sm.start_local_server()
    html = server._repr_html_()
    assert server.api_key not in repr(server) + str(server) + html
    assert repr(server) == f"<LocalServer {server.url}>"
    assert server.url in html
    assert server.db in html
    server.close()
    assert "closed" in server._repr_html_()
    assert "token=" not in server._repr_html_()


def _sign_in_link(server: LocalServer) -> str:
    found = re.search(r"href='([^']+)'", server._repr_html_())
    assert found is not None
    return found.group(1).replace("&amp;", "&")


def _opens_page(browser: requests.Session, url: str) -> bool:
    reply = browser.get(url, timeout=10)
    assert reply.status_code == 200
    # Not the login page (after a redirect), but the page itself.
    return not reply.history and reply.url == url and 'name="api_key"' not in reply.text


def test_after_the_notebook_sign_in_link_the_runs_table_links_open_their_pages() -> None:
    server = sm.start_local_server()
    exp = _log_and_finish("linked")
    [href] = re.findall(r"href='([^']+)'", sm.Experiment.list()._repr_html_())
    assert href == exp.url
    browser = requests.Session()
    before = browser.get(exp.url, timeout=10)
    assert "/dashboard/login?next=" in before.url  # not signed in yet
    link = _sign_in_link(server)
    assert browser.get(link, timeout=10).status_code == 200
    assert _opens_page(browser, href)
    page = browser.get(href, timeout=10).text
    assert "<h1" in page
    assert "linked" in page
    # The header names the organization (as the API's auth status does); its id is only
    # in the tooltip.
    status = sm.whoami()
    assert status.organization_name == "Local"
    header = page.split("</header>")[0]
    assert (
        f'<span class="org" title="organization id {status.organization_id}">'
        "organization Local</span>"
    ) in header
    # The link is spent: following it again signs nobody in.
    assert requests.get(link, timeout=10).status_code == 401


def test_two_local_servers_on_one_host_keep_their_sign_ins_apart(tmp_path: Path) -> None:
    first = sm.start_local_server()
    first_run = _log_and_finish("on-first")
    second = sm.start_local_server(tmp_path / "second.sqlite")
    second_run = _log_and_finish("on-second")
    browser = requests.Session()  # like a browser, it sends a host's cookies to every port
    browser.get(_sign_in_link(first), timeout=10)
    assert _opens_page(browser, first_run.url)
    # Signed in to the first only: the second does not take its cookie for its own.
    assert "/dashboard/login?next=" in browser.get(second_run.url, timeout=10).url
    browser.get(_sign_in_link(second), timeout=10)
    assert _opens_page(browser, second_run.url)
    assert _opens_page(browser, first_run.url)  # still signed in to the first
    assert len({cookie.name for cookie in browser.cookies}) == 2


def test_in_a_notebook_kernel_the_first_cell_runs_again_and_bars_are_widgets(
    local_data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the 'dev' extra")
    nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the 'dev' extra")
    pytest.importorskip("ipykernel", reason="the notebook tests need the 'dev' extra")
    pytest.importorskip("ipywidgets", reason="the 'progress' extra brings ipywidgets")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # not the user's profile
    cells = [
        "import syvain_metrics as sm\nserver = sm.start_local_server()\nserver",
        "exp = sm.Experiment.create('nb-run')\n"
        "with exp.run():\n"
        "    for step in range(5):\n"
        "        exp.log('loss', 1 / (step + 1), step=step)",
        "again = sm.start_local_server()\nprint(again is server, server.db)",
        "rows = exp.metrics('loss', progress=True)\nprint(len(rows))",
    ]
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(book, timeout=120, kernel_name="python3").execute()
    first, _, again, read = (list(cell.outputs) for cell in book.cells)
    key = (local_data_home / "local.sqlite.key").read_text().strip()  # the kernel's, inherited
    # A kernel under load may add a stream of its own (a startup warning) to the first cell.
    [shown] = [o for o in first if o["output_type"] == "execute_result"]
    assert "/dashboard/login?token=" in shown["data"]["text/html"]
    assert key not in str(book)
    assert [o["text"] for o in again if o.get("name") == "stdout"] == [
        f"True {local_data_home / 'local.sqlite'}\n"
    ]
    # tqdm.auto draws a widget (the 'progress' extra), not "IProgress not found" on stderr.
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in read)
    assert not [o for o in read if o.get("name") == "stderr"]
    assert read[-1]["text"] == "5\n"


def test_a_data_file_of_an_earlier_layout_is_brought_up_to_date(local_data_home: Path) -> None:
    from syvain_metrics.server.store import SCHEMA_VERSION
    from tests.server.test_migrations import KEY, _layout_database, _version

    data = local_data_home / "local.sqlite"
    _layout_database(data, "4")  # as an earlier release left it, its key kept beside it
    (local_data_home / "local.sqlite.key").write_text(KEY + "\n")
    sm.start_local_server()
    assert _version(data) == SCHEMA_VERSION
    assert sorted(e.slug for e in sm.Experiment.list()) == ["old-run", "other"]
