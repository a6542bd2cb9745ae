"""What every part of an experiment shares: its wire fields and friendly views.

The operations live in small mixins, one idea each (writing metrics, reading them,
annotations, ingestion keys, the catalog), combined by :class:`~syvain_metrics.Experiment`
(whose ``run()`` turns SIGTERM into a recorded end: ``termination.py``).

Example:
    >>> exp = ExperimentBase({"id": "e1", "slug": "run-1", "url": "/dashboard/experiments/e1"},
    ...                      session=None)
    >>> exp.slug, exp.url
    ('run-1', '/dashboard/experiments/e1')
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from syvain_metrics.contract.limits import SLUG_MAX
from syvain_metrics.errors import RunFinishedError
from syvain_metrics.resources.base import Resource, ms_time, wire
from syvain_metrics.resources.folder import Folder
from syvain_metrics.tables.display import flatten

if TYPE_CHECKING:
    from syvain_metrics.client.session import Session

_TRAILING = ("id",)
"""Columns after the metadata ones in a runs table (a metadata key of that name is
prefixed with ``metadata.``)."""

FINISHED = ("done", "error")
"""The statuses of a run that has finished: new logging into it is refused (see
:func:`finished_error`)."""


def finished_error(slug: str, status: str) -> RunFinishedError:
    """The refusal of new logging into a finished run, naming the choices with its slug.

    Example:
        >>> print(finished_error("sgd-0.1", "done"))  # doctest: +NORMALIZE_WHITESPACE
        Run 'sgd-0.1' has already finished (done). Logging the same code into it again would
        store every value twice. Choose one: a new run: sm.Experiment.create('sgd-0.1-2', ...);
        continue it: run.run(resume_from=<step>); or log it again from the start and let
        readers see only the newest values: run.run(resume_from=0) and read with
        last_per_step=True (the value logged last at each step; steps not logged again keep
        their old values).
    """
    new = slug[: SLUG_MAX - 2] + "-2"  # a slug at its longest still gets one
    return RunFinishedError(
        f"Run {slug!r} has already finished ({status}). Logging the same code into it again "
        "would store every value twice. Choose one: a new run: "
        f"sm.Experiment.create({new!r}, ...); continue it: run.run(resume_from=<step>); or "
        "log it again from the start and let readers see only the newest values: "
        "run.run(resume_from=0) and read with last_per_step=True (the value logged last at "
        "each step; steps not logged again keep their old values).",
        slug=slug,
        status=status,
    )


class ExperimentBase(Resource):
    """An experiment's wire fields; ``created_at`` and friends are aware datetimes and
    ``folder`` is a :class:`Folder` or ``None``."""

    _repr_fields = ("slug", "status")
    _changes_hint = (
        "change the status with exp.start(), exp.finish(), exp.fail() or exp.set_status(), "
        "the folder with exp.move(folder); the API cannot change a slug, description or "
        "metadata once the experiment exists (create another experiment instead)."
    )

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
    _log_id: str
    """The id this run's ``log()`` events, waits and control records carry in its session:
    the placeholder of a run created while the service could not be reached (for the
    session's whole life: its earlier events carry it), else its id. A plain attribute:
    ``log()`` reads it on every call."""
    created_at = ms_time("created_at_ms")
    updated_at = ms_time("updated_at_ms")
    started_at = ms_time("started_at_ms")
    done_at = ms_time("done_at_ms")
    last_heartbeat_at = ms_time("last_heartbeat_at_ms")
    last_event_at = ms_time("last_event_at_ms")

    _arrived_finished: bool
    """Whether this object came from the service finished (``done`` or ``error``) and this
    process has not entered the run since: ``log()`` refuses it. A run this process ended
    itself takes more values (an evaluation after ``run()``). A plain attribute: ``log()``
    reads it on every call."""

    def __init__(self, data: Mapping[str, Any], *, session: Session | None) -> None:
        super().__init__(data, session=session)
        self._log_id = self._data.get("id", "")
        self._arrived_finished = self._data.get("status") in FINISHED

    def _update(self, data: Mapping[str, Any]) -> None:
        known = "status" in self._data
        super()._update(data)
        if not known:  # ``Experiment.get``: the object's first look at the run
            self._arrived_finished = self._data.get("status") in FINISHED

    def _refuse_finished(self) -> None:
        """Raise :class:`~syvain_metrics.RunFinishedError` when the run has finished, as
        this object knows it (from the service, or because this process ended it). Only
        the process that owns the run's status (rank 0 of a job) is refused: the other
        ranks of a job log into the run rank 0 may already have ended."""
        status = self._data.get("status")
        if status in FINISHED and self._bind().is_main_process:
            raise finished_error(self.slug, str(status))

    def _refuse_log(self) -> None:
        """``log()`` into a run that came finished and was not entered since: refused (on
        rank 0 of a job only, as :meth:`_refuse_finished`)."""
        status = self._data.get("status")
        if status in FINISHED and self._bind().is_main_process:
            raise finished_error(self.slug, str(status))
        self._arrived_finished = False  # resumed elsewhere since, or not rank 0

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

    def _frame_row(self) -> dict[str, Any]:
        started, done = self.started_at, self.done_at
        row: dict[str, Any] = {
            "slug": self.slug,
            "status": self.status,
            "folder": None if self.folder is None else self.folder.path_name,
            "created": self.created_at,
            "started": started,
            "done": done,
            "duration": done - started if started and done else None,
            "description": self.description,
            "error": self.error_name,
        }
        for key, value in flatten(self.metadata or {}).items():
            row[f"metadata.{key}" if key in row or key in _TRAILING else key] = value
        row["id"] = self.id
        return row

    def _html_title(self) -> str:
        return f"Experiment {self.slug}"

    def _html_links(self) -> dict[str, str]:
        return {"slug": self.url} if self._data.get("url") else {}

    def _repr_html_(self) -> str:
        table = super()._repr_html_()
        if not self._data.get("url"):
            return table
        link = html.escape(self.url, quote=True)
        return f"{table}<p><a href='{link}' target='_blank'>Open in the dashboard</a></p>"

    def _settle_logs(self) -> None:
        """Before a read: wait (up to the session's ``timeout``) for this experiment's pending
        ``log()`` events, so the read sees what was logged before it."""
        session = self._bind()
        session.logs.settle([self._log_id], session.timeout)
