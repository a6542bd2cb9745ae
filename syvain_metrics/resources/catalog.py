"""The metric catalog of an experiment: which metrics it has and their metadata values.

Example:
    >>> exp.catalog()                              # doctest: +SKIP
    [<CatalogEntry loss keys=['split']>, <CatalogEntry lr keys=[]>]
    >>> exp.catalog_values("loss", keys="split").values("split")  # doctest: +SKIP
    ['train', 'valid']
"""

from __future__ import annotations

from typing import Any

from syvain_metrics.resources.base import Resource, wire
from syvain_metrics.resources.lists import ResourceList


class CatalogEntry(Resource):
    """A metric name and the metadata keys seen with it.

    Example:
        >>> CatalogEntry({"metric_name": "loss", "metadata_keys": ["split"]}, session=None)
        <CatalogEntry loss keys=['split']>
    """

    _id_field = "metric_name"

    metric_name = wire[str]()
    metadata_keys = wire[list[str]]()

    def __repr__(self) -> str:
        return f"<CatalogEntry {self.metric_name} keys={self.metadata_keys}>"


class CatalogValues(Resource):
    """Metadata values of one metric: ``keys`` is a list of ``{key, values, value_count}``.

    Example:
        >>> cv = CatalogValues({"metric_name": "loss", "scanned_event_count": 2,
        ...     "keys": [{"key": "split", "values": ["train"], "value_count": 1}]}, session=None)
        >>> cv.values("split"), cv.value_count("split")
        (['train'], 1)
    """

    _id_field = "metric_name"

    metric_name = wire[str]()
    scanned_event_count = wire[int]()
    keys = wire[list[dict[str, Any]]]()

    def _entry(self, key: str) -> dict[str, Any]:
        for entry in self.keys:
            if entry["key"] == key:
                return entry
        raise KeyError(f"No values were listed for metadata key {key!r}.")

    def values(self, key: str) -> list[Any]:
        """The listed values of one metadata key (``KeyError`` if the key was not listed).

        Example:
            >>> exp.catalog_values("loss", keys="split").values("split")  # doctest: +SKIP
            ['train', 'valid']
        """
        return list(self._entry(key)["values"])

    def value_count(self, key: str) -> int:
        """How many distinct values the key has (before the ``limit`` cut).

        Example:
            >>> exp.catalog_values("loss", limit=1).value_count("split")  # doctest: +SKIP
            2
        """
        count: int = self._entry(key)["value_count"]
        return count

    def __repr__(self) -> str:
        keys = [entry["key"] for entry in self.keys]
        return f"<CatalogValues {self.metric_name} scanned={self.scanned_event_count} keys={keys}>"


class CatalogList(ResourceList[CatalogEntry]):
    """An experiment's metric catalog, as ``exp.catalog()`` returns it.

    Example:
        >>> exp.catalog().to_pandas()  # doctest: +SKIP
    """

    _noun = "metrics"
    _columns = ("metric_name", "metadata_keys")
