"""How objects show themselves in a notebook: readable cells (UTC times, whole steps,
compact metadata) in small HTML tables, and flattened metadata for table columns.

Example:
    >>> flatten({"model": {"width": 512, "depth": 4}, "lr": 0.1})
    {'model.width': 512, 'model.depth': 4, 'lr': 0.1}
    >>> when = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.timezone.utc)
    >>> cell(when), cell({"split": "train"}), cell(3.0)
    ('2023-11-14 22:13:20 UTC', '{"split":"train"}', '3.0')
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["cell", "flatten", "html_table", "short_list"]

CELL_LIMIT = 80
"""The longest text shown in one table cell (longer ones end with an ellipsis)."""

HTML_ROWS = 20
"""Rows shown by a list's HTML table (the rest is counted)."""


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, their keys joined with dots.

    Example:
        >>> flatten({"a": {"b": 1}, "c": []}, prefix="meta.")
        {'meta.a.b': 1, 'meta.c': []}
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def cell(value: Any, limit: int = CELL_LIMIT) -> str:
    """One value as table text: datetimes in UTC to the second, durations without
    microseconds, mappings and lists as compact JSON, ``None`` as an empty cell.

    Example:
        >>> cell(None), cell(dt.timedelta(seconds=75.5)), cell([1, 2])
        ('', '0:01:16', '[1,2]')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = ""
    elif isinstance(value, dt.datetime):
        text = value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    elif isinstance(value, dt.timedelta):
        text = str(dt.timedelta(seconds=round(value.total_seconds())))
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    elif isinstance(value, float):
        text = f"{value:.6g}" if abs(value) >= 1e6 or value != round(value, 6) else repr(value)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def html_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    total: int | None = None,
    links: Mapping[int, Sequence[str | None]] | None = None,
) -> str:
    """A small HTML table: a bold title, a header row, each value through :func:`cell`.

    ``total`` counts all rows when ``rows`` holds only the first ones; ``links`` maps a
    column index to one URL per row (that column's cells become links).

    Example:
        >>> ">1</td>" in html_table("T", ["a"], [[1]])
        True
    """
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = []
    shown = 0
    for index, row in enumerate(rows):
        cells = []
        for column, value in enumerate(row):
            text = html.escape(cell(value))
            url = links[column][index] if links and column in links else None
            if url:
                text = f"<a href='{html.escape(url, quote=True)}' target='_blank'>{text}</a>"
            cells.append(f"<td style='text-align:left'>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
        shown += 1
    more = ""
    if total is not None and total > shown:
        more = f"<p>… {total - shown:,} more</p>"
    return (
        f"<b>{html.escape(title)}</b><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>{more}"
    )


def short_list(type_name: str, items: Sequence[Any], shown: int = 5) -> str:
    """A list's short ``repr``: its type and size, then the first items' reprs.

    Example:
        >>> short_list("FolderList", ["a", "b"])
        "<FolderList 2: 'a', 'b'>"
    """
    head = ", ".join(repr(item) for item in items[:shown])
    rest = f", … {len(items) - shown:,} more" if len(items) > shown else ""
    return f"<{type_name} {len(items):,}{': ' if items else ''}{head}{rest}>"
