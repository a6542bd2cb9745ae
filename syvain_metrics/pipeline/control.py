"""Control records: the calls other than ingest that travel through the spool with a run's
``log()`` events, and are applied by the sender, or by ``syvain-metrics sync`` after the
process ended.

Three kinds, each one request of the contract, sent with an ``Idempotency-Key`` chosen when
the record is made (so applying it twice, by the sender then by ``sync``, changes nothing):

- ``create``: create an experiment (op 7); with ``exist_ok`` a taken slug means "that one".
  Its ``experiment_id`` is a placeholder (:func:`new_pending_id`) that events and the other
  records of the run carry until the service gives the real id (``resolved_id``); a
  placeholder never reaches the wire.
- ``status``: a status change (op 9), with the ``timestamp_ms`` of the moment it happened,
  so applying it later records the true time.
- ``annotation``: an annotation (op 20), with its text and metadata.

A record is applied once every event of its experiment logged before it has an answer, and
after the records of that experiment made before it: a run's final ``done`` follows its
events. In the spool each record is a file of its own, ``c-<number>.json``, numbered in
the same sequence as the batch files (``b-<number>.jsonl``), so the order of a spool's files
is the order things happened; its one line carries the CRC-32 of the rest, like batch lines.

Example:
    >>> record = ControlRecord.status("exp-1", "done", None, timestamp_ms=5)
    >>> ControlRecord.from_line(record.to_line()).body
    {'status': 'done', 'timestamp_ms': 5}
    >>> is_pending_id(new_pending_id()), is_pending_id("0f8e2c1a-5b6c-4d7e-8f90-a1b2c3d4e5f6")
    (True, False)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from syvain_metrics.pipeline.batch import new_idempotency_key
from syvain_metrics.pipeline.spool import BATCH_GLOB, CONTROL_GLOB
from syvain_metrics.pipeline.spool_files import checked_line

PENDING_PREFIX = "pending-"
"""How a placeholder id starts: ``p``, ``n`` and ``g`` are not hex digits, so it can never
be taken for a UUID (or any id the service hands out in that form)."""


_NUMBERED = re.compile(r"[bc]-(\d+)\.jsonl?")
_CHECKED = re.compile(rb"([0-9a-f]{8}) (.*)", re.DOTALL)

Kind = Literal["create", "status", "annotation"]
KINDS: tuple[Kind, ...] = ("create", "status", "annotation")


def new_pending_id() -> str:
    """A placeholder experiment id for a run whose creation waits in the spool.

    Example:
        >>> new_pending_id().startswith("pending-")
        True
    """
    return PENDING_PREFIX + os.urandom(16).hex()


def is_pending_id(value: object) -> bool:
    """Whether ``value`` is a placeholder id (see :func:`new_pending_id`).

    Example:
        >>> is_pending_id("pending-00"), is_pending_id(None)
        (True, False)
    """
    return isinstance(value, str) and value.startswith(PENDING_PREFIX)


def file_number(path: Path) -> int:
    """The sequence number of a spool file (batch or control record); -1 for other names.

    Example:
        >>> file_number(Path("b-000000012.jsonl")), file_number(Path("c-000000013.json"))
        (12, 13)
    """
    match = _NUMBERED.fullmatch(path.name)
    return int(match.group(1)) if match else -1


class DamagedRecordError(ValueError):
    """A control record file that cannot be read back whole.

    Example:
        >>> str(DamagedRecordError("fails its checksum"))
        'fails its checksum'
    """


@dataclass(eq=False)
class ControlRecord:
    """One control record (see the module docstring).

    Attributes:
        kind: ``create``, ``status`` or ``annotation``.
        experiment_id: the run it is about, as the pipeline knows it (a placeholder for a
            run whose creation waits).
        body: the request body, as the contract has it.
        key: the ``Idempotency-Key`` of every try.
        exist_ok: a ``create`` that finds its slug taken returns that experiment.
        resolved_id: the real id, once a ``create`` was applied.
        path: the spool file holding it, if any.
        goal: how many of the experiment's events (in this process) come before it.
        on_applied: told the experiment the service answered with (in this process only).
    """

    kind: Kind
    experiment_id: str
    body: dict[str, Any]
    key: str = field(default_factory=new_idempotency_key)
    exist_ok: bool = False
    resolved_id: str | None = None
    path: Path | None = None
    goal: int = 0
    on_applied: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    def create(cls, body: Mapping[str, Any], *, exist_ok: bool, key: str) -> ControlRecord:
        """The creation of an experiment, under a new placeholder id.

        Example:
            >>> ControlRecord.create({"slug": "run-1"}, exist_ok=True, key="k").kind
            'create'
        """
        return cls("create", new_pending_id(), dict(body), key=key, exist_ok=exist_ok)

    @classmethod
    def status(
        cls,
        experiment_id: str,
        status: str,
        error: Mapping[str, Any] | None,
        *,
        timestamp_ms: int,
    ) -> ControlRecord:
        """A status change that happened at ``timestamp_ms``.

        Example:
            >>> ControlRecord.status("e", "error", {"name": "E"}, timestamp_ms=1).body["error"]
            {'name': 'E'}
        """
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = dict(error)
        body["timestamp_ms"] = timestamp_ms
        return cls("status", experiment_id, body)

    @classmethod
    def annotation(
        cls, experiment_id: str, text: str, metadata: Mapping[str, Any]
    ) -> ControlRecord:
        """An annotation of the run.

        Example:
            >>> ControlRecord.annotation("e", "loss became NaN", {"step": 3}).body["annotation"]
            'loss became NaN'
        """
        return cls("annotation", experiment_id, {"annotation": text, "metadata": dict(metadata)})

    @property
    def slug(self) -> str | None:
        """The slug a ``create`` asks for (``None`` for the other kinds)."""
        slug = self.body.get("slug") if self.kind == "create" else None
        return slug if isinstance(slug, str) else None

    def describe(self) -> str:
        """A short description for messages (never a secret: records hold none).

        Example:
            >>> ControlRecord.status("e", "done", None, timestamp_ms=1).describe()
            "status 'done' of experiment e"
            >>> ControlRecord.annotation("e", "loss became NaN at step 7", {}).describe()
            "annotation 'loss became NaN at step 7' of experiment e"
        """
        if self.kind == "create":
            return f"creation of experiment {self.slug!r}"
        if self.kind == "status":
            return f"status {self.body.get('status')!r} of experiment {self.experiment_id}"
        text = str(self.body.get("annotation", ""))
        shown = text if len(text) <= 80 else text[:77] + "..."
        return f"annotation {shown!r} of experiment {self.experiment_id}"

    def to_line(self) -> bytes:
        """The record as a spool line: its CRC-32, a space, its JSON."""
        payload = {
            "format": 1,
            "kind": self.kind,
            "experiment_id": self.experiment_id,
            "body": self.body,
            "key": self.key,
            "exist_ok": self.exist_ok,
            "resolved_id": self.resolved_id,
        }
        return checked_line(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode())

    @classmethod
    def from_line(cls, line: bytes) -> ControlRecord:
        """Read a record back from its spool line; raises :class:`DamagedRecordError`."""
        match = _CHECKED.fullmatch(line.rstrip(b"\n"))
        if match is None:
            raise DamagedRecordError("the record has no checksum (cut short?)")
        if int(match.group(1), 16) != zlib.crc32(match.group(2)):
            raise DamagedRecordError("the record fails its checksum (changed on disk)")
        try:
            data = json.loads(match.group(2))
        except ValueError:
            raise DamagedRecordError("the record is not JSON") from None
        kind = data.get("kind") if isinstance(data, dict) else None
        experiment_id = data.get("experiment_id") if isinstance(data, dict) else None
        body = data.get("body") if isinstance(data, dict) else None
        key = data.get("key") if isinstance(data, dict) else None
        resolved = data.get("resolved_id") if isinstance(data, dict) else None
        if (
            kind not in KINDS
            or not isinstance(experiment_id, str)
            or not isinstance(body, dict)
            or not isinstance(key, str)
            or not (resolved is None or isinstance(resolved, str))
        ):
            raise DamagedRecordError("the record is not a control record of a known kind")
        return cls(
            kind,
            experiment_id,
            body,
            key=key,
            exist_ok=data.get("exist_ok") is True,
            resolved_id=resolved,
        )


def write_record(directory: Path, number: int, record: ControlRecord) -> Path:
    """Write ``record`` as ``c-<number>.json`` in a spool directory, whole or not at all (a
    private temporary file renamed into place), readable by its owner only; returns the path.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> path = write_record(folder, 7, ControlRecord.annotation("e", "hi", {}))
        >>> path.name, read_record(path).body["annotation"]
        ('c-000000007.json', 'hi')
    """
    path = directory / f"c-{number:09d}.json"
    rewrite_record(path, record)
    return path


def rewrite_record(path: Path, record: ControlRecord) -> None:
    """Replace the record file ``path`` by ``record`` (a ``create`` that got its real id)."""
    temporary = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(record.to_line() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    record.path = path


def read_record(path: Path) -> ControlRecord:
    """A control record file, checked (``OSError`` when it cannot be read at all).

    Example:
        >>> read_record(Path("missing.json"))  # doctest: +SKIP
    """
    record = ControlRecord.from_line(path.read_bytes())
    record.path = path
    return record


def spool_files(directory: Path) -> list[Path]:
    """The batch files and control records of one spool directory, in the order they were
    numbered (the order things happened).

    Example:
        >>> spool_files(Path("/nonexistent"))
        []
    """
    found = [*directory.glob(BATCH_GLOB), *directory.glob(CONTROL_GLOB)]
    return sorted(found, key=lambda path: (file_number(path), path.name))


def batches_of(directory: Path, experiment_id: str) -> list[Path]:
    """The files under a spool directory (its children's included) that still need the
    creation of ``experiment_id``: its batches (read from their headers) and its control
    records other than the creation itself (a status or an annotation still to apply).

    Example:
        >>> batches_of(Path("/nonexistent"), "pending-00")
        []
    """
    found = []
    for path in directory.rglob(BATCH_GLOB):
        with contextlib.suppress(OSError, ValueError):
            with path.open("rb") as handle:
                first = handle.readline(4096)
            match = _CHECKED.fullmatch(first.rstrip(b"\n"))
            header = json.loads(match.group(2) if match else first)
            if isinstance(header, dict) and header.get("experiment_id") == experiment_id:
                found.append(path)
    for path in directory.rglob(CONTROL_GLOB):
        # A record that cannot be read is kept with its creation: sync reports it.
        try:
            record = read_record(path)
        except (OSError, ValueError):
            found.append(path)
            continue
        if record.experiment_id == experiment_id and record.kind != "create":
            found.append(path)
    return found
