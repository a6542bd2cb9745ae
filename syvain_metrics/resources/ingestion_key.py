"""Ingestion keys: per-experiment credentials for writing metrics and annotations.

Example:
    >>> key = exp.create_ingestion_key(name="ci", ttl_ms=600_000)  # doctest: +SKIP
    >>> key.token        # shown only on the object create_ingestion_key returns  # doctest: +SKIP
    >>> key.revoke().is_active                                       # doctest: +SKIP
    False
"""

from __future__ import annotations

import time
from typing import Any

from syvain_metrics.client.session import Session
from syvain_metrics.contract import operations
from syvain_metrics.resources.base import Resource, ms_time, wire
from syvain_metrics.resources.lists import ResourceList


class IngestionKey(Resource):
    """An ingestion key. ``token`` is set only on the object returned by creation and is
    never shown in ``repr`` or ``to_dict()``.

    Example:
        >>> key = IngestionKey({"id": "k1", "experiment_id": "e1", "name": "ci",
        ...                     "created_at_ms": 0, "expires_at_ms": 1}, session=None, token="s3cret")
        >>> "s3cret" in repr(key)
        False
    """

    _repr_fields = ("name",)
    _changes_hint = (
        "revoke a key with key.revoke(), or make another with exp.create_ingestion_key()."
    )

    id = wire[str]()
    experiment_id = wire[str]()
    name = wire[str]()
    created_at_ms = wire[int]()
    expires_at_ms = wire[int]()
    revoked_at_ms = wire["int | None"]()
    last_used_at_ms = wire["int | None"]()
    created_at = ms_time("created_at_ms")
    expires_at = ms_time("expires_at_ms")
    revoked_at = ms_time("revoked_at_ms")
    last_used_at = ms_time("last_used_at_ms")

    def __init__(self, data: Any, *, session: Session | None, token: str | None = None) -> None:
        super().__init__(data, session=session)
        self.__token = token

    @property
    def token(self) -> str | None:
        """The bearer token, only right after creation (``None`` otherwise)."""
        return self.__token

    @property
    def is_active(self) -> bool:
        """Not revoked and not expired (by the session's clock)."""
        if self.revoked_at_ms is not None:
            return False
        now_ms = (self._session.clock() if self._session else time.time()) * 1000
        return bool(self.expires_at_ms > now_ms)

    def _frame_row(self) -> dict[str, Any]:
        return {**super()._frame_row(), "is_active": self.is_active}

    def _html_title(self) -> str:
        return f"IngestionKey {self.name!r}"

    def revoke(self) -> IngestionKey:
        """Revoke this key; revoking twice keeps the first revocation time.

        Example:
            >>> key.revoke().revoked_at  # doctest: +SKIP
            datetime.datetime(2026, 11, 26, ...)
        """
        bound = self._bind()
        data = bound.call(operations.REVOKE_INGESTION_KEY, self.experiment_id, self.id)
        self._update(data["key"])
        return self

    def __repr__(self) -> str:
        state = (
            "revoked"
            if self.revoked_at_ms is not None
            else "active"
            if self.is_active
            else "expired"
        )
        return f"<IngestionKey {self.name!r} {state} id={self.id}>"


class IngestionKeyList(ResourceList[IngestionKey]):
    """Ingestion keys, as ``exp.ingestion_keys()`` returns them (never with a token).

    Example:
        >>> exp.ingestion_keys().to_pandas()[["name", "expires_at"]]  # doctest: +SKIP
    """

    _noun = "keys"
    _columns = ("name", "created_at", "expires_at", "revoked_at", "last_used_at", "id")
