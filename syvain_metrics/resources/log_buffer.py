"""The buffer behind ``experiment.log()``: batches events, flushes them, and never drops them quietly.

One buffer exists per (session, experiment id), so two ``Experiment`` objects for the
same run share it. A buffer flushes when it holds 1,000 events, on ``flush()``, when
``run()`` ends, when its session closes, and at interpreter exit (with a bounded wait
and a warning naming what could not be sent). A failed flush keeps the unsent events.

Example:
    >>> exp.log("loss", 0.5, step=1)  # buffered   # doctest: +SKIP
    >>> exp.flush()                   # sent now    # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import PartialIngestError
from syvain_metrics.schemas.fields import is_real
from syvain_metrics.schemas.limits import MAX_METRICS_PER_INGEST

if TYPE_CHECKING:
    from syvain_metrics.session import Session

logger = logging.getLogger("syvain_metrics")

EXIT_FLUSH_SECONDS = 15.0
"""The longest interpreter exit waits for pending ``log()`` events."""

Sender = Callable[[list[dict[str, Any]]], Any]


def derive_event_id(
    experiment_id: str, name: str, step: int | None, metadata: Mapping[str, Any] | None
) -> str:
    """A ``client_event_id`` for ``log()``: stable for a given (run, name, step, metadata),
    so logging the same step again is stored once; unique per call when ``step`` is ``None``.

    Example:
        >>> a = derive_event_id("exp-1", "loss", 3, {"split": "train"})
        >>> a == derive_event_id("exp-1", "loss", 3, {"split": "train"})
        True
        >>> derive_event_id("exp-1", "loss", None, None) == derive_event_id("exp-1", "loss", None, None)
        False
    """
    if step is None:
        return f"sm-{uuid.uuid4().hex}"
    if is_real(step) and float(step).is_integer():
        step = int(step)  # 3, 3.0 and numpy's 3 are the same step on the wire
    canonical = json.dumps(
        [experiment_id, name, step, _whole_numbers_as_ints(dict(metadata or {}))],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return f"sm-{step}-{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"


def _whole_numbers_as_ints(value: Any) -> Any:
    # The service compares metadata as JSON values (1 == 1.0), so the id must too.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers_as_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_whole_numbers_as_ints(item) for item in value]
    return value


class LogBuffer:
    """Pending ``log()`` events of one experiment on one session."""

    def __init__(self, session: Session, experiment_id: str, send: Sender) -> None:
        self.session = session
        self.experiment_id = experiment_id
        self._send = send
        self._events: list[dict[str, Any]] = []
        self._flush_at = MAX_METRICS_PER_INGEST
        self._lock = threading.RLock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def add(self, event: dict[str, Any]) -> None:
        """Buffer one validated event; flush when the buffer holds a full request.

        After a failed automatic flush the next one waits for another full request, so a
        training loop that logs through an outage is not held up by every call.
        """
        with self._lock:
            self._events.append(event)
            if len(self._events) >= self._flush_at:
                try:
                    self.flush()
                except Exception:
                    self._flush_at = len(self._events) + MAX_METRICS_PER_INGEST
                    raise

    def flush(self) -> int:
        """Send every pending event; return how many were sent. On failure keep the unsent ones."""
        with self._lock:
            if not self._events:
                return 0
            pending = self._events
            try:
                self._send(pending)
            except PartialIngestError as error:
                self._events = error.pending
                raise
            self._events = []
            self._flush_at = MAX_METRICS_PER_INGEST
            return len(pending)


_registry_lock = threading.Lock()
_buffers: dict[tuple[int, str], LogBuffer] = {}


def buffer_for(session: Session, experiment_id: str, send: Sender) -> LogBuffer:
    """The buffer of (``session``, ``experiment_id``), created on first use."""
    key = (id(session), experiment_id)
    with _registry_lock:
        found = _buffers.get(key)
        if found is None or found.session is not session:
            found = _buffers[key] = LogBuffer(session, experiment_id, send)
            session.on_close(flush_session_buffers)
        return found


def existing_buffer(session: Session, experiment_id: str) -> LogBuffer | None:
    """The buffer of (``session``, ``experiment_id``) if one was ever created."""
    with _registry_lock:
        found = _buffers.get((id(session), experiment_id))
    return found if found is not None and found.session is session else None


def flush_session_buffers(session: Session) -> None:
    """Flush every buffer of ``session`` (called by ``Session.close()``); the first error is raised
    after every buffer was tried."""
    with _registry_lock:
        mine = [b for b in _buffers.values() if b.session is session]
    first: BaseException | None = None
    for buffer in mine:
        try:
            buffer.flush()
        except Exception as error:
            first = first or error
    with _registry_lock:
        for key in [k for k, b in _buffers.items() if b.session is session and not len(b)]:
            del _buffers[key]
    if first is not None:
        raise first


def _flush_all_at_exit() -> None:
    with _registry_lock:
        buffers = [b for b in _buffers.values() if len(b)]
    if not buffers:
        return
    worker = threading.Thread(target=_flush_quietly, args=(buffers,), daemon=True)
    worker.start()
    worker.join(EXIT_FLUSH_SECONDS)
    left = [(b.experiment_id, len(b)) for b in buffers if len(b)]
    if left:
        detail = ", ".join(f"{count} for experiment {eid}" for eid, count in left)
        warnings.warn(
            f"syvain_metrics: log() events were not sent before exit: {detail}. "
            "Call experiment.flush() (or use experiment.run()) before the program ends.",
            RuntimeWarning,
            stacklevel=1,
        )


def _flush_quietly(buffers: list[LogBuffer]) -> None:
    for buffer in buffers:
        try:
            buffer.flush()
        except Exception as error:
            logger.warning(
                "flush at exit failed for experiment %s: %s", buffer.experiment_id, error
            )


atexit.register(_flush_all_at_exit)
