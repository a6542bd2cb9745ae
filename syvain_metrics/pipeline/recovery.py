"""Replaying what dead processes left in the spool (``syvain-metrics sync``).

Each batch is sent again with the event ids it was logged with, so events the dead
process had already delivered are not stored twice, and running ``sync`` twice stores
nothing the second time. A batch is removed once the service answered every event in it;
one refused for reasons of credentials or of the experiment (401, 403, 404) is kept, so it
can be replayed later with the right API key.

Example:
    >>> report = sync_spool(Path("/nonexistent"))
    >>> report.batches, report.stored
    (0, 0)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import RejectedEvent
from syvain_metrics.pipeline.batch import Batch
from syvain_metrics.pipeline.delivery import KEEP_STATUSES, deliver
from syvain_metrics.pipeline.spool import claim_leftovers, read_batch

if TYPE_CHECKING:
    from syvain_metrics.session import Session

logger = logging.getLogger("syvain_metrics")


@dataclass
class SyncReport:
    """What a replay did: spools and batches found, events stored, events rejected for good,
    and batches kept for a later try (with why)."""

    spools: int = 0
    batches: int = 0
    stored: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people.

        Example:
            >>> SyncReport(spools=1, batches=2, stored=1500).summary()
            'synced 1500 events from 2 batches in 1 spool(s); 0 rejected; 0 batches kept'
        """
        return (
            f"synced {self.stored} events from {self.batches} batches in {self.spools} "
            f"spool(s); {len(self.rejected)} rejected; {len(self.kept)} batches kept"
        )


class _Deadline:
    """The ``wait`` of a delivery that may retry until a moment, then gives up."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def __call__(self, seconds: float) -> bool:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(seconds, remaining))
        return False


def sync_spool(
    root: Path,
    *,
    api_key: str | None = None,
    host: str | None = None,
    timeout: float = 60.0,
    **session_options: Any,
) -> SyncReport:
    """Upload every batch left under ``root`` by processes that ended, then remove it.

    ``api_key`` / ``host`` default as for a :class:`~syvain_metrics.Session` (the host
    recorded in each spool comes before the environment's). A batch whose delivery keeps
    failing for ``timeout`` seconds is kept, and the replay stops there.

    Example:
        >>> sync_spool(default_root(), api_key="ak_...").summary()  # doctest: +SKIP
        'synced 2500 events from 3 batches in 1 spool(s); 0 rejected; 0 batches kept'
    """
    from syvain_metrics.session import Session

    report = SyncReport()
    sessions: dict[str | None, Session] = {}
    try:
        for leftover in claim_leftovers(root):
            try:
                if not leftover.batch_files:
                    continue
                report.spools += 1
                target = host or leftover.host
                if target not in sessions:
                    sessions[target] = Session(
                        api_key, host=target, spool_dir=None, **session_options
                    )
                if not _replay(sessions[target], leftover.batch_files, timeout, report):
                    break
            finally:
                leftover.release()
    finally:
        for session in sessions.values():
            session.close()
    return report


def _replay(session: Session, paths: list[Path], timeout: float, report: SyncReport) -> bool:
    """Replay one spool's batches in order; False when the service could not be reached."""
    for path in paths:
        try:
            experiment_id, chunks = read_batch(path)
        except (OSError, ValueError, KeyError) as error:
            report.kept.append(f"{path}: unreadable ({error})")
            continue
        report.batches += 1
        outcome = deliver(session, Batch(experiment_id, chunks, path=path), wait=_Deadline(timeout))
        if not outcome.finished:
            report.kept.append(f"{path}: the service did not answer within {timeout:g} s")
            return False
        refused = [r for r in outcome.rejected if r.status_code in KEEP_STATUSES]
        if refused or outcome.keep:
            report.kept.append(f"{path}: {(refused or outcome.rejected)[0].message}")
            continue
        report.stored += outcome.stored
        report.rejected.extend(outcome.rejected)
        path.unlink(missing_ok=True)
    return True
