"""The per-experiment ingestion-token cache.

Ingest and annotation calls authenticate with a short-lived token minted for one
experiment. Tokens live in a ``cachetools.TLRUCache`` whose time-to-use ends five
minutes before the token expires, so a token is renewed before the service could
refuse it. Minting is single-flight per experiment: eight threads that write to a
new experiment at once mint one key.

Example:
    >>> minted = []
    >>> def mint(experiment_id):
    ...     minted.append(experiment_id)
    ...     return Secret("tok-secret"), 3_600_000
    >>> cache = IngestionTokenCache(mint, clock=lambda: 0.0)
    >>> cache.token("exp-1") == cache.token("exp-1"), minted
    (True, ['exp-1'])
    >>> cache.token("exp-1")  # a Secret: error reporters never show it
    Secret('***')
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TLRUCache

from syvain_metrics.client.secret import Secret
from syvain_metrics.contract.limits import INGESTION_TOKEN_RENEWAL_MS

Minter = Callable[[str], tuple[Secret, int]]
"""Mints a key for an experiment id and returns ``(token, expires_at_ms)``."""


@dataclass(frozen=True)
class _CachedToken:
    token: Secret = field(repr=False)
    expires_at_ms: int


def _renew_at(_key: str, value: _CachedToken, _now: float) -> float:
    return (value.expires_at_ms - INGESTION_TOKEN_RENEWAL_MS) / 1000.0


class IngestionTokenCache:
    """Thread-safe cache of ingestion tokens keyed by experiment id.

    ``clock`` returns seconds since the epoch (tests inject a fake one).

    Example:
        >>> cache = IngestionTokenCache(lambda eid: (Secret("t"), 10**13))
        >>> cache.forget("exp-1")  # nothing cached: a no-op
    """

    def __init__(
        self,
        mint: Minter,
        *,
        clock: Callable[[], float] = time.time,
        maxsize: int = 4096,
    ) -> None:
        self._mint = mint
        self._cache: TLRUCache[str, _CachedToken] = TLRUCache(
            maxsize=maxsize, ttu=_renew_at, timer=clock
        )
        self._lock = threading.Lock()
        self._mint_locks: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        with self._lock:
            return f"<IngestionTokenCache experiments={len(self._cache)}>"

    def _cached(self, experiment_id: str) -> Secret | None:
        with self._lock:
            entry = self._cache.get(experiment_id)
        return None if entry is None else entry.token

    def _mint_lock(self, experiment_id: str) -> threading.Lock:
        with self._lock:
            return self._mint_locks.setdefault(experiment_id, threading.Lock())

    def token(self, experiment_id: str) -> Secret:
        """A token for ``experiment_id``: the cached one while fresh, else a newly minted one."""
        return self._get(experiment_id, stale=None)

    def renew(self, experiment_id: str, stale: Secret) -> Secret:
        """Replace ``stale`` after the service refused it (401/403).

        If another thread already replaced it, that newer token is returned instead of
        minting again.
        """
        return self._get(experiment_id, stale=stale)

    def _get(self, experiment_id: str, *, stale: Secret | None) -> Secret:
        cached = self._cached(experiment_id)
        if cached is not None and cached != stale:
            return cached
        with self._mint_lock(experiment_id):
            cached = self._cached(experiment_id)
            if cached is not None and cached != stale:
                return cached
            token, expires_at_ms = self._mint(experiment_id)
            with self._lock:
                self._cache[experiment_id] = _CachedToken(token, expires_at_ms)
            return token

    def forget(self, experiment_id: str) -> None:
        """Drop the cached token of ``experiment_id`` (the next write mints a new one)."""
        with self._lock:
            self._cache.pop(experiment_id, None)

    def secrets(self) -> list[Secret]:
        """The cached tokens, for redaction of messages only."""
        with self._lock:
            return [entry.token for entry in self._cache.values()]
