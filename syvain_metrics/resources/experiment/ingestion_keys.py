"""Ingestion keys of one experiment: list, create, and forget the cached one.

Example:
    >>> [k.name for k in exp.ingestion_keys()]  # doctest: +SKIP
    ['SDK ingestion key']
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from syvain_metrics.contract import operations
from syvain_metrics.contract.limits import DEFAULT_INGESTION_KEY_NAME
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.ingestion_key import (
    IngestionKeyCreateRequest,
)
from syvain_metrics.resources.experiment.base import ExperimentBase
from syvain_metrics.resources.ingestion_key import IngestionKey, IngestionKeyList


class IngestionKeys(ExperimentBase):
    """The keys operations of an experiment."""

    def ingestion_keys(self) -> IngestionKeyList:
        """Every ingestion key of this experiment (revoked and expired ones included).

        Example:
            >>> [k.is_active for k in exp.ingestion_keys()]  # doctest: +SKIP
            [True]
        """
        bound = self._bind()
        data = bound.call(operations.LIST_INGESTION_KEYS, self.id)
        return IngestionKeyList(IngestionKey._from_wire(item, bound) for item in data["keys"])

    def create_ingestion_key(
        self,
        *,
        name: str = DEFAULT_INGESTION_KEY_NAME,
        ttl_ms: int | dt.timedelta | None = None,
    ) -> IngestionKey:
        """Mint an ingestion key (``ttl_ms``: 1 ms to 7 days, or a ``timedelta``). Its ``token``
        is readable on the returned object only.

        Example:
            >>> key = exp.create_ingestion_key(name="ci", ttl_ms=timedelta(hours=1))  # doctest: +SKIP
        """
        fields: dict[str, Any] = {"name": name}
        if ttl_ms is not None:
            fields["ttl_ms"] = ttl_ms
        body = load_request(IngestionKeyCreateRequest(), fields)
        bound = self._bind()
        data = bound.call(operations.CREATE_INGESTION_KEY, self.id, body=body)
        return IngestionKey(data["key"], session=bound, token=data["token"])

    def forget_ingestion_credential(self) -> None:
        """Drop the session's cached ingestion token for this experiment.

        Example:
            >>> exp.forget_ingestion_credential()  # doctest: +SKIP
        """
        self._bind().forget_ingestion_credential(self.id)
