"""Control records in ``syvain-metrics sync``: creations, status changes and annotations
that dead (or offline) processes left in their spools, applied in the order they happened,
among the batches of events (:mod:`~syvain_metrics.pipeline.recovery` walks a spool's files
by number and hands the records here).

- A creation is applied once (its ``Idempotency-Key``, and with ``exist_ok`` the slug, make
  a second try find the same run); the batches and records carrying its placeholder id are
  then sent to the real id. A creation already applied by the process that made it carries
  the real id in its file, and costs no request.
- A batch of a run created in another spool (a forked child's events, its parent's
  creation) finds the creation among every spool's records (read once, at the start).
- A record applied is removed; a creation is removed once no batch of its run is left
  anywhere under the root. A refusal about the run or the credentials keeps the record for
  a later ``sync``; a refusal of its content removes it and is reported as rejected.

Example:
    >>> replay = ControlReplay(Path("/nonexistent"), apply=None, policy=None, timeout=1.0)
    >>> replay.creates
    {}
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Protocol

from syvain_metrics.errors import MetricsApiError, MetricsApiRequestError, RejectedEvent
from syvain_metrics.pipeline.control import (
    ControlRecord,
    DamagedRecordError,
    batches_of,
    is_pending_id,
    read_record,
    rewrite_record,
)
from syvain_metrics.pipeline.delivery import KEEP_STATUSES, ApplyControl, DeliveryPolicy
from syvain_metrics.pipeline.spool import CONTROL_GLOB, set_aside_noted

logger = logging.getLogger("syvain_metrics")


class Report(Protocol):
    """Where the replay says what it did (a :class:`~syvain_metrics.pipeline.recovery.SyncReport`)."""

    kept: list[str]
    damaged: list[str]
    rejected: list[RejectedEvent]
    controls: int


def is_control_file(path: Path) -> bool:
    """Whether ``path`` names a control record of a spool.

    Example:
        >>> is_control_file(Path("c-000000003.json")), is_control_file(Path("b-1.jsonl"))
        (True, False)
    """
    return path.match(CONTROL_GLOB)


def find_creates(root: Path) -> dict[str, ControlRecord]:
    """Every readable creation under ``root`` (every spool, children's included), by
    placeholder id.

    Example:
        >>> find_creates(Path("/nonexistent"))
        {}
    """
    found: dict[str, ControlRecord] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob(CONTROL_GLOB)):
        with contextlib.suppress(OSError, DamagedRecordError):
            record = read_record(path)
            if record.kind == "create" and is_pending_id(record.experiment_id):
                found.setdefault(record.experiment_id, record)
    return found


class ControlReplay:
    """The control records' side of one ``sync`` (see the module docstring).

    ``apply`` sends a record once (``None``: records are kept, unsent), ``policy`` paces the
    tries of one record within ``timeout`` seconds; ``unreachable`` turns true when the
    service did not answer a record in time (the replay stops there).
    """

    def __init__(
        self,
        root: Path,
        *,
        apply: ApplyControl | None,
        policy: DeliveryPolicy | None,
        timeout: float,
    ) -> None:
        self.root = root
        self.creates = find_creates(root)
        self.resolved = {
            key: record.resolved_id
            for key, record in self.creates.items()
            if record.resolved_id is not None
        }
        self._apply_once = apply
        self._policy = policy
        self._timeout = timeout
        self._refused: dict[str, str] = {}
        self._owned: set[Path] = set()
        self.unreachable = False

    def own(self, directory: Path) -> None:
        """Record files in ``directory`` may be rewritten and removed: its spool is claimed."""
        self._owned.add(directory)

    # -- addressing batches -------------------------------------------------------------------

    def address(self, experiment_id: str, path: Path, report: Report) -> str | None:
        """The id a batch of ``experiment_id`` goes to; ``None`` (and the batch reported as
        kept) when its run cannot be created now."""
        if not is_pending_id(experiment_id):
            return experiment_id
        real = self.resolved.get(experiment_id)
        if real is not None:
            return real
        why = self._refused.get(experiment_id)
        record = self.creates.get(experiment_id)
        if why is None and record is None:
            why = "the record of its run's creation is missing from the spool"
        if why is None and record is not None:
            if self.unreachable:
                why = "the service did not answer its run's creation"
            else:
                self._apply(record, report)
                real = self.resolved.get(experiment_id)
                if real is not None:
                    return real
                why = self._refused.get(experiment_id, "its run could not be created")
        report.kept.append(f"{path}: {why}")
        return None

    # -- records in a spool's order --------------------------------------------------------------

    def replay_file(self, path: Path, report: Report) -> bool:
        """Apply the record in ``path`` (in its turn among the batches); False when the
        service did not answer, and the replay should stop."""
        try:
            record = read_record(path)
        except DamagedRecordError as error:
            set_aside_noted(path, str(error), report.damaged)
            return True
        except OSError as error:
            report.kept.append(f"{path}: cannot be read ({error.strerror or error})")
            return True
        if record.kind == "create":
            known = self.creates.setdefault(record.experiment_id, record)
            if record.resolved_id is not None:
                self.resolved.setdefault(record.experiment_id, record.resolved_id)
            elif record.experiment_id not in self.resolved and record.experiment_id not in (
                self._refused
            ):
                known.path = path
                self._apply(known, report)
            return not self.unreachable
        target = self.address(record.experiment_id, path, report)
        if target is None:
            return not self.unreachable
        self._apply(record, report, target)
        return not self.unreachable

    def _apply(self, record: ControlRecord, report: Report, target: str | None = None) -> None:
        if self._apply_once is None or self._policy is None:  # pragma: no cover - a session has one
            report.kept.append(f"{record.path}: no way to send the {record.describe()}")
            return
        deadline = time.monotonic() + self._timeout
        failures = 0
        while True:
            try:
                data = self._apply_once(record, target)
                break
            except MetricsApiRequestError as error:
                if not error.retryable:
                    self._refuse(record, error.status_code, str(error), report)
                    return
                pause = self._policy.delivery_wait(failures, error.retry_after)
            except MetricsApiError:
                pause = self._policy.delivery_wait(failures)
            failures += 1
            if time.monotonic() + pause > deadline:
                self.unreachable = True
                report.kept.append(
                    f"{record.path}: the service did not answer the {record.describe()} "
                    f"within {self._timeout:g} s"
                )
                return
            time.sleep(pause)
        report.controls += 1
        if record.kind == "create":
            record.resolved_id = str(data["id"])
            self.resolved[record.experiment_id] = record.resolved_id
            if record.path is not None and record.path.parent in self._owned:
                with contextlib.suppress(OSError):
                    rewrite_record(record.path, record)  # its batches may be kept for later
        elif record.path is not None:
            record.path.unlink(missing_ok=True)

    def _refuse(
        self, record: ControlRecord, status: int | None, message: str, report: Report
    ) -> None:
        if record.kind == "create":
            self._refused[record.experiment_id] = f"its run could not be created: {message}"
        if status in KEEP_STATUSES or record.kind == "create":
            report.kept.append(f"{record.path}: {message}")
            return
        report.rejected.append(RejectedEvent({"name": record.describe()}, message, status))
        if record.path is not None and record.path.parent in self._owned:
            record.path.unlink(missing_ok=True)

    def tidy(self, directory: Path) -> None:
        """Remove the creations in ``directory`` (a claimed spool) that were applied and whose
        runs have no batch left under the root."""
        for key, record in self.creates.items():
            path = record.path
            if key not in self.resolved or path is None or path.parent != directory:
                continue
            if directory in self._owned and not batches_of(self.root, key):
                path.unlink(missing_ok=True)
