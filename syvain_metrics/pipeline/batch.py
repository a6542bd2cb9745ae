"""One ingest request's worth of ``log()`` events, encoded once.

Events are encoded a pass at a time into *chunks* (a JSON array of several events, one
``json`` call for all of them), so a retry re-sends the same bytes without validating or
serializing anything again, and a batch held for a long outage costs about as much memory
as its request body (or nothing, once it is only on disk).

Example:
    >>> chunk = encode_chunk([queued_event("exp-1", "a", "loss", 1.0, 0, None, None)])
    >>> batch = Batch("exp-1", [chunk])
    >>> batch.body()
    b'{"data":[{"client_event_id":"a","name":"loss","value":1.0,"step":0}]}'
    >>> batch.count, batch.events()[0]["name"]
    (1, 'loss')
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


class Chunk(NamedTuple):
    """Events encoded together: ``array`` is their JSON array, ``size`` how many."""

    size: int
    array: bytes


def encode_events(events: list[dict[str, Any]]) -> Chunk:
    """One chunk of event dicts.

    Example:
        >>> encode_events([{"name": "loss", "value": 1.0}])
        Chunk(size=1, array=b'[{"name":"loss","value":1.0}]')
    """
    return Chunk(len(events), _ENCODER.encode(events).encode())


QueuedEvent = tuple[str, str, str, float, "int | None", Any, "int | None"]
"""One ``log()`` event waiting for the spooler: ``(experiment_id, client_event_id, name,
value, step, metadata, timestamp_ms)``, metadata as a tuple of ``(key, value)`` pairs.

A tuple of strings and numbers, so the garbage collector stops tracking it at its first
pass: events waiting in the queue never age into the older generations, whose full
collections would stall the training loop for milliseconds."""


def queued_event(
    experiment_id: str,
    event_id: str,
    name: str,
    value: float,
    step: int | None,
    metadata: Mapping[str, Any] | None,
    timestamp_ms: int | None,
) -> QueuedEvent:
    """Pack a validated event for the queue.

    Example:
        >>> queued_event("e", "id", "loss", 1.0, 3, {"split": "train"}, None)
        ('e', 'id', 'loss', 1.0, 3, (('split', 'train'),), None)
    """
    pairs = None if metadata is None else tuple(metadata.items())
    return (experiment_id, event_id, name, value, step, pairs, timestamp_ms)


def encode_chunk(items: list[QueuedEvent], tags: Mapping[str, Any] | None = None) -> Chunk:
    """One chunk of queued events, each in the contract's field order. ``tags`` is metadata
    every event carries (the rank of a distributed job, say); an event's own key wins.

    Example:
        >>> encode_chunk([("e", "id", "loss", 1.0, None, (("split", "train"),), 5)]).array
        b'[{"client_event_id":"id","name":"loss","value":1.0,"step":null,"metadata":{"split":"train"},"timestamp_ms":5}]'
        >>> encode_chunk([("e", "id", "loss", 1.0, 2, (("rank", 7),), None),
        ...               ("e", "id2", "loss", 1.0, 2, None, None)], {"rank": 3}).array
        b'[{"client_event_id":"id","name":"loss","value":1.0,"step":2,"metadata":{"rank":7}},{"client_event_id":"id2","name":"loss","value":1.0,"step":2,"metadata":{"rank":3}}]'
    """
    events: list[dict[str, Any]] = []
    append = events.append
    for _, event_id, name, value, step, pairs, timestamp_ms in items:
        event = {"client_event_id": event_id, "name": name, "value": value, "step": step}
        if tags:
            metadata = dict(tags)
            if pairs is not None:
                metadata.update(pairs)
            event["metadata"] = metadata
        elif pairs is not None:
            event["metadata"] = dict(pairs)
        if timestamp_ms is not None:
            event["timestamp_ms"] = timestamp_ms
        append(event)
    return encode_events(events)


def new_idempotency_key() -> str:
    """A fresh ``Idempotency-Key`` for one request body (kept for all its retries)."""
    return f"syvain-metrics-{uuid.uuid4().hex}"


@dataclass
class Batch:
    """Events of one experiment, in the order they were logged, sent as one request.

    Attributes:
        experiment_id: the experiment they belong to.
        chunks: the encoded events, or ``None`` while the batch lives only in its spool file.
        count: how many events.
        first: the position of the first event among the experiment's events in this session
            (so a ``flush()`` knows which events it waits for).
        path: the spool file holding the batch, if any.
        key: the ``Idempotency-Key`` of this exact body, reused on every retry.
    """

    experiment_id: str
    chunks: list[Chunk] | None
    count: int = -1
    first: int = 0
    path: Path | None = None
    key: str = field(default_factory=new_idempotency_key)

    def __post_init__(self) -> None:
        if self.count < 0:
            self.count = sum(chunk.size for chunk in self.chunks or ())

    def body(self) -> bytes:
        """The request body, ``{"data":[...]}``."""
        inner = b",".join(chunk.array[1:-1] for chunk in self.chunks or () if chunk.size)
        return b'{"data":[' + inner + b"]}"

    def events(self) -> list[dict[str, Any]]:
        """The events as dicts (for reports and splits only; sending never decodes them)."""
        return [event for chunk in self.chunks or () for event in json.loads(chunk.array)]

    def part(self, start: int, stop: int) -> Batch:
        """The events ``start:stop`` as a batch of their own, with a new key (a different
        body is a different request)."""
        events = self.events()[start:stop]
        return Batch(self.experiment_id, [encode_events(events)], len(events), self.first + start)
