"""How the SDK retries: bounded attempts, exponential backoff, ``Retry-After``, and the
poll while a first attempt of the same call is still running on the server.

Example:
    >>> policy = RetryPolicy()
    >>> [policy.backoff(attempt) for attempt in range(2)]
    [0.25, 0.5]
"""

from __future__ import annotations

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
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based).

        A ``Retry-After`` header may lengthen the wait, never shorten it.

        Example:
            >>> RetryPolicy().backoff(0, retry_after="3")
            3.0
        """
        wait = self.backoff_base * (2**attempt)
        if retry_after:
            try:
                asked = _HEADER_PARSER.parse_retry_after(retry_after)
            except InvalidHeader:
                asked = 0.0
            wait = max(wait, min(float(asked), self.max_retry_after))
        return float(wait)
