"""``syvain-metrics sync``: replay what dead processes left in the spool, through a session.

Example:
    >>> sync_spool(default_root(), api_key="ak_...").summary()  # doctest: +SKIP
    'synced 2500 events from 3 batches in 1 spool(s); 0 rejected; 0 batches kept'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syvain_metrics.client.auth import hide_key
from syvain_metrics.client.secret import Secret
from syvain_metrics.client.session import Session
from syvain_metrics.pipeline.recovery import SyncReport, replay_spools


def sync_spool(
    root: Path,
    *,
    api_key: str | Secret | None = None,
    host: str | None = None,
    timeout: float = 60.0,
    other_hosts: bool = False,
    **session_options: Any,
) -> SyncReport:
    """Upload every batch left under ``root`` by this user's processes that ended, then
    remove it (see :func:`~syvain_metrics.pipeline.recovery.replay_spools`).

    ``api_key`` / ``host`` default as for a :class:`~syvain_metrics.Session`, opened (without
    a spool of its own) only once a batch is found; events go to that host only.

    Example:
        >>> sync_spool(Path("/nonexistent")).batches
        0
    """
    credential = hide_key(api_key)
    del api_key

    def connect() -> Session:
        # Never offline, whatever the environment says: sending is the point.
        options = {**session_options, "offline": False}
        return Session(credential, host=host, spool_dir=None, **options)

    return replay_spools(root, connect=connect, timeout=timeout, other_hosts=other_hosts)
