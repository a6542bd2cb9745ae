"""The local server's SQLite store: organizations, API keys, folders, experiments,
metric events, annotations, ingestion keys, dashboard logins and idempotency records.

:class:`Store` is assembled from one mixin per area over :class:`~.base.StoreBase`, which
owns the connections, the transactions and the write turns. Methods take the caller's
organization id and answer 404 for another organization's ids; they return plain records
(:mod:`~.records`), which :mod:`syvain_metrics.server.wire` writes as the contract's JSON.

Example:
    >>> store = Store(":memory:", clock=lambda: 1_795_716_952.0)
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> org = store.authenticate(key).org_id
    >>> store.create_folder(org, "baselines", None).path
    'baselines'
"""

from __future__ import annotations

from syvain_metrics.server.staging import StagedBatch
from syvain_metrics.server.store.annotations import Annotations
from syvain_metrics.server.store.base import StoreBase
from syvain_metrics.server.store.blocks import Blocks
from syvain_metrics.server.store.credentials import (
    DEFAULT_INGESTION_KEY_TTL_MS,
    ORGANIZATION_NAME,
    Credentials,
    Principal,
)
from syvain_metrics.server.store.experiments import Experiments
from syvain_metrics.server.store.folders import Folders
from syvain_metrics.server.store.ids import create_private, new_id, token_hash
from syvain_metrics.server.store.ingest import Ingest
from syvain_metrics.server.store.logins import IDEMPOTENCY_TTL_MS, Logins
from syvain_metrics.server.store.schema import SCHEMA_VERSION, NewerLayoutError
from syvain_metrics.server.store.summaries import SeriesSummary, Summaries

__all__ = [
    "DEFAULT_INGESTION_KEY_TTL_MS",
    "IDEMPOTENCY_TTL_MS",
    "ORGANIZATION_NAME",
    "SCHEMA_VERSION",
    "NewerLayoutError",
    "Principal",
    "SeriesSummary",
    "StagedBatch",
    "Store",
    "create_private",
    "new_id",
    "token_hash",
]


class Store(
    Credentials, Logins, Folders, Annotations, Experiments, Ingest, Blocks, Summaries, StoreBase
):
    """Every piece of server state, in one SQLite database (a file, or ``":memory:"``): one
    mixin per area over :class:`~syvain_metrics.server.store.base.StoreBase`, whose arguments
    (``path``, ``clock``, ``shared``) and errors it takes.

    Example:
        >>> store = Store()
        >>> store.use_api_keys([])[0].startswith("ak_local_")
        True
    """
