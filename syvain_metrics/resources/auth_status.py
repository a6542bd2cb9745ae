"""Who the session is: ``sm.whoami()``.

Example:
    >>> sm.whoami()  # doctest: +SKIP
    <AuthStatus api_key org=Acme ML (6a1f0c3e-...)>
"""

from __future__ import annotations

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.contract import operations
from syvain_metrics.resources.base import Resource


class AuthStatus(Resource):
    """The answer of ``GET /auth/status``: ``kind``, ``organization_id``, ``organization_name``.

    Example:
        >>> s = AuthStatus({"auth": {"kind": "api_key"}, "organization": {"id": "o1", "name": "Acme"}},
        ...                session=None)
        >>> s.kind, s.organization_id, s.organization_name
        ('api_key', 'o1', 'Acme')
    """

    @property
    def kind(self) -> str:
        """``"api_key"``, ``"session"`` or ``"ingestion_key"``."""
        kind: str = self._data["auth"]["kind"]
        return kind

    @property
    def organization_id(self) -> str:
        """The organization's id."""
        org_id: str = self._data["organization"]["id"]
        return org_id

    @property
    def organization_name(self) -> str | None:
        """The organization's name, when the service gives it."""
        name: str | None = self._data["organization"].get("name")
        return name

    def _key(self) -> object:
        return (self.kind, self.organization_id)

    def __repr__(self) -> str:
        return f"<AuthStatus {self.kind} org={self.organization_name} ({self.organization_id})>"


def whoami(session: Session | None = None) -> AuthStatus:
    """What the session's credential is and which organization it belongs to.

    Example:
        >>> sm.whoami().organization_name  # doctest: +SKIP
        'Acme ML'
    """
    bound = get_session(session)
    data = bound.call(operations.AUTH_STATUS)
    return AuthStatus(data, session=bound)
