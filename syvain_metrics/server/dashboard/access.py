"""Who is looking at the dashboard: browser sessions and one-time login links.

A browser signs in once, by pasting an API key or by opening a one-time login link; it then
carries a random session id in an HttpOnly, SameSite=Strict cookie. The server keeps only a
hash of each session id and of each login token, with the organization it opens, in memory
(in the database when several processes serve it, so that a link printed by one opens in
any): a restarted server forgets them (sign in again). Keys are checked by the store's own
authentication, so only an API key (never an ingestion token) opens a session.

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

from cachetools import TTLCache

from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.store import Store

SESSION_TTL_S = 7 * 24 * 3600
"""How long a browser stays signed in (the cookie is dropped with the browser session)."""
LOGIN_TOKEN_TTL_S = 24 * 3600
"""How long an unused login link stays valid."""
MAX_SESSIONS = 10_000
COOKIE_NAME = "syvain_dashboard"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Access:
    """Sessions and login tokens of one server, each mapped to an organization id.

    Args:
        store: checks API keys (:meth:`~syvain_metrics.server.store.Store.authenticate`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._sessions: TTLCache[str, str] = TTLCache(MAX_SESSIONS, SESSION_TTL_S)
        self._tokens: TTLCache[str, str] = TTLCache(MAX_SESSIONS, LOGIN_TOKEN_TTL_S)
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
            self.store.save_login("token", _digest(token), org_id, LOGIN_TOKEN_TTL_S)
            return token
        with self._lock:
            self._tokens[_digest(token)] = org_id
        return token

    def redeem(self, token: str) -> str | None:
        """Spend a login token: a new session id, or ``None`` if unknown, used or expired."""
        if self._shared:
            org_id = self.store.find_login("token", _digest(token), spend=True)
        else:
            with self._lock:
                org_id = self._tokens.pop(_digest(token), None)
        return None if org_id is None else self._open(org_id)

    def _open(self, org_id: str) -> str:
        session_id = secrets.token_urlsafe(32)
        if self._shared:
            self.store.save_login("session", _digest(session_id), org_id, SESSION_TTL_S)
            return session_id
        with self._lock:
            self._sessions[_digest(session_id)] = org_id
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
                self._sessions.pop(_digest(session_id), None)
