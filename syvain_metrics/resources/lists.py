"""Lists of resources that read well in a notebook: a short ``repr``, an HTML table, and
``to_pandas()`` (one row per item, readable columns).

Example:
    >>> from syvain_metrics.resources.annotation import Annotation, AnnotationList
    >>> notes = AnnotationList([Annotation({"id": "a1", "experiment_id": "e1",
    ...     "annotation": "warmup done", "metadata": {"step": 10}, "created_at_ms": 0},
    ...     session=None)])
    >>> notes
    <AnnotationList 1: <Annotation 'warmup done' id=a1>>
    >>> notes.to_pandas()[["text", "metadata.step"]].to_dict("records")  # doctest: +SKIP
    [{'text': 'warmup done', 'metadata.step': 10}]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, SupportsIndex, TypeVar, overload

from syvain_metrics.client.listing import read_by_time
from syvain_metrics.resources.base import Resource
from syvain_metrics.tables.display import HTML_ROWS, html_table, short_list
from syvain_metrics.tables.frames import require

if TYPE_CHECKING:
    import pandas
    from marshmallow import Schema
    from typing_extensions import Self

    from syvain_metrics.client.session import Session
    from syvain_metrics.contract.operations import Operation

R = TypeVar("R", bound=Resource)


class ResourceList(list[R]):
    """A ``list`` of resources plus :meth:`to_pandas` and an HTML table for notebooks.

    Example:
        >>> FolderList([]).to_pandas().empty  # doctest: +SKIP
        True
    """

    _noun: ClassVar[str] = "items"
    _columns: ClassVar[tuple[str, ...]] = ()
    """The columns of an empty list's frame, and the first columns of a full one."""

    def __init__(self, items: Iterable[R] = ()) -> None:
        super().__init__(items)

    @overload
    def __getitem__(self, index: SupportsIndex) -> R: ...
    @overload
    def __getitem__(self, index: slice) -> Self: ...
    def __getitem__(self, index: SupportsIndex | slice) -> R | Self:
        if isinstance(index, slice):
            return type(self)(super().__getitem__(index))
        return super().__getitem__(index)

    def _rows(self) -> list[dict[str, Any]]:
        rows = [item._frame_row() for item in self]
        columns = list(self._columns)
        for row in rows:
            columns.extend(key for key in row if key not in columns)
        return [{column: row.get(column) for column in columns} for row in rows]

    def _column_names(self, rows: list[dict[str, Any]]) -> list[str]:
        return list(rows[0]) if rows else list(self._columns)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per item with readable columns: times as UTC datetimes, mappings
        flattened into one column per key (``metadata.step``); needs the ``pandas`` extra.

        Example:
            >>> exp.annotations().to_pandas()[["created_at", "text"]]  # doctest: +SKIP
        """
        pd = require("pandas", "pandas")
        rows = self._rows()
        return pd.DataFrame(rows, columns=self._column_names(rows))

    def __repr__(self) -> str:
        return short_list(type(self).__name__, self)

    def _repr_html_(self) -> str:
        rows = self._rows()
        columns = self._column_names(rows)
        title = f"{type(self).__name__} ({len(self):,} {self._noun})"
        shown = list(self[:HTML_ROWS])
        per_item = [item._html_links() for item in shown]
        links = {
            index: [item_links.get(column) for item_links in per_item]
            for index, column in enumerate(columns)
            if any(column in item_links for item_links in per_item)
        }
        return html_table(
            title,
            columns,
            [list(row.values()) for row in rows[:HTML_ROWS]],
            total=len(rows),
            links=links,
        )


def read_created(
    session: Session,
    route: Operation,
    segments: tuple[str, ...],
    reply: Schema,
    items_key: str,
    query: dict[str, Any],
    *,
    newest_first: bool,
    largest_page: int,
) -> list[dict[str, Any]]:
    """A list ordered by ``created_at_ms`` (experiments newest first, annotations oldest
    first): every item, or at most ``query["limit"]``, read by
    :func:`~syvain_metrics.client.listing.read_by_time` through ``session``."""

    def fetch(params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = session.call(route, *segments, reply=reply, query=params)[
            items_key
        ]
        return items

    query = dict(query)
    limit = query.pop("limit", None)
    return read_by_time(
        fetch,
        query,
        bound="to" if newest_first else "from",
        time_field="created_at_ms",
        descending=newest_first,
        largest_page=largest_page,
        limit=limit,
    )
