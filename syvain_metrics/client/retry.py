"""How the SDK retries: bounded attempts, exponential backoff, ``Retry-After``, and the
poll while a first attempt of the same call is still running on the server.

One call's total time is bounded: at most ``attempts + poll_attempts`` exchanges, each
within the session's timeout (connect, headers and body together), and at most
``max_total_wait`` seconds of waiting between them; a wait that would go beyond it ends the
call with the last error instead.

Example:
    >>> policy = RetryPolicy(jitter=0)
    >>> [policy.backoff(attempt) for attempt in range(2)]
    [0.25, 0.5]
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

from syvain_metrics.errors import MetricsValidationError

_HEADER_PARSER = Retry()


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings of a :class:`~syvain_metrics.Session`.

    Attributes:
        attempts: tries per logical call for retryable failures (3).
        backoff_base: seconds before the first retry; doubled each time (0.25, then 0.5).
        jitter: the share of each backoff drawn at random (0.5: between half and all of it),
            so that many clients failing together do not retry together; 0 for exact waits.
        poll_interval: seconds between polls while the server says the same call is in progress.
        poll_attempts: how many such polls at most; they do not use up ``attempts``.
        max_retry_after: the longest ``Retry-After`` (seconds) the SDK will honour (10).
        max_total_wait: the most seconds one call spends waiting between its tries, polls
            included (30); a wait beyond it ends the call with the last error.
        delivery_backoff_cap: the longest pause (seconds) between two tries of the ``log()``
            sender, which retries without limit while the process lives.
        sleep: how to wait (tests pass a recorder).

    Example:
        >>> import syvain_metrics as sm
        >>> fast = sm.RetryPolicy(backoff_base=0.01)
        >>> fast.attempts
        3
    """

    attempts: int = 3
    backoff_base: float = 0.25
    jitter: float = 0.5
    poll_interval: float = 0.5
    poll_attempts: int = 10
    max_retry_after: float = 10.0
    max_total_wait: float = 30.0
    delivery_backoff_cap: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("attempts", "poll_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MetricsValidationError({name: ["Must be a whole number, 0 or more."]})
        if isinstance(self.attempts, int) and self.attempts < 1:
            raise MetricsValidationError({"attempts": ["Must be at least 1."]})
        for name in (
            "backoff_base",
            "poll_interval",
            "max_retry_after",
            "max_total_wait",
            "delivery_backoff_cap",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < math.inf
            ):
                raise MetricsValidationError(
                    {name: ["Must be a finite number of seconds, 0 or more."]}
                )
        if (
            isinstance(self.jitter, bool)
            or not isinstance(self.jitter, int | float)
            or not 0 <= self.jitter <= 1
        ):
            raise MetricsValidationError({"jitter": ["Must be a number between 0 and 1."]})

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based).

        A ``Retry-After`` header may lengthen the wait, never shorten it.

        Example:
            >>> RetryPolicy().backoff(0, retry_after="3")
            3.0
            >>> 0.125 <= RetryPolicy().backoff(0) <= 0.25
            True
        """
        wait = self.backoff_base * (2 ** min(attempt, 30)) * (1 - self.jitter * random.random())
        asked = self.retry_after_seconds(retry_after)
        return float(wait if asked is None else max(wait, asked))

    def retry_after_seconds(self, retry_after: str | None) -> float | None:
        """A ``Retry-After`` header (seconds or an HTTP date) in seconds, capped at
        ``max_retry_after``; ``None`` when absent or unreadable.

        Example:
            >>> RetryPolicy().retry_after_seconds("120")
            10.0
        """
        if not retry_after:
            return None
        try:
            asked = _HEADER_PARSER.parse_retry_after(retry_after)
        except InvalidHeader:
            return None
        return max(0.0, min(float(asked), float(self.max_retry_after)))

    def delivery_wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds the ``log()`` sender waits after its ``attempt``-th failure in a row
        (0-based): exponential from ``backoff_base``, capped at ``delivery_backoff_cap``,
        with jitter (50-100 %) so many processes recovering from one outage do not knock
        together; never shorter than ``retry_after``.

        Example:
            >>> 0.125 <= RetryPolicy().delivery_wait(0) <= 0.25
            True
            >>> RetryPolicy().delivery_wait(50) <= 10.0
            True
        """
        ceiling = min(self.delivery_backoff_cap, self.backoff_base * (2 ** min(attempt, 30)))
        wait = ceiling * (0.5 + random.random() / 2)
        return float(max(wait, retry_after or 0.0))
