"""How the SDK retries: bounded attempts, exponential backoff, ``Retry-After``, and the
poll while a first attempt of the same call is still running on the server.

Example:
    >>> policy = RetryPolicy()
    >>> [policy.backoff(attempt) for attempt in range(2)]
    [0.25, 0.5]
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from urllib3.exceptions import InvalidHeader
from urllib3.util import Retry

_HEADER_PARSER = Retry()


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings of a :class:`~syvain_metrics.Session`.

    Attributes:
        attempts: tries per logical call for retryable failures (3).
        backoff_base: seconds before the first retry; doubled each time (0.25, then 0.5).
        poll_interval: seconds between polls while the server says the same call is in progress.
        poll_attempts: how many such polls at most; they do not use up ``attempts``.
        max_retry_after: the longest ``Retry-After`` (seconds) the SDK will honour.
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
    poll_interval: float = 0.5
    poll_attempts: int = 10
    max_retry_after: float = 60.0
    delivery_backoff_cap: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based).

        A ``Retry-After`` header may lengthen the wait, never shorten it.

        Example:
            >>> RetryPolicy().backoff(0, retry_after="3")
            3.0
        """
        wait = self.backoff_base * (2**attempt)
        asked = self.retry_after_seconds(retry_after)
        return float(wait if asked is None else max(wait, asked))

    def retry_after_seconds(self, retry_after: str | None) -> float | None:
        """A ``Retry-After`` header (seconds or an HTTP date) in seconds, capped at
        ``max_retry_after``; ``None`` when absent or unreadable.

        Example:
            >>> RetryPolicy().retry_after_seconds("120")
            60.0
        """
        if not retry_after:
            return None
        try:
            asked = _HEADER_PARSER.parse_retry_after(retry_after)
        except InvalidHeader:
            return None
        return min(float(asked), float(self.max_retry_after))

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
