"""Every query of the contract, declared once; the SDK and the local server load from it.

A :class:`Query` lists its parameters: name, wire name and kind. Each side builds its own
schema from that one list: :meth:`Query.client_schema` loads the Python values a user
passes (``limit=50``, an aware ``datetime``, ``metadata={"split": "train"}``) and dumps
them under their wire names; :meth:`Query.wire_schema` loads the strings of a query string
(``limit=50``, a repeated ``key``). A parameter added here is sent by the one and accepted by
the other, with each side's own messages.

Each query is declared next to the body and reply schemas of its area
(``ANNOTATION_LIST`` in :mod:`~syvain_metrics.contract.schemas.annotation`...) and named by its
operation in :mod:`~syvain_metrics.contract.operations`.

Example:
    >>> from syvain_metrics.contract.schemas.base import load_request
    >>> window = Query("Window", (Param("from_ms", "time", wire="from"), LIMIT))
    >>> load_request(window.client_schema()(), {"from": 5, "limit": 10})
    {'from': 5, 'limit': 10}
    >>> window.wire_schema(lambda text: text)().load({"from": "5", "limit": "10"})
    {'from_ms': 5, 'limit': 10}
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal

from marshmallow import RAISE, Schema, fields, validate, validates_schema

from syvain_metrics.contract.limits import MAX_COMPARE_SERIES
from syvain_metrics.contract.schemas.base import QuerySchema
from syvain_metrics.contract.schemas.fields import EpochMs, Flag, SafeInteger, StringList, _Field
from syvain_metrics.contract.schemas.query_fields import (
    JsonLoader,
    MetadataFilter,
    QueryBool,
    QueryInt,
    SeriesParam,
    SortBy,
    SortKeys,
    check_metadata_filter,
    metadata_fields,
)

Kind = Literal[
    "text", "name", "choice", "count", "time", "limit", "flag", "sort", "keys", "metadata", "series"
]
"""What a parameter holds:

- ``text``: any string; ``name``: a non-empty string; ``choice``: one of ``choices``;
- ``count``: an integer from 0 (a step); ``time``: ms since the epoch (the SDK also takes an
  aware ``datetime``); ``limit``: an integer from 1, any size on the wire (the server clamps);
- ``flag``: a boolean, ``true``/``false`` on the wire; ``sort``: sort keys among ``choices``,
  comma-joined on the wire; ``keys``: strings, the parameter repeated once per item;
- ``metadata``: the SDK's one-key filter, sent as ``metadata_key`` with ``metadata_value`` or
  ``metadata_value_json``; ``series``: a compact JSON object per compared series, repeated.
"""


@dataclass(frozen=True)
class Param:
    """One query parameter.

    Example:
        >>> Param("from_ms", "time", wire="from").wire_name
        'from'
    """

    name: str
    kind: Kind
    choices: tuple[str, ...] = ()
    wire: str | None = None
    """The name on the wire, when it differs from the Python name."""
    sdk_sends: bool = True
    """``False`` for a parameter the SDK sends by other means than the query schema (the
    compare series from their own list, a step narrowed to by paging)."""

    @property
    def wire_name(self) -> str:
        """The parameter's name in a query string."""
        return self.wire or self.name

    def client_field(self) -> _Field:
        """The field loading what an SDK user passes (``None`` leaves the parameter out)."""
        key: dict[str, Any] = {"data_key": self.wire, "allow_none": True}
        match self.kind:
            case "text" | "name" | "choice":
                return self._string(key)
            case "count" | "limit":
                return SafeInteger(minimum=1 if self.kind == "limit" else 0, **key)
            case "time":
                return EpochMs(**key)
            case "flag":
                return Flag(**key)
            case "sort":
                return SortKeys(choices=self.choices, **key)
            case "keys":
                return StringList(**key)
            case "metadata":
                return MetadataFilter(**key)
        raise ValueError(f"the SDK sends {self.name!r} by other means than its query schema")

    def wire_fields(self, loads: JsonLoader) -> dict[str, _Field]:
        """The field(s) loading the parameter's query-string values, by Python name."""
        return metadata_fields(loads) if self.kind == "metadata" else {self.name: self._wire(loads)}

    def _string(self, key: dict[str, Any]) -> _Field:
        # A string reads the same from a value and from a query string.
        if self.kind == "name":
            return fields.String(validate=validate.Length(min=1), **key)
        if self.kind == "choice":
            return fields.String(validate=validate.OneOf(self.choices), **key)
        return fields.String(**key)

    def _wire(self, loads: JsonLoader) -> _Field:
        key: dict[str, Any] = {"data_key": self.wire}
        match self.kind:
            case "text" | "name" | "choice":
                return self._string(key)
            case "count" | "time":
                return QueryInt(minimum=0, **key)
            case "limit":  # any size: the server clamps it
                return QueryInt(minimum=1, maximum=None, **key)
            case "flag":
                return QueryBool(**key)
            case "sort":
                return SortBy(choices=self.choices, **key)
            case "keys":
                return fields.List(fields.String(validate=validate.Length(min=1)), **key)
            case "series":
                one_to_64 = validate.Length(min=1, max=MAX_COMPARE_SERIES)
                return fields.List(SeriesParam(loads), required=True, validate=one_to_64, **key)
        raise ValueError(f"no query-string form for {self.kind!r}")


class WireQuerySchema(Schema):
    """A query-string schema: unknown parameters are an error, ``repeated`` names the
    parameters that may appear more than once, and a metadata value needs its key."""

    repeated: ClassVar[frozenset[str]] = frozenset()

    class Meta:
        unknown = RAISE

    @validates_schema
    def _metadata_rule(self, data: dict[str, Any], **kwargs: Any) -> None:
        check_metadata_filter(data)


@dataclass(frozen=True)
class Query:
    """The query parameters of one operation, in the order the SDK sends them."""

    schema_name: str
    """The name of the SDK's schema class (``ExperimentListQuery``...)."""
    params: tuple[Param, ...] = ()

    @property
    def wire_names(self) -> frozenset[str]:
        """Every parameter name a query string may hold."""
        names = {p.wire_name for p in self.params if p.kind != "metadata"}
        if any(p.kind == "metadata" for p in self.params):
            names |= {"metadata_key", "metadata_value", "metadata_value_json"}
        return frozenset(names)

    def client_schema(self) -> type[QuerySchema]:
        """The SDK's schema: loads Python values, dumps them by wire name in wire order."""
        return _client_schema(self)

    def wire_schema(self, loads: JsonLoader) -> type[WireQuerySchema]:
        """The server's schema: loads query-string values, JSON texts by ``loads``."""
        namespace: dict[str, Any] = {"__doc__": f"The query string of {self.schema_name}."}
        for param in self.params:
            namespace.update(param.wire_fields(loads))
        namespace["repeated"] = frozenset(
            p.wire_name for p in self.params if p.kind in ("keys", "series")
        )
        schema: type[WireQuerySchema] = type(self.schema_name, (WireQuerySchema,), namespace)
        return schema


@cache
def _client_schema(query: Query) -> type[QuerySchema]:
    sent = [p for p in query.params if p.sdk_sends]
    namespace: dict[str, Any] = {p.name: p.client_field() for p in sent}
    namespace["wire_order"] = tuple(p.name for p in sent)
    namespace["__doc__"] = f"The query of {query.schema_name}, as the SDK sends it."
    schema: type[QuerySchema] = type(query.schema_name, (QuerySchema,), namespace)
    return schema


LIMIT = Param("limit", "limit")
"""The ``limit`` of a list: an integer from 1 (a service clamps larger ones)."""

NO_QUERY = Query("EmptyQuery")
"""The query of an operation that takes no parameters."""
