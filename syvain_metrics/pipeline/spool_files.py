"""The spool's batch files line by line: every line is written with its CRC-32 in front
(:func:`checked_line`) and checked when read back (:func:`load_batch`), so a changed byte
or a line cut short is found and reported, never sent or skipped silently. Batches written
before the checksum (no prefix) are still read: a line of those is damaged when it is not
a JSON array of objects.

Example:
    >>> checked_line(b"[]")
    b'0d4cbb29 []'
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syvain_metrics.pipeline.batch import Chunk, encode_events

_CHECKED = re.compile(rb"([0-9a-f]{8}) (.*)", re.DOTALL)


def checked_line(payload: bytes) -> bytes:
    """``payload`` with its CRC-32 in front, as a spool line (without the newline).

    Example:
        >>> checked_line(b'[{"a":1}]')
        b'f2cb737d [{"a":1}]'
    """
    return b"%08x %s" % (zlib.crc32(payload), payload)


class DamagedBatchError(ValueError):
    """A batch file whose header cannot be read: none of its events can be sent.

    Example:
        >>> str(DamagedBatchError("the header is not an object naming an experiment"))
        'the header is not an object naming an experiment'
    """


@dataclass
class SpooledBatch:
    """A batch file as read back: its experiment, the event chunks that are intact, and
    what is wrong with the others (one line of text each; empty when the file is whole)."""

    experiment_id: str
    chunks: list[Chunk]
    damage: list[str] = field(default_factory=list)


def _shown(data: bytes) -> str:
    text = data[:60].decode("utf-8", "replace")
    return repr(text) + ("..." if len(data) > 60 else "")


def _payload(line: bytes, checked: bool) -> tuple[bytes | None, str]:
    """The payload of a line, or ``None`` and why it cannot be trusted."""
    if not checked:
        return line, ""
    match = _CHECKED.fullmatch(line)
    if match is None:
        return None, "has no checksum"
    if int(match.group(1), 16) != zlib.crc32(match.group(2)):
        return None, "fails its checksum (changed on disk)"
    return match.group(2), ""


def load_batch(path: Path) -> SpooledBatch:
    r"""Read a batch file back, checking every line; raises :class:`DamagedBatchError` when its
    header is unusable (and ``OSError`` when it cannot be read at all).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "b-000000001.jsonl"
        >>> lines = [b'{"experiment_id":"e","format":2}', b'[{"n":1}]', b'[{"n":2}]']
        >>> _ = path.write_bytes(b"\n".join(checked_line(x) for x in lines)[:-3])
        >>> batch = load_batch(path)
        >>> batch.experiment_id, len(batch.chunks), batch.damage
        ('e', 1, ['line 3 is cut short (the writing process ended in the middle of it)'])
        >>> _ = path.write_bytes(b"[1]\n")
        >>> load_batch(path)
        Traceback (most recent call last):
        ...
        syvain_metrics.pipeline.spool_files.DamagedBatchError: the header is not an object naming an experiment: '[1]'
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = not data.endswith(b"\n")  # the last element is then what a kill cut short
    if not torn:
        lines.pop()
    if not lines or not lines[0]:
        raise DamagedBatchError("the file is empty: no header")
    checked = _CHECKED.fullmatch(lines[0]) is not None
    header, why = _payload(lines[0], checked)
    if header is None:
        raise DamagedBatchError(f"the header {why}")
    try:
        meta = json.loads(header)
    except ValueError:
        meta = None
    experiment_id = meta.get("experiment_id") if isinstance(meta, dict) else None
    if not isinstance(experiment_id, str) or not experiment_id:
        cut = " (cut short)" if torn and len(lines) == 1 else ""
        raise DamagedBatchError(
            f"the header is not an object naming an experiment{cut}: {_shown(header)}"
        )
    batch = SpooledBatch(experiment_id, [])
    last = len(lines)
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        payload, why = _payload(line, checked)
        events: Any = None
        if payload is not None:
            try:
                events = json.loads(payload)
            except ValueError:
                why = "is not JSON"
        if why:
            if torn and number == last:
                why = "is cut short (the writing process ended in the middle of it)"
            batch.damage.append(f"line {number} {why}")
            continue
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            batch.damage.append(f"line {number} is not a list of event objects")
            continue
        if not events:
            continue
        array = payload.strip() if payload is not None else b""
        if not (array.startswith(b"[") and array.endswith(b"]")):  # pragma: no cover
            array = encode_events(events).array
        batch.chunks.append(Chunk(len(events), array))
    return batch


def read_batch(path: Path) -> tuple[str, list[Chunk]]:
    """The experiment id and intact event chunks of a batch file (see :func:`load_batch`,
    which also says what is damaged).

    Example:
        >>> read_batch(Path("missing.jsonl"))  # doctest: +SKIP
    """
    batch = load_batch(path)
    return batch.experiment_id, batch.chunks
