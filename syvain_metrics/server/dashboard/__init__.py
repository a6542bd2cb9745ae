"""The local server's dashboard: pages under ``/dashboard/`` for folders, runs, charts and
comparisons, read from the same store as the API, for a browser signed in with an API key.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> Dashboard(Store()).access.organization(None) is None
    True
"""

from __future__ import annotations

from syvain_metrics.server.dashboard.web import Dashboard

__all__ = ["Dashboard"]
