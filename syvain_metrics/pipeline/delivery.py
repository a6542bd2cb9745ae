"""Delivering one batch: retry what may succeed later, isolate what the service refuses.

A retryable failure (network error, timeout, 408/425/429, 5xx, a body that is not JSON)
is retried with the batch's own ``Idempotency-Key`` after a capped, jittered backoff that
honours ``Retry-After``, for as long as the caller lets it. A non-retryable answer is
handled by what it is about:

- the batch's content (400, 413, 422): the batch is split to find the events at fault
  (at once when the answer names ``data[i]``, else by halves); every other event is still
  stored, and each refused one is reported with the service's message;
- the experiment or the credentials (401, 403, 404, ...): every event of the batch is
  reported with that answer, since splitting cannot help.

A failure of the HTTP libraries themselves (:class:`~syvain_metrics.MetricsApiTransportError`,
or any exception that is not the SDK's) is tried :data:`UNEXPECTED_TRIES` times, then every
event of the batch is reported with it (``unexpected``) and the batch is kept on disk for
``syvain-metrics sync`` when a spool file holds it: retrying without end could not help, and
dropping would lose it. Whoever holds the batch says in each message whether it was kept.

Delivery knows nothing of the session: it is given an :class:`Uplink`, a function that
sends one batch once and the policy that paces the retries (the session builds it).

Example:
    >>> uplink = Uplink(send=send_once, policy=RetryPolicy())         # doctest: +SKIP
    >>> outcome = deliver(uplink, batch, wait=stop_event.wait)       # doctest: +SKIP
    >>> outcome.stored, outcome.rejected, outcome.finished            # doctest: +SKIP
    (1000, [], True)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from syvain_metrics.errors import (
    MetricsApiError,
    MetricsApiRequestError,
    MetricsApiTransportError,
    RejectedEvent,
)
from syvain_metrics.pipeline.batch import Batch

logger = logging.getLogger("syvain_metrics")

CONTENT_STATUSES = frozenset({400, 413, 422})
"""Answers about a batch's content: worth splitting the batch to find the bad events."""

KEEP_STATUSES = frozenset({401, 403, 404})
"""Answers about the run or the credentials: the batch is kept on disk for a later replay
(with the right API key, say) instead of being dropped."""

UNEXPECTED_TRIES = 3
"""Tries of a batch that fails inside the HTTP libraries before it is reported and kept."""

_EVENT_FIELD = "data["

Wait = Callable[[float], bool]
"""Sleeps up to the given seconds; returns True when the delivery should stop instead."""

Send = Callable[[Batch], object]
"""Sends one batch once (its own ``Idempotency-Key``, no retry of its own); raises a
:class:`~syvain_metrics.MetricsApiError` when the service does not store it."""

ApplyControl = Callable[[Any, str | None], dict[str, Any]]
"""Applies one control record (:class:`~syvain_metrics.pipeline.control.ControlRecord`) once,
to the real experiment id given (``None`` for a creation); returns the experiment the
service answered with, or raises a :class:`~syvain_metrics.MetricsApiError`."""


class DeliveryPolicy(Protocol):
    """How long to wait before the next try of a batch (a
    :class:`~syvain_metrics.RetryPolicy` is one)."""

    def delivery_wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``attempt`` failures, honouring ``retry_after``."""
        ...


@dataclass(frozen=True)
class Uplink:
    """Where batches go: ``send`` one batch once, and the ``policy`` that paces retries;
    ``control`` applies a control record once (``None``: records wait for ``sync``);
    ``offline``: nothing is ever sent, everything waits in the spool for ``sync``."""

    send: Send
    policy: DeliveryPolicy
    control: ApplyControl | None = None
    offline: bool = False


@dataclass
class Outcome:
    """What became of a batch: events ``stored``, events ``rejected`` (with the answer),
    whether every event got an answer (``finished``; False when told to stop first), and
    whether the batch must stay on disk for ``syvain-metrics sync`` (``keep``), and whether
    the rejections are failures of the HTTP libraries rather than answers (``unexpected``;
    their messages do not say yet whether a spool file keeps the events), and whether the
    batch was left in the spool on purpose, unsent (``parked``: offline mode)."""

    stored: int = 0
    rejected: list[RejectedEvent] = field(default_factory=list)
    finished: bool = True
    keep: bool = False
    unexpected: bool = False
    parked: bool = False

    def add(self, other: Outcome) -> None:
        """Fold a part's outcome into this one."""
        self.stored += other.stored
        self.rejected.extend(other.rejected)
        self.finished = self.finished and other.finished
        self.keep = self.keep or other.keep
        self.unexpected = self.unexpected or other.unexpected


def deliver(uplink: Uplink, batch: Batch, *, wait: Wait) -> Outcome:
    """Send ``batch`` until the service answers it for good, or ``wait`` says stop.

    Example:
        >>> deliver(uplink, batch, wait=threading.Event().wait)  # doctest: +SKIP
    """
    policy = uplink.policy
    failures = 0
    unexpected = 0
    while True:
        pause: float | None
        try:
            uplink.send(batch)
            return Outcome(stored=batch.count)
        except MetricsApiTransportError as error:
            reason: MetricsApiError = error
            pause = None
        except MetricsApiRequestError as error:
            if not error.retryable:
                return _refused(uplink, batch, error, wait)
            pause = policy.delivery_wait(failures, error.retry_after)
            reason = error
        except MetricsApiError as error:  # a broken answer: the contract says retry
            pause = policy.delivery_wait(failures)
            reason = error
        except Exception as error:
            reason = MetricsApiTransportError(
                f"log() delivery failed unexpectedly: {type(error).__name__}: {error}"
            )
            pause = None
        if pause is None:
            unexpected += 1
            if unexpected >= UNEXPECTED_TRIES:
                message = str(reason)
                rejected = [RejectedEvent(event, message) for event in batch.events()]
                return Outcome(rejected=rejected, keep=True, unexpected=True)
            pause = policy.delivery_wait(failures)
        failures += 1
        log = logger.warning if failures in (1, 10) or failures % 100 == 0 else logger.debug
        log(
            "log() events of experiment %s not sent yet (try %d, next in %.1f s): %s",
            batch.experiment_id,
            failures,
            pause,
            reason,
        )
        if wait(pause):
            return Outcome(finished=False)


def kept_note(on_disk: bool, spooled: bool) -> str:
    """What became of a batch the HTTP libraries kept failing on, for its events' messages.

    Example:
        >>> kept_note(False, False)
        'not kept: the session has no spool (spool_dir=None)'
    """
    if on_disk:
        return "kept on disk for `syvain-metrics sync`"
    if not spooled:
        return "not kept: the session has no spool (spool_dir=None)"
    return "not kept: held in memory only, the spool could not be written"


def _refused(uplink: Uplink, batch: Batch, error: MetricsApiRequestError, wait: Wait) -> Outcome:
    if error.status_code not in CONTENT_STATUSES or batch.count == 1:
        message = str(error)
        return Outcome(
            rejected=[RejectedEvent(event, message, error.status_code) for event in batch.events()]
        )
    outcome = Outcome()
    index = _event_index(error.field)
    if 0 <= index < batch.count:
        parts = [
            batch.part(0, index),
            batch.part(index, index + 1),
            batch.part(index + 1, batch.count),
        ]
    else:
        middle = batch.count // 2
        parts = [batch.part(0, middle), batch.part(middle, batch.count)]
    for part in parts:
        if part.count:
            outcome.add(deliver(uplink, part, wait=wait))
        if not outcome.finished:
            break
    return outcome


def _event_index(field: str | None) -> int:
    """The event an answer's field names (``data[3].value`` -> 3), else -1.

    Example:
        >>> _event_index("data[3].value"), _event_index("data[12]"), _event_index("name")
        (3, 12, -1)
    """
    if field is None or not field.startswith(_EVENT_FIELD):
        return -1
    digits, closed, _ = field[len(_EVENT_FIELD) :].partition("]")
    return int(digits) if closed and digits.isdigit() and digits.isascii() else -1
