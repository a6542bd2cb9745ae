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
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, TypeVar, overload

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.errors import MetricsApiError
from syvain_metrics.tables.display import cell, flatten

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")


class wire(Generic[T]):  # noqa: N801 - reads like a field declaration
    """A read-only attribute backed by one wire field (``key`` defaults to the attribute name)."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key or ""
        self.name = self.key

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = self.key or name
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> wire[T]: ...
    @overload
    def __get__(self, obj: Resource, owner: type) -> T: ...
    def __get__(self, obj: Resource | None, owner: type) -> wire[T] | T:
        if obj is None:
            return self
        value: T = obj._data.get(self.key)  # type: ignore[assignment]
        return value

    def __set__(self, obj: Resource, value: NoReturn) -> None:  # type checkers refuse it too
        obj._refuse_assignment(self.name)


class ms_time:  # noqa: N801
    """A read-only aware ``datetime`` view of a millisecond wire field (``None`` stays ``None``)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.name = key.removesuffix("_ms")

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> ms_time: ...
    @overload
    def __get__(self, obj: Resource, owner: type) -> dt.datetime | None: ...
    def __get__(self, obj: Resource | None, owner: type) -> ms_time | dt.datetime | None:
        if obj is None:
            return self
        return from_ms(obj._data.get(self.key))

    def __set__(self, obj: Resource, value: NoReturn) -> None:  # type checkers refuse it too
        obj._refuse_assignment(self.name)


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
    _changes_hint: ClassVar[str] = "the service offers no way to change it."
    """Completes "<Class>.<field> is read-only: ..." (what can be changed, and how)."""

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

    def __setattr__(self, name: str, value: Any) -> None:
        # Fields mirror the service's data: assigning one would change nothing there, so it
        # is refused rather than silently lost. Properties with a setter stay assignable.
        attribute = getattr(type(self), name, None)
        if name.startswith("_") or (isinstance(attribute, property) and attribute.fset):
            object.__setattr__(self, name, value)
            return
        self._refuse_assignment(name)

    def _refuse_assignment(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__}.{name} is read-only: {self._changes_hint}")

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

    def _frame_row(self) -> dict[str, Any]:
        """This object as one row of its list's table: readable values (``*_ms`` fields as
        UTC datetimes named without ``_ms``, mappings flattened with dots)."""
        row: dict[str, Any] = {}
        for key, value in self._data.items():
            if key.endswith("_ms") and (value is None or isinstance(value, int)):
                row[key.removesuffix("_ms")] = from_ms(value)
            elif isinstance(value, Mapping):
                row.update(flatten(value, f"{key}."))
            else:
                row[key] = value
        return row

    def _html_title(self) -> str:
        return f"{type(self).__name__} {self._key()}"

    def _html_links(self) -> dict[str, str]:
        """Fields shown as links (field name -> URL)."""
        return {}

    def _repr_html_(self) -> str:
        row = self._frame_row()
        links = self._html_links()
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(key)}</th>"
            f"<td style='text-align:left'>{_linked(cell(value), links.get(key))}</td></tr>"
            for key, value in row.items()
        )
        return f"<b>{html.escape(self._html_title())}</b><table>{cells}</table>"


def _linked(text: str, url: str | None) -> str:
    shown = html.escape(text)
    if not url:
        return shown
    return f"<a href='{html.escape(url, quote=True)}' target='_blank'>{shown}</a>"
