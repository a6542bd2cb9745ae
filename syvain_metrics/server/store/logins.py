"""Dashboard logins (kept in the database only when processes share it) and idempotency
records: the short-lived secrets and answers every process serving a database must see.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> store.save_login("session", "digest", "org-1", ttl_s=60)
    >>> store.find_login("session", "digest")
    'org-1'
"""

from __future__ import annotations

from syvain_metrics.server.store.base import StoreBase

IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000


class Logins(StoreBase):
    """Dashboard login secrets (their hashes) and stored idempotent answers."""

    def save_login(
        self, kind: str, digest: str, org_id: str, ttl_s: float, *, keep: int | None = None
    ) -> None:
        """Keep a dashboard login secret's hash (``kind``: ``"token"`` or ``"session"``);
        with ``keep``, the organization's oldest of that kind past ``keep`` are dropped."""
        with self._tx() as db:
            db.execute("DELETE FROM dashboard_logins WHERE expires_at_ms <= ?", (self.now_ms(),))
            db.execute(
                "INSERT OR REPLACE INTO dashboard_logins VALUES (?, ?, ?, ?)",
                (kind, digest, org_id, self.now_ms() + int(ttl_s * 1000)),
            )
            if keep is not None:
                db.execute(
                    "DELETE FROM dashboard_logins WHERE kind = ? AND org_id = ? AND rowid NOT IN "
                    "(SELECT rowid FROM dashboard_logins WHERE kind = ? AND org_id = ? "
                    "ORDER BY expires_at_ms DESC, rowid DESC LIMIT ?)",
                    (kind, org_id, kind, org_id, keep),
                )

    def find_login(self, kind: str, digest: str, *, spend: bool = False) -> str | None:
        """The organization a login secret opens (``None``: unknown or expired); ``spend``
        removes it, so a one-time token opens one session only, in whichever process."""
        with self._tx() as db:
            row = db.execute(
                "SELECT org_id, expires_at_ms FROM dashboard_logins WHERE kind = ? AND digest = ?",
                (kind, digest),
            ).fetchone()
            if row is not None and (spend or row["expires_at_ms"] <= self.now_ms()):
                db.execute(
                    "DELETE FROM dashboard_logins WHERE kind = ? AND digest = ?", (kind, digest)
                )
        if row is None or row["expires_at_ms"] <= self.now_ms():
            return None
        return str(row["org_id"])

    def forget_logins(self, kind: str | None = None, digest: str | None = None) -> None:
        """Remove one login secret, or all of them (a server starting forgets every login)."""
        with self._tx() as db:
            if digest is None:
                db.execute("DELETE FROM dashboard_logins")
            else:
                db.execute(
                    "DELETE FROM dashboard_logins WHERE kind = ? AND digest = ?", (kind, digest)
                )

    # -- idempotency records --------------------------------------------------------------

    def find_idempotency(self, credential: str, key: str) -> tuple[str, int, bytes] | None:
        """``(fingerprint, status, body)`` stored for a key in the last 24 hours, if any."""
        with self._reading() as db:
            row = db.execute(
                "SELECT fingerprint, status, body FROM idempotency "
                "WHERE credential = ? AND key = ? AND created_at_ms > ?",
                (credential, key, self.now_ms() - IDEMPOTENCY_TTL_MS),
            ).fetchone()
        return None if row is None else (row["fingerprint"], row["status"], bytes(row["body"]))

    def save_idempotency(
        self, credential: str, key: str, fingerprint: str, status: int, body: bytes
    ) -> None:
        """Remember an answer for 24 hours (and forget the ones that are older)."""
        now = self.now_ms()
        with self._tx() as db:
            if now - self._purged_at_ms >= 60_000:  # expired records go once a minute
                db.execute(
                    "DELETE FROM idempotency WHERE created_at_ms <= ?",
                    (now - IDEMPOTENCY_TTL_MS,),
                )
                self._purged_at_ms = now
            db.execute(
                "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                (credential, key, fingerprint, status, body, now),
            )
