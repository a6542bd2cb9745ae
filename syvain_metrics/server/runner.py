"""Serving the application with waitress (HTTP/1.1 keep-alive, several worker threads).

``make_server`` binds the socket at once (port 0 picks a free port), so the URL is
known before the serving thread starts: no sleeps, no polling.

Example:
    >>> from syvain_metrics.server.app import MetricsApp
    >>> from syvain_metrics.server.store import Store
    >>> server = make_server(MetricsApp(Store()), "127.0.0.1", 0)
    >>> int(server.effective_port) > 0  # waitress reports it as text
    True
    >>> server.close()
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from syvain_metrics.server.app import MetricsApp
from syvain_metrics.server.faults import Faults


class _QuietBrokenAnswers(logging.Filter):
    """waitress warns about every answer shorter than its Content-Length; the fault
    switches do that on purpose, so those warnings are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "too few bytes" not in record.getMessage()


def make_server(
    app: MetricsApp, host: str = "127.0.0.1", port: int = 0, *, threads: int = 8
) -> Any:
    """A bound waitress server for ``app`` (call ``.run()`` to serve).

    ``app.faults.refuse_connections()`` is honoured: a refused connection is closed as
    soon as it is accepted, before any request is read.
    """
    import waitress

    logging.getLogger("waitress").addFilter(_QuietBrokenAnswers())
    server = waitress.create_server(
        app, host=host, port=port, threads=threads, ident="syvain-metrics-local"
    )
    _refuse_when_asked(server, app.faults)
    return server


def _refuse_when_asked(server: Any, faults: Faults) -> None:
    accept = server.handle_accept

    def handle_accept() -> None:
        if faults.take("refuse", "CONNECT", "") is None:
            accept()
            return
        accepted = server.accept()
        if accepted is not None:
            accepted[0].close()

    server.handle_accept = handle_accept


def stop_server(server: Any, thread: threading.Thread | None, faults: Faults) -> None:
    """Stop a server running in ``thread``: end delays, let requests in flight finish,
    then close every connection and wait for the serving loop to return."""
    faults.wake_all()
    # Workers first, while the loop still runs: their last answers get flushed instead
    # of being written to sockets that are already closed.
    server.task_dispatcher.shutdown(timeout=5)

    def close_everything() -> None:
        # Runs inside the serving loop: once its socket map is empty, the loop returns.
        for dispatcher in list(server._map.values()):
            if dispatcher is not server.trigger:
                dispatcher.close()
        server.close()

    if thread is not None and thread.is_alive():
        try:
            server.trigger.pull_trigger(close_everything)
        except OSError:
            # The loop's wake-up pipe is gone (the loop is ending on its own): close here.
            close_everything()
        thread.join(timeout=10)
    else:
        close_everything()
