"""One ingest request's worth of ``log()`` events, encoded once.

Events are kept as their compact JSON lines, so a retry re-sends the same bytes without
validating or serializing anything again, and a batch held for a long outage costs about
as much memory as its request body (or nothing, once it is only on disk).

Example:
    >>> batch = Batch("exp-1", [b'{"client_event_id":"a","name":"loss","value":1.0,"step":0}'])
    >>> batch.body()
    b'{"data":[{"client_event_id":"a","name":"loss","value":1.0,"step":0}]}'
    >>> batch.events()[0]["name"]
    'loss'
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


def encode_event(event: dict[str, Any]) -> bytes:
    """The compact JSON line of one validated event.

    Example:
        >>> encode_event({"name": "é", "value": 1.0})
        b'{"name":"\\\\u00e9","value":1.0}'
    """
    return _ENCODER.encode(event).encode()


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key`` for one request body (kept for all its retries)."""
    return f"syvain-metrics-{uuid.uuid4().hex}"


@dataclass
class Batch:
    """Events of one experiment, in the order they were logged, sent as one request.

    Attributes:
        experiment_id: the experiment they belong to.
        lines: the encoded events, or ``None`` while the batch lives only in its spool file.
        count: how many events.
        first: the position of the first event among the experiment's events in this session
            (so a ``flush()`` knows which events it waits for).
        path: the spool file holding the batch, if any.
        key: the ``Idempotency-Key`` of this exact body, reused on every retry.
    """

    experiment_id: str
    lines: list[bytes] | None
    count: int = -1
    first: int = 0
    path: Path | None = None
    key: str = field(default_factory=new_idempotency_key)

    def __post_init__(self) -> None:
        if self.count < 0:
            self.count = len(self.lines or ())

    def body(self) -> bytes:
        """The request body, ``{"data":[...]}``."""
        return b'{"data":[' + b",".join(self.lines or ()) + b"]}"

    def events(self) -> list[dict[str, Any]]:
        """The events as dicts (for reports only; sending never decodes them)."""
        return [json.loads(line) for line in self.lines or ()]

    def part(self, start: int, stop: int) -> Batch:
        """The events ``start:stop`` as a batch of their own, with a new key (a different
        body is a different request)."""
        lines = (self.lines or [])[start:stop]
        return Batch(self.experiment_id, lines, len(lines), self.first + start)
