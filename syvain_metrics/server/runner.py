"""Serving the application with waitress (HTTP/1.1 keep-alive, several worker threads).

``make_server`` binds the socket at once (port 0 picks a free port), so the URL is
known before the serving thread starts: no sleeps, no polling. Connections are bounded
as :mod:`syvain_metrics.server.limits` says (how many, how many per client, how long a
request's head and body may take to arrive, how long one may stay idle, how large a body
waitress receives; see :mod:`~syvain_metrics.server.connections`), requests whose framing is
in doubt are refused (:mod:`~syvain_metrics.server.framing`), and the answers waitress writes
itself (a malformed request, headers too large) are in the contract's envelope like every
other.

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
import resource
import threading
from typing import Any

from syvain_metrics.server.app import MetricsApp
from syvain_metrics.server.faults import Faults
from syvain_metrics.server.limits import (
    BODY_TIMEOUT_S,
    CLEANUP_INTERVAL_S,
    CONNECTION_LIMIT,
    CONNECTIONS_PER_CLIENT,
    HEAD_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    MAX_BODY_BYTES,
)

RECEIVED_BODY_LIMIT = 16 * MAX_BODY_BYTES
"""Bodies up to this size are received whole (waitress keeps them in a temporary file past
512 KB, not in memory) so the application answers its own 413 while the client still reads;
a larger one is cut off as soon as its headers say so."""

SERVE_SWITCH_INTERVAL_S = 0.0001
"""Python's thread switch interval in a ``syvain-metrics serve`` process (the default is
5 ms). The thread that writes a batch calls into SQLite about fifteen times, without the
global lock each time, and must take the lock back after each call; while another thread
parses a request, that wait can last until the parser's interval ends, so at 5 ms one
write can stretch across many of them while other requests wait for the write lock (a
loop of SQLite inserts ran 8-9x slower next to one busy thread at 5 ms, 1.5x at 0.1 ms).
An embedded :class:`~syvain_metrics.testing.LocalServer` leaves its host process's setting
alone."""


class _QuietBrokenAnswers(logging.Filter):
    """waitress warns about every answer shorter than its Content-Length; the fault
    switches do that on purpose, so those warnings are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "too few bytes" not in record.getMessage()


def connection_limit() -> int:
    """:data:`CONNECTION_LIMIT`, or fewer when the process may not open that many files (each
    connection can take up to three descriptors).

    Example:
        >>> 0 < connection_limit() <= CONNECTION_LIMIT
        True
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return CONNECTION_LIMIT
    return max(16, min(CONNECTION_LIMIT, (soft - 64) // 3))


def make_server(
    app: MetricsApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    threads: int = 8,
    idle_timeout: int = IDLE_TIMEOUT_S,
    connections: int | None = None,
    head_timeout: int = HEAD_TIMEOUT_S,
    body_timeout: int = BODY_TIMEOUT_S,
    per_client: int | None = None,
) -> Any:
    """A bound waitress server for ``app`` (call ``.run()`` to serve).

    ``idle_timeout``, ``head_timeout``, ``body_timeout`` (whole seconds), ``connections``
    (default :func:`connection_limit`) and ``per_client`` (connections of one client address,
    default :data:`~.limits.CONNECTIONS_PER_CLIENT` or ``connections`` if fewer; not applied
    to ``app.trusted_proxies``) are there for tests of the limits; the defaults are the local
    server's choices.
    ``app.faults.refuse_connections()`` is honoured: a refused connection is closed as
    soon as it is accepted, before any request is read.
    """
    from waitress.adjustments import Adjustments

    from syvain_metrics.server.connections import GuardedServer

    logging.getLogger("waitress").addFilter(_QuietBrokenAnswers())
    limit = connections or connection_limit()
    adjustments = Adjustments(
        host=host,
        port=port,
        threads=threads,
        ident="syvain-metrics-local",
        connection_limit=limit,
        channel_timeout=idle_timeout,
        cleanup_interval=min(CLEANUP_INTERVAL_S, idle_timeout, head_timeout, body_timeout),
        max_request_body_size=RECEIVED_BODY_LIMIT,
        asyncore_use_poll=True,  # select() cannot watch descriptors past 1024
        # waitress drops X-Forwarded-* headers unless told otherwise; with trusted proxies
        # configured, the application believes them from those peers only.
        clear_untrusted_proxy_headers=not app.trusted_proxies,
    )
    server = GuardedServer(
        app,
        adjustments,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
        per_client=min(per_client or CONNECTIONS_PER_CLIENT, limit),
        trusted_proxies=app.trusted_proxies,
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
