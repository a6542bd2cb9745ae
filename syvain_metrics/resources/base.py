"""What every active-record resource shares: its wire data, its session, typed field
descriptors, equality by id, a short ``repr`` and an HTML view for notebooks.

Example:
    >>> class Thing(Resource):
    ...     id = wire[str]()
    ...     name = wire[str]()
    >>> t = Thing({"id": "t1", "name": "x", "extra": 3}, session=None)
    >>> t.name, t.extra, t.to_dict()
    ('x', 3, {'id': 't1', 'name': 'x', 'extra': 3})
"""

from __future__ import annotations

import copy
import datetime as dt
import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from syvain_metrics.errors import MetricsApiError
from syvain_metrics.session import Session, get_session

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")


class wire(Generic[T]):  # noqa: N801 - reads like a field declaration
    """A read-only attribute backed by one wire field (``key`` defaults to the attribute name)."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key or ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = self.key or name

    @overload
    def __get__(self, obj: None, owner: type) -> wire[T]: ...
    @overload
    def __get__(self, obj: Resource, owner: type) -> T: ...
    def __get__(self, obj: Resource | None, owner: type) -> wire[T] | T:
        if obj is None:
            return self
        value: T = obj._data.get(self.key)  # type: ignore[assignment]
        return value


class ms_time:  # noqa: N801
    """A read-only aware ``datetime`` view of a millisecond wire field (``None`` stays ``None``)."""

    def __init__(self, key: str) -> None:
        self.key = key

    @overload
    def __get__(self, obj: None, owner: type) -> ms_time: ...
    @overload
    def __get__(self, obj: Resource, owner: type) -> dt.datetime | None: ...
    def __get__(self, obj: Resource | None, owner: type) -> ms_time | dt.datetime | None:
        if obj is None:
            return self
        return from_ms(obj._data.get(self.key))


def from_ms(value: int | None) -> dt.datetime | None:
    """Milliseconds since the epoch as an aware UTC ``datetime``.

    Example:
        >>> from_ms(0)
        datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value / 1000, tz=dt.timezone.utc)


class Resource:
    """Base of the active-record classes: wire data plus the session it came from.

    Attributes mirror the wire fields; unknown fields the service adds are readable
    as attributes too. Reading an attribute never sends a request.
    """

    _id_field: ClassVar[str] = "id"
    _repr_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data: Mapping[str, Any], *, session: Session | None) -> None:
        self._data: dict[str, Any] = dict(data)
        self._session = session

    @classmethod
    def _from_wire(cls, data: Mapping[str, Any], session: Session) -> Self:
        return cls(data, session=session)

    @property
    def session(self) -> Session:
        """The session this object came from (used by its methods)."""
        if self._session is None:
            raise MetricsApiError(f"This {type(self).__name__} is not bound to a session.")
        return self._session

    def _bind(self) -> Session:
        """The session this object came from, else the default one."""
        return get_session(self._session)

    def _update(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r}; fields: "
                f"{', '.join(sorted(self.__dict__.get('_data', {})))}"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._data})

    def to_dict(self) -> dict[str, Any]:
        """The wire form of this object (a deep copy).

        Example:
            >>> folder.to_dict()["folder_id"]  # doctest: +SKIP
            '7b0f6a52-...'
        """
        return copy.deepcopy(self._data)

    def _key(self) -> Any:
        return self._data.get(self._id_field)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return bool(self._key() == other._key())

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        shown = " ".join(
            str(self._data[f]) for f in self._repr_fields if self._data.get(f) is not None
        )
        return f"<{type(self).__name__} {shown} id={self._key()}>".replace("  ", " ")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(_short(v))}</td></tr>"
            for k, v in self._data.items()
        )
        return f"<b>{type(self).__name__}</b><table>{rows}</table>"


def _short(value: Any, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
