"""The two rules that give metric events their ``client_event_id``.

The service stores an id once per experiment, so the id decides what counts as "the same
event". Retry safety comes from assigning an id once and sending that same id on every
retry and replay, never from collapsing values:

- ``log()`` gives every call a new id (:class:`EventIdSource`): two calls are never one
  event, whatever their name, step or value.
- ``ingest()`` of dicts without an id derives it from the whole record
  (:func:`record_event_id`): re-sending the same list stores it once, while records that
  differ in any field (the value included) stay distinct.

An explicit ``client_event_id`` always wins.

Example:
    >>> source = EventIdSource()
    >>> source.next_id() != source.next_id()
    True
    >>> a = record_event_id("exp-1", {"name": "loss", "value": 0.5, "step": 3})
    >>> a == record_event_id("exp-1", {"name": "loss", "value": 0.5, "step": 3.0})
    True
    >>> a == record_event_id("exp-1", {"name": "loss", "value": 0.4, "step": 3})
    False
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from typing import Any

from syvain_metrics.contract.schemas.fields import is_real

_RECORD_FIELDS = ("name", "value", "step", "metadata", "timestamp_ms")


class EventIdSource:
    """Unique ids for ``log()`` calls: a random 96-bit prefix and a counter.

    Each process needs its own source: a child made by ``fork`` that kept its parent's
    prefix and counter would hand out the parent's next ids. The session makes a new one
    after a fork.

    Example:
        >>> EventIdSource().next_id().startswith("sm-")
        True
    """

    def __init__(self) -> None:
        self._prefix = f"sm-{os.urandom(12).hex()}-"
        # next() on itertools.count is atomic under the GIL: no lock on the log() path.
        self._counter = itertools.count()

    def next_id(self) -> str:
        """A new id, never handed out before by any source."""
        return f"{self._prefix}{next(self._counter)}"


def record_event_id(experiment_id: str, record: Mapping[str, Any]) -> str:
    """The id of an ``ingest()`` record that has none: a digest of the experiment and every
    field of the record. Equal JSON values give equal ids (``3`` and ``3.0``).

    Raises ``TypeError`` / ``ValueError`` for fields that are not JSON; validation names
    them afterwards.

    Example:
        >>> record_event_id("e", {"name": "acc", "value": 1, "metadata": {"k": 1.0}}) == \\
        ...     record_event_id("e", {"name": "acc", "value": 1.0, "metadata": {"k": 1}})
        True
    """
    fields = [_whole_numbers_as_ints(record.get(key)) for key in _RECORD_FIELDS]
    canonical = json.dumps(
        [experiment_id, *fields],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return f"sm-r-{hashlib.sha256(canonical.encode()).hexdigest()[:48]}"


def _whole_numbers_as_ints(value: Any) -> Any:
    # The service compares JSON values (1 == 1.0), so the id must too.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if is_real(value) and not isinstance(value, int | float):
        return _whole_numbers_as_ints(float(value))  # numpy scalars
    if isinstance(value, Mapping):
        return {str(key): _whole_numbers_as_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_whole_numbers_as_ints(item) for item in value]
    return value
