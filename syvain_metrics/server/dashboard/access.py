"""Who is looking at the dashboard: browser sessions and one-time login links.

A browser signs in once, by pasting an API key or by opening a one-time login link; it then
carries a random session id in an HttpOnly, SameSite=Strict cookie. The server keeps only a
hash of each session id and of each login token, with the organization it opens, in memory
(in the database when several processes serve it, so that a link printed by one opens in
any): a restarted server forgets them (sign in again). Keys are checked by the store's own
authentication, so only an API key (never an ingestion token) opens a session.

Each organization keeps at most :data:`SESSIONS_PER_ORGANIZATION` sessions (and as many
unused login tokens): a new one past that ends that organization's oldest, never another
organization's.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> access = Access(store)
    >>> token = access.login_token(key)
    >>> session_id = access.redeem(token)
    >>> access.organization(session_id) == store.authenticate(key).org_id
    True
    >>> access.redeem(token) is None  # one time only
    True
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.store import Store

SESSION_TTL_S = 7 * 24 * 3600
"""How long a browser stays signed in (the cookie is dropped with the browser session)."""
LOGIN_TOKEN_TTL_S = 24 * 3600
"""How long an unused login link stays valid."""
SESSIONS_PER_ORGANIZATION = 10_000
"""Sessions (and, apart, unused login tokens) one organization keeps at most; the oldest
goes first."""
COOKIE_NAME = "syvain_dashboard"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PerOrganization:
    """Secrets' hashes mapped to their organization, expiring after ``ttl_s`` seconds, at
    most ``limit`` for each organization (a new one past that drops that organization's
    oldest). Not thread-safe: :class:`Access` holds a lock around it.

    Example:
        >>> table = PerOrganization(limit=2, ttl_s=60)
        >>> for name in ("a1", "a2", "a3"):
        ...     table.add(name, "org-a")
        >>> table.add("b1", "org-b")
        >>> [table.get(name) for name in ("a1", "a2", "a3", "b1")]
        [None, 'org-a', 'org-a', 'org-b']
    """

    def __init__(
        self, limit: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.ttl_s = ttl_s
        self._clock = clock
        self._org_of: dict[str, str] = {}
        # Per organization, in the order they were added: hash -> when it expires.
        self._by_org: dict[str, OrderedDict[str, float]] = {}

    def add(self, digest: str, org_id: str) -> None:
        """Keep ``digest`` for ``org_id``; drop that organization's expired and oldest ones."""
        now = self._clock()
        entries = self._by_org.setdefault(org_id, OrderedDict())
        self.pop(digest)
        # Oldest first: every entry lives as long, so the expired ones are at the front.
        while entries:
            oldest, expires = next(iter(entries.items()))
            if expires > now and len(entries) < self.limit:
                break
            del entries[oldest]
            del self._org_of[oldest]
        entries[digest] = now + self.ttl_s
        self._org_of[digest] = org_id

    def get(self, digest: str) -> str | None:
        """The organization ``digest`` opens, or ``None`` (unknown or expired; an expired one
        is dropped at its organization's next :meth:`add`)."""
        org_id = self._org_of.get(digest)
        if org_id is None or self._by_org[org_id][digest] <= self._clock():
            return None
        return org_id

    def pop(self, digest: str) -> str | None:
        """Forget ``digest``; the organization it opened, if it was still valid."""
        org_id = self.get(digest)
        known = self._org_of.pop(digest, None)
        if known is not None:
            del self._by_org[known][digest]
        return org_id


class Access:
    """Sessions and login tokens of one server, each mapped to an organization id.

    Args:
        store: checks API keys (:meth:`~syvain_metrics.server.store.Store.authenticate`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._sessions = PerOrganization(SESSIONS_PER_ORGANIZATION, SESSION_TTL_S)
        self._tokens = PerOrganization(SESSIONS_PER_ORGANIZATION, LOGIN_TOKEN_TTL_S)
        self._shared = store.shared

    def _organization_of_key(self, api_key: str) -> str | None:
        try:
            principal = self.store.authenticate(api_key.strip())
        except ApiError:
            return None
        return principal.org_id if principal.kind == "api_key" else None

    def sign_in(self, api_key: str) -> str | None:
        """A new session id for the API key's organization, or ``None`` if the key is not an
        API key this server accepts (an ingestion token is refused too).

        Example:
            >>> Access(Store()).sign_in("ak_wrong") is None
            True
        """
        org_id = self._organization_of_key(api_key) if api_key.strip() else None
        return None if org_id is None else self._open(org_id)

    def login_token(self, api_key: str) -> str:
        """A one-time login token for the API key's organization (valid for a day).

        Example:
            >>> Access(Store()).login_token("ak_wrong")
            Traceback (most recent call last):
            ValueError: Not an API key of this server.
        """
        org_id = self._organization_of_key(api_key)
        if org_id is None:
            raise ValueError("Not an API key of this server.")
        token = secrets.token_urlsafe(24)
        if self._shared:
            self.store.save_login(
                "token", _digest(token), org_id, LOGIN_TOKEN_TTL_S, keep=SESSIONS_PER_ORGANIZATION
            )
            return token
        with self._lock:
            self._tokens.add(_digest(token), org_id)
        return token

    def redeem(self, token: str) -> str | None:
        """Spend a login token: a new session id, or ``None`` if unknown, used or expired."""
        if self._shared:
            org_id = self.store.find_login("token", _digest(token), spend=True)
        else:
            with self._lock:
                org_id = self._tokens.pop(_digest(token))
        return None if org_id is None else self._open(org_id)

    def _open(self, org_id: str) -> str:
        session_id = secrets.token_urlsafe(32)
        if self._shared:
            self.store.save_login(
                "session",
                _digest(session_id),
                org_id,
                SESSION_TTL_S,
                keep=SESSIONS_PER_ORGANIZATION,
            )
            return session_id
        with self._lock:
            self._sessions.add(_digest(session_id), org_id)
        return session_id

    def organization(self, session_id: str | None) -> str | None:
        """The organization a session id opens, or ``None``."""
        if not session_id:
            return None
        if self._shared:
            return self.store.find_login("session", _digest(session_id))
        with self._lock:
            return self._sessions.get(_digest(session_id))

    def sign_out(self, session_id: str | None) -> None:
        """Forget a session (no error if it is unknown)."""
        if session_id and self._shared:
            self.store.forget_logins("session", _digest(session_id))
        elif session_id:
            with self._lock:
                self._sessions.pop(_digest(session_id))
