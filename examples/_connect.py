"""How every example connects: real credentials when they are set, else a local server.

Example:
    >>> with session_for_example() as session:   # doctest: +SKIP
    ...     sm.whoami(session)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import syvain_metrics as sm


@contextmanager
def session_for_example() -> Iterator[sm.Session]:
    """Connect with ``SYVAIN_METRICS_API_KEY`` / ``SYVAIN_METRICS_HOST`` when set; otherwise
    start an in-process local server (the ``local`` extra) and connect to it."""
    if os.environ.get("SYVAIN_METRICS_API_KEY"):
        session = sm.connect()
        print(f"Using {session.host} (from SYVAIN_METRICS_API_KEY).")
        with session:
            yield session
        return
    from syvain_metrics.testing import LocalServer

    with LocalServer() as server:
        print(f"No SYVAIN_METRICS_API_KEY set: using a local server at {server.url}.")
        session = server.session()
        sm.set_default_session(session)
        with session:
            yield session
