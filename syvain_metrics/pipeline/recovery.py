"""Replaying what dead processes left in the spool (``syvain-metrics sync``).

Each batch is sent again with the event ids it was logged with, so events the dead
process had already delivered are not stored twice, and running ``sync`` twice stores
nothing the second time. A batch is removed once the service answered every event in it;
one refused for reasons of credentials or of the experiment (401, 403, 404) is kept, so it
can be replayed later with the right API key. A batch that cannot be read whole is never
dropped nor allowed to stop the replay: what is intact is sent, and the file is set aside
(in the spool's ``damaged/`` directory) and reported with the reason.

The replay knows nothing of the session: it is given a function that opens a
:class:`ReplayTarget` (a session is one) when there is something to send;
:func:`syvain_metrics.client.sync.sync_spool` opens a session.

Example:
    >>> report = replay_spools(Path("/nonexistent"), connect=lambda: None)
    >>> report.batches, report.stored
    (0, 0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from syvain_metrics.contract.hosts import normalize_host
from syvain_metrics.errors import MetricsApiError, RejectedEvent
from syvain_metrics.pipeline.batch import Batch
from syvain_metrics.pipeline.control import spool_files
from syvain_metrics.pipeline.control_replay import ControlReplay, is_control_file
from syvain_metrics.pipeline.delivery import KEEP_STATUSES, Uplink, deliver
from syvain_metrics.pipeline.spool import (
    DAMAGED,
    claim_leftovers,
    drop_if_empty,
    set_aside_noted,
)
from syvain_metrics.pipeline.spool_files import DamagedBatchError, load_batch

logger = logging.getLogger("syvain_metrics")


@dataclass
class SyncReport:
    """What a replay did: spools and batches found, events stored, events rejected for good,
    batches kept for a later try (with why), batches set aside as damaged (with why), spools
    recorded for another host and left alone, other users' spools ignored, batches set
    aside by earlier runs, empty batch files removed (created by a process killed before it
    wrote anything: no event was in them), and control records applied (creations, status
    changes, annotations: :mod:`~syvain_metrics.pipeline.control_replay`)."""

    spools: int = 0
    batches: int = 0
    stored: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    other_hosts: list[str] = field(default_factory=list)
    other_owners: list[str] = field(default_factory=list)
    set_aside_before: int = 0
    set_aside_where: list[str] = field(default_factory=list)
    controls: int = 0
    emptied: int = 0

    @property
    def complete(self) -> bool:
        """Whether every event found was stored: nothing rejected, kept, damaged or left for
        another host (other users' spools are none of this user's business).

        Example:
            >>> SyncReport(stored=3).complete, SyncReport(damaged=["b-1: line 2"]).complete
            (True, False)
        """
        return not (self.rejected or self.kept or self.damaged or self.other_hosts)

    def summary(self) -> str:
        """One line for people (the counts that are zero after "kept" are left out).

        Example:
            >>> SyncReport(spools=1, batches=2, stored=1500).summary()
            'synced 1500 events from 2 batches in 1 spool(s); 0 rejected; 0 batches kept'
            >>> SyncReport(spools=1, batches=1, damaged=["..."]).summary()
            'synced 0 events from 1 batches in 1 spool(s); 0 rejected; 0 batches kept; 1 damaged (set aside)'
        """
        line = (
            f"synced {self.stored} events from {self.batches} batches in {self.spools} "
            f"spool(s); {len(self.rejected)} rejected; {len(self.kept)} batches kept"
        )
        for count, what in (
            (self.controls, "creation(s), status change(s) and annotation(s) applied"),
            (len(self.damaged), "damaged (set aside)"),
            (len(self.other_hosts), "spool(s) of another host skipped"),
            (len(self.other_owners), "spool(s) of other users ignored"),
            (self.set_aside_before, "damaged batches set aside before"),
            (self.emptied, "empty batch file(s) removed"),
        ):
            if count:
                line += f"; {count} {what}"
        return line


class ReplayTarget(Protocol):
    """What a replay sends through: the service's origin, an uplink to it, and a close."""

    @property
    def host(self) -> str:
        """The service origin (``https://...``) the batches go to."""
        ...

    @property
    def uplink(self) -> Uplink:
        """Sends one batch once, and paces the retries."""
        ...

    def close(self) -> None:
        """Release the connections."""
        ...


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


def replay_spools(
    root: Path,
    *,
    connect: Callable[[], ReplayTarget],
    timeout: float = 60.0,
    other_hosts: bool = False,
) -> SyncReport:
    """Upload every batch left under ``root`` by this user's processes that ended, then
    remove it, through the target ``connect`` opens (once, at the first batch found).

    Events go to the target's host only. A spool recorded for another host (or none) is
    skipped and reported, unless ``other_hosts`` says to send it to this host all the same;
    another user's spool is ignored and reported. A batch that cannot be read whole is set
    aside in its spool's ``damaged/`` directory (after its intact events are sent) and
    reported. A batch whose delivery keeps failing for ``timeout`` seconds is kept, and the
    replay stops there.

    Example:
        >>> replay_spools(default_root(), connect=open_session).summary()  # doctest: +SKIP
        'synced 2500 events from 3 batches in 1 spool(s); 0 rejected; 0 batches kept'
    """
    report = SyncReport()
    session: ReplayTarget | None = None
    controls: ControlReplay | None = None

    def ignored(directory: Path, why: str) -> None:
        report.other_owners.append(f"{directory}: {why}")

    try:
        for leftover in claim_leftovers(root, skipped=ignored):
            try:
                earlier = len(leftover.set_aside)
                if earlier:
                    report.set_aside_before += earlier
                    report.set_aside_where.append(
                        f"{leftover.directory / DAMAGED}: {earlier} batch(es) set aside by an "
                        "earlier sync, with the reason beside each; delete them once looked at"
                    )
                files = spool_files(leftover.directory)
                if not files:
                    continue
                if session is None:
                    session = connect()
                if controls is None:
                    uplink = session.uplink
                    controls = ControlReplay(
                        root, apply=uplink.control, policy=uplink.policy, timeout=timeout
                    )
                recorded = _origin(leftover.host)
                if recorded != session.host and not other_hosts:
                    report.other_hosts.append(
                        f"{leftover.directory}: recorded for {recorded or 'no readable host'}, "
                        f"not {session.host} ({len(files)} files left as they "
                        "are; `--host` names the service to send them to, `--other-hosts` "
                        "sends them to this one)"
                    )
                    continue
                report.spools += 1
                controls.own(leftover.directory)
                done = _replay(session, files, timeout, report, controls)
                controls.tidy(leftover.directory)
                if not done:
                    break
            finally:
                leftover.release()
    finally:
        if session is not None:
            session.close()
    return report


def _origin(host: str | None) -> str | None:
    """A recorded host, compared as the session compares its own."""
    if host is None:
        return None
    try:
        return normalize_host(host)
    except MetricsApiError:
        return host


def _replay(
    session: ReplayTarget,
    paths: list[Path],
    timeout: float,
    report: SyncReport,
    controls: ControlReplay,
) -> bool:
    """Replay one spool's batches and control records in order; False when the service
    could not be reached."""
    for path in paths:
        if is_control_file(path):
            if not controls.replay_file(path, report):
                return False
            continue
        if _drop_empty(path, report):
            continue
        try:
            batch = load_batch(path)
        except DamagedBatchError as error:
            report.batches += 1
            set_aside_noted(path, str(error), report.damaged)
            continue
        except OSError as error:
            report.kept.append(f"{path}: cannot be read ({error.strerror or error})")
            continue
        report.batches += 1
        if batch.chunks:
            target = controls.address(batch.experiment_id, path, report)
            if target is None:  # its run could not be created (reported)
                if controls.unreachable:
                    return False
                continue
            outcome = deliver(
                session.uplink,
                Batch(target, batch.chunks, path=path),
                wait=_Deadline(timeout),
            )
            if not outcome.finished:
                report.kept.append(f"{path}: the service did not answer within {timeout:g} s")
                return False
            refused = [r for r in outcome.rejected if r.status_code in KEEP_STATUSES]
            if refused or outcome.keep:
                report.kept.append(f"{path}: {(refused or outcome.rejected)[0].message}")
                continue
            report.stored += outcome.stored
            report.rejected.extend(outcome.rejected)
        if batch.damage:
            sent = sum(chunk.size for chunk in batch.chunks)
            set_aside_noted(
                path, f"{'; '.join(batch.damage)} ({sent} intact events sent)", report.damaged
            )
        else:
            path.unlink(missing_ok=True)
    return True


def _drop_empty(path: Path, report: SyncReport) -> bool:
    """Remove a batch file the dead process created but never wrote to (zero bytes): it held
    no event, so it is neither damage nor something to keep."""
    if not drop_if_empty(path):
        return False
    report.emptied += 1
    return True
