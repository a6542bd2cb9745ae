"""The metric catalog of one experiment: ``catalog()`` and ``catalog_values()``.

Example:
    >>> exp.catalog()  # doctest: +SKIP
    [<CatalogEntry loss keys=['split']>]
"""

from __future__ import annotations

from collections.abc import Sequence

from syvain_metrics.contract import operations
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.catalog import (
    CatalogQuery,
    CatalogValuesQuery,
)
from syvain_metrics.errors import MetricsValidationError
from syvain_metrics.resources.catalog import CatalogEntry, CatalogList, CatalogValues
from syvain_metrics.resources.experiment.base import ExperimentBase


class Cataloging(ExperimentBase):
    """The cataloging operations of an experiment."""

    def catalog(self, limit: int | None = None) -> CatalogList:
        """Metric names of this experiment and their metadata keys, alphabetically.

        Example:
            >>> exp.catalog()  # doctest: +SKIP
            [<CatalogEntry loss keys=['split']>]
        """
        query = load_request(CatalogQuery(), {"limit": limit})
        self._settle_logs()
        bound = self._bind()
        data = bound.call(operations.CATALOG, self.id, query=query)
        return CatalogList(CatalogEntry._from_wire(item, bound) for item in data["metrics"])

    def catalog_values(
        self,
        metric: str,
        *,
        keys: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> CatalogValues:
        """Metadata values seen with ``metric``, for ``keys`` (a key or a list) or all keys.

        Example:
            >>> exp.catalog_values("loss", keys=["split"]).values("split")  # doctest: +SKIP
            ['train', 'valid']
        """
        if not isinstance(metric, str) or not metric:
            raise MetricsValidationError({"metric": ["Must be a non-empty metric name."]})
        query = load_request(CatalogValuesQuery(), {"key": keys, "limit": limit})
        self._settle_logs()
        bound = self._bind()
        data = bound.call(operations.CATALOG_VALUES, self.id, metric, query=query)
        return CatalogValues._from_wire(data["metadata"], bound)
