"""Who may call: organizations, their API keys, and experiments' ingestion keys.

API keys and ingestion tokens are stored only as hashes (:func:`token_hash`).

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> store.authenticate(key).kind
    'api_key'
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from syvain_metrics.server.errors import ApiError, not_found
from syvain_metrics.server.store.base import StoreBase
from syvain_metrics.server.store.ids import new_id, token_hash
from syvain_metrics.server.store.records import KEY_COLUMNS, IngestionKey, Organization

DEFAULT_INGESTION_KEY_TTL_MS = 60 * 60 * 1000
ORGANIZATION_NAME = "Local"


@dataclass(frozen=True)
class Principal:
    """Who sent a request: an API key (a whole organization) or one experiment's ingestion key.

    ``credential`` is a hash of the bearer token; idempotency keys are scoped to it.
    """

    kind: Literal["api_key", "ingestion_key"]
    org_id: str
    credential: str
    experiment_id: str | None = None
    key_id: str | None = None


class Credentials(StoreBase):
    """Organizations, API keys and ingestion keys."""

    def use_api_keys(self, keys: Sequence[str]) -> list[str]:
        """Accept exactly ``keys``, each its own organization (kept across restarts).

        With no keys, the keys already stored in the database are accepted again, or a
        random one is made when there are none. Keys are stored only as hashes, so the
        stored ones cannot be shown: returns the accepted keys this store knows as text
        (``[]`` for a database that already had keys).

        Example:
            >>> from syvain_metrics.server.store import Store
            >>> Store().use_api_keys(["ak_a", "ak_b"])
            ['ak_a', 'ak_b']
        """
        for key in keys:
            if not key or key != key.strip():
                raise ValueError("An API key must be non-empty, without surrounding whitespace.")
        with self._tx() as db:
            if not keys:
                stored = {
                    r["key_hash"]: r["org_id"]
                    for r in db.execute("SELECT key_hash, org_id FROM api_keys ORDER BY rowid")
                }
                if stored:
                    self._accepted, self._known = stored, []
                    return []
                keys = [f"ak_local_{secrets.token_hex(16)}"]
            self._accepted = {token_hash(key): self._org_for(db, key) for key in keys}
            self._known = list(dict.fromkeys(keys))
        return list(self._known)

    def add_api_key(self, key: str | None = None) -> str:
        """Accept one more API key (a random one when ``None``): another organization.

        Example:
            >>> from syvain_metrics.server.store import Store
            >>> Store().add_api_key("ak_other")
            'ak_other'
        """
        key = key or f"ak_local_{secrets.token_hex(16)}"
        with self._tx() as db:
            self._accepted[token_hash(key)] = self._org_for(db, key)
            if key not in self._known:
                self._known.append(key)
        return key

    @property
    def api_keys(self) -> list[str]:
        """The accepted API keys this store was given or made (stored keys are only hashes)."""
        return list(self._known)

    @property
    def api_key_count(self) -> int:
        """How many API keys this store accepts, the stored ones included."""
        return len(self._accepted)

    def has_stored_api_keys(self) -> bool:
        """Whether the database holds any API key (as its hash), accepted by this store or not.

        Example:
            >>> from syvain_metrics.server.store import Store
            >>> Store().has_stored_api_keys()
            False
        """
        with self._reading() as db:
            return db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None

    def _org_for(self, db: sqlite3.Connection, key: str) -> str:
        digest = token_hash(key)
        found = db.execute("SELECT org_id FROM api_keys WHERE key_hash = ?", (digest,)).fetchone()
        if found is not None:
            return str(found["org_id"])
        org_id = new_id()
        now = self.now_ms()
        db.execute("INSERT INTO organizations VALUES (?, ?, ?)", (org_id, ORGANIZATION_NAME, now))
        db.execute("INSERT INTO api_keys VALUES (?, ?, ?)", (digest, org_id, now))
        return org_id

    def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token; 401 ``unauthorized`` if unknown, revoked or expired.

        Example:
            >>> store.authenticate("nope")  # doctest: +SKIP
            Traceback (most recent call last):
            ApiError: Invalid API key or ingestion token
        """
        digest = token_hash(token)
        org_id = self._accepted.get(digest)
        if org_id is not None:
            return Principal("api_key", org_id, digest)
        with self._reading() as db:  # not the writer's lock: a write may be under way
            key = db.execute(
                "SELECT id, org_id, experiment_id, expires_at_ms, revoked_at_ms "
                "FROM ingestion_keys WHERE token_hash = ?",
                (digest,),
            ).fetchone()
        if key is None:
            raise ApiError(401, "unauthorized", "Invalid API key or ingestion token")
        if key["revoked_at_ms"] is not None:
            raise ApiError(401, "unauthorized", "Ingestion token revoked")
        if self.now_ms() >= key["expires_at_ms"]:
            raise ApiError(401, "unauthorized", "Ingestion token expired")
        return Principal("ingestion_key", key["org_id"], digest, key["experiment_id"], key["id"])

    def organization(self, org_id: str) -> Organization:
        """An organization by its id."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name FROM organizations WHERE id = ?", (org_id,)
            ).fetchone()
        return Organization(row["id"], row["name"])

    # -- ingestion keys -------------------------------------------------------------------

    def create_ingestion_key(
        self, org_id: str, experiment_id: str, name: str, ttl_ms: int | None
    ) -> tuple[IngestionKey, str]:
        """A new key and its token (the token is stored only as a hash)."""
        token = f"ik_local_{secrets.token_urlsafe(24)}"
        key_id = new_id()
        now = self.now_ms()
        with self._tx() as db:
            self._experiment_row(db, org_id, experiment_id)
            db.execute(
                "INSERT INTO ingestion_keys (id, org_id, experiment_id, name, token_hash, "
                "created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    org_id,
                    experiment_id,
                    name,
                    token_hash(token),
                    now,
                    now + (ttl_ms or DEFAULT_INGESTION_KEY_TTL_MS),
                ),
            )
            key = db.execute(
                f"SELECT {KEY_COLUMNS} FROM ingestion_keys WHERE id = ?", (key_id,)
            ).fetchone()
        return IngestionKey(*key), token

    def list_ingestion_keys(self, org_id: str, experiment_id: str) -> list[IngestionKey]:
        """Every key of the experiment, revoked and expired ones too, oldest first."""
        with self._lock:
            self._experiment_row(self._db, org_id, experiment_id)
            rows = self._db.execute(
                f"SELECT {KEY_COLUMNS} FROM ingestion_keys WHERE experiment_id = ? "
                "ORDER BY created_at_ms, seq",
                (experiment_id,),
            ).fetchall()
        return [IngestionKey(*r) for r in rows]

    def revoke_ingestion_key(self, org_id: str, experiment_id: str, key_id: str) -> IngestionKey:
        """Revoke a key; revoking again keeps the first ``revoked_at_ms``."""
        with self._tx() as db:
            self._experiment_row(db, org_id, experiment_id)
            db.execute(
                "UPDATE ingestion_keys SET revoked_at_ms = ? "
                "WHERE id = ? AND experiment_id = ? AND revoked_at_ms IS NULL",
                (self.now_ms(), key_id, experiment_id),
            )
            key = db.execute(
                f"SELECT {KEY_COLUMNS} FROM ingestion_keys WHERE id = ? AND experiment_id = ?",
                (key_id, experiment_id),
            ).fetchone()
            if key is None:
                raise not_found("Ingestion key")
        return IngestionKey(*key)

    def touch_ingestion_key(self, key_id: str) -> None:
        """Record that an ingestion key was just used."""
        with self._tx() as db:
            db.execute(
                "UPDATE ingestion_keys SET last_used_at_ms = ? WHERE id = ?",
                (self.now_ms(), key_id),
            )
