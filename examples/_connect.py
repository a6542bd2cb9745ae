"""How every example connects: real credentials when they are set, else a local server.

Example:
    >>> with session_for_example() as session:   # doctest: +SKIP
    ...     sm.whoami(session)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import syvain_metrics as sm

if TYPE_CHECKING:
    from syvain_metrics.testing import LocalServer

_started: list[LocalServer] = []
"""The local server an example started (while it runs)."""


@contextmanager
def session_for_example() -> Iterator[sm.Session]:
    """Connect with ``SYVAIN_METRICS_API_KEY`` / ``SYVAIN_METRICS_HOST`` when set; otherwise
    start an in-process local server (the ``local`` extra) on the per-user data file, where
    the runs stay after the example ends, and connect to it."""
    if os.environ.get("SYVAIN_METRICS_API_KEY"):
        session = sm.connect()
        print(f"Using {session.host} (from SYVAIN_METRICS_API_KEY).")
        with session:
            yield session
        return
    from syvain_metrics.testing import LocalServer

    with LocalServer.open() as server:
        print(f"No SYVAIN_METRICS_API_KEY set: using a local server at {server.url}.")
        print(f"Its data stays in {server.db}.")
        session = server.session()
        sm.set_default_session(session)
        _started.append(server)
        try:
            with session:
                yield session
        finally:
            _started.remove(server)


def show_in_dashboard(exp: sm.Experiment) -> None:
    """Print a link to the run's dashboard page. On the local server an example started, it
    is a one-time login link, and from a terminal the server keeps serving until Enter."""
    for server in _started:
        if exp.url.startswith(server.url + "/"):
            print(f"dashboard: {server.dashboard_link(exp.url)}", flush=True)
            if sys.stdin.isatty():
                input("The local server serves the dashboard until you press Enter. ")
            else:
                print("(the local server stops with this script: run it from a terminal to browse)")
            return
    print(f"dashboard: {exp.url}")
