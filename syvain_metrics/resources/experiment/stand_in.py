"""The run a rank other than 0 gets with ``ranks="zero"``: every writing call costs nothing
and sends nothing, so the same training script runs unchanged on every rank.

``Experiment.create()`` returns it on those ranks (see
:mod:`syvain_metrics.client.ranks`): ``log()``, ``ingest()``, ``annotate()``, ``flush()``,
status changes and ``run()`` do nothing (no request, no thread, no spool); what needs the
service (reads, ``url``, ``refresh()``) raises an error that says why.

Example:
    >>> exp = sm.Experiment.create("run-1")  # doctest: +SKIP
    >>> exp                                  # doctest: +SKIP
    <Experiment run-1 (stand-in on rank 3 of 8: only rank 0 writes)>
    >>> exp.log("loss", 0.5, step=0)         # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from syvain_metrics.client.session import Session
from syvain_metrics.errors import MetricsApiError
from syvain_metrics.resources.annotation import Annotation
from syvain_metrics.resources.experiment.base import ExperimentBase
from syvain_metrics.resources.experiment.writing import IngestResult


class StandInRun(ExperimentBase):
    """The writing side of a rank's stand-in run: no-ops, and a clear error for the rest."""

    def _where(self) -> str:
        session = self._session
        if session is None:  # pragma: no cover - always made with a session
            return "a rank other than 0"
        return f"rank {session.rank.rank} of {session.rank.world_size}"

    def _bind(self) -> Session:
        raise MetricsApiError(
            f"Experiment {self.slug!r} is a stand-in on {self._where()}: with "
            'Session(ranks="zero") only rank 0 creates and writes the run, so there is nothing '
            'to read or change here. Read on rank 0, or use ranks="all" (every rank writes '
            "into one experiment, each event tagged with its rank)."
        )

    @property
    def url(self) -> str:
        """Not known on this rank: raises the stand-in's error."""
        self._bind()
        return ""  # pragma: no cover - _bind() raised

    def log(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: only rank 0 writes.

        Example:
            >>> exp.log("loss", 0.5, step=0)  # doctest: +SKIP
        """

    def ingest(self, *args: Any, **kwargs: Any) -> IngestResult:
        """Nothing is sent: only rank 0 writes.

        Example:
            >>> exp.ingest([{"name": "loss", "value": 0.5, "step": 0}])  # doctest: +SKIP
            IngestResult(count=0, requests=0, mode=None)
        """
        return IngestResult(count=0, requests=0, mode=None)

    def flush(self, timeout: float | None = None) -> int:
        """Nothing to wait for: 0.

        Example:
            >>> exp.flush()  # doctest: +SKIP
            0
        """
        return 0

    @property
    def pending_logs(self) -> int:
        """Always 0."""
        return 0

    def annotate(self, text: str, *, metadata: Mapping[str, Any] | None = None) -> Annotation:
        """Nothing is sent: the annotation returned exists here only (no id).

        Example:
            >>> exp.annotate("Checkpoint saved").text  # doctest: +SKIP
            'Checkpoint saved'
        """
        data = {"id": None, "annotation": text, "metadata": dict(metadata or {})}
        return Annotation(data, session=self._session)

    def set_status(
        self,
        status: str,
        *,
        error: BaseException | str | Mapping[str, Any] | None = None,
        timestamp_ms: int | dt.datetime | None = None,
    ) -> Any:
        """Nothing: only rank 0 changes the run's status. Returns the stand-in.

        Example:
            >>> exp.set_status("done")  # doctest: +SKIP
        """
        return self

    def start(self) -> Any:
        """Nothing (see :meth:`set_status`)."""
        return self

    def finish(self) -> Any:
        """Nothing (see :meth:`set_status`)."""
        return self

    def fail(self, error: BaseException | str | Mapping[str, Any] | None = None) -> Any:
        """Nothing (see :meth:`set_status`)."""
        return self

    def resume(self, step: int) -> Any:
        """Nothing (see :meth:`set_status`)."""
        return self

    @property
    def non_finite(self) -> dict[str, int]:
        """Always empty: nothing is logged on this rank."""
        return {}

    def _annotate_later(self, text: str, metadata: Mapping[str, Any]) -> None:
        """Nothing: only rank 0 writes."""

    @contextmanager
    def run(
        self,
        *,
        flush_timeout: float | None = None,
        resume_from: int | None = None,
        system_metrics: bool | float = False,
    ) -> Iterator[Any]:
        """The block runs as it is: no status, no signal handling, nothing to flush, no
        sampler.

        Example:
            >>> with exp.run():  # doctest: +SKIP
            ...     exp.log("loss", 0.5, step=0)
        """
        yield self

    def __repr__(self) -> str:
        return f"<Experiment {self.slug} (stand-in on {self._where()}: only rank 0 writes)>"
