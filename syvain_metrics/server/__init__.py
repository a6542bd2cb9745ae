"""The local reference server of the Syvain Metrics API: SQLite storage, served by waitress
(one process) or gunicorn workers (``serve --processes N``).

It implements the whole wire contract (``docs/wire-contract.md``, including section 8,
"Local server choices"), so scripts, examples and tests run offline against real
HTTP. Start it with ``syvain-metrics serve`` or ``python -m syvain_metrics.server``,
or in-process with :class:`syvain_metrics.testing.LocalServer`. It also serves read-only
dashboard pages under ``/dashboard/`` (:mod:`syvain_metrics.server.dashboard`). Needs the
``local`` extra (``pip install "syvain-metrics[local]"``).

Example:
    >>> from syvain_metrics.server import MetricsApp, Store
    >>> app = MetricsApp(Store(":memory:"))
    >>> app.store.use_api_keys(["ak_local_demo"])
    ['ak_local_demo']
"""

from __future__ import annotations

try:
    import waitress  # noqa: F401
    import werkzeug  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'The local server needs werkzeug and waitress: pip install "syvain-metrics[local]"'
    ) from error

from syvain_metrics.server.app import ENDPOINTS, MetricsApp
from syvain_metrics.server.faults import Faults
from syvain_metrics.server.runner import make_server, stop_server
from syvain_metrics.server.store import Store

__all__ = ["ENDPOINTS", "Faults", "MetricsApp", "Store", "make_server", "stop_server"]
