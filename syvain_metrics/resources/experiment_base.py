"""What every part of an experiment shares: its wire fields and friendly views.

The operations live in small mixins, one idea each (writing metrics, reading them,
annotations, ingestion keys, the catalog), combined by :class:`~syvain_metrics.Experiment`.

Example:
    >>> exp = ExperimentBase({"id": "e1", "slug": "run-1", "url": "/dashboard/experiments/e1"},
    ...                      session=None)
    >>> exp.slug, exp.url
    ('run-1', '/dashboard/experiments/e1')
"""

from __future__ import annotations

from typing import Any

from syvain_metrics.resources.base import Resource, ms_time, wire
from syvain_metrics.resources.folder import Folder


class ExperimentBase(Resource):
    """An experiment's wire fields; ``created_at`` and friends are aware datetimes and
    ``folder`` is a :class:`Folder` or ``None``."""

    _repr_fields = ("slug", "status")

    id = wire[str]()
    org_id = wire[str]()
    slug = wire[str]()
    description = wire[str]()
    metadata = wire[dict[str, Any]]()
    status = wire[str]()
    error_name = wire["str | None"]()
    error_detail = wire["str | None"]()
    created_at_ms = wire[int]()
    updated_at_ms = wire[int]()
    started_at_ms = wire["int | None"]()
    done_at_ms = wire["int | None"]()
    last_heartbeat_at_ms = wire["int | None"]()
    last_event_at_ms = wire["int | None"]()
    created_at = ms_time("created_at_ms")
    updated_at = ms_time("updated_at_ms")
    started_at = ms_time("started_at_ms")
    done_at = ms_time("done_at_ms")
    last_heartbeat_at = ms_time("last_heartbeat_at_ms")
    last_event_at = ms_time("last_event_at_ms")

    @property
    def url(self) -> str:
        """The dashboard page, always absolute."""
        url: str = self._data["url"]
        if url.startswith("/") and self._session is not None:
            return f"{self._session.host}{url}"
        return url

    def open(self) -> str:
        """Open the experiment's dashboard page (:attr:`url`) in a web browser; returns the URL
        (also when no browser could be started, e.g. on a server without a screen).

        Example:
            >>> exp.open()  # doctest: +SKIP
            'http://127.0.0.1:8765/dashboard/experiments/0f8e2c1a-...'
        """
        import webbrowser

        url = self.url
        webbrowser.open(url)
        return url

    @property
    def folder(self) -> Folder | None:
        """The folder holding this experiment, or ``None`` at the root."""
        raw = self._data.get("folder")
        return None if raw is None else Folder(raw, session=self._session)

    def _settle_logs(self) -> None:
        """Before a read: wait (up to the session's ``timeout``) for this experiment's pending
        ``log()`` events, so the read sees what was logged before it."""
        session = self._bind()
        session.logs.settle([self.id], session.timeout)
