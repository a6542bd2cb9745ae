"""Reading every item of a list ordered by creation time (experiments, annotations), page
by page, through a ``fetch(params) -> items`` that knows nothing of paging.

Example:
    >>> read_by_time(lambda params: [], {}, bound="to", time_field="created_at_ms",
    ...              descending=True, largest_page=1000, limit=None)
    []
"""

from __future__ import annotations

from typing import Any

from syvain_metrics.client.pages import Fetch, Row, advance_bound, bound_not_kept, within_limit
from syvain_metrics.errors import PagingError


def read_by_time(
    fetch: Fetch,
    params: dict[str, Any],
    *,
    bound: str,
    time_field: str,
    descending: bool,
    largest_page: int,
    limit: int | None,
) -> list[Row]:
    """Every item of a list ordered by a creation time (experiments newest first, annotations
    oldest first), or at most ``limit``, in pages of ``largest_page``, moving the inclusive
    ``bound`` parameter (``to`` or ``from``) to the last time seen and dropping repeats by
    ``id``. As with metric rows, the end is a page that brings nothing new. A page whose
    items all share one time is read again as that one time, in the largest page.

    Example:
        >>> read_by_time(lambda params: [], {}, bound="to", time_field="created_at_ms",
        ...              descending=True, largest_page=1000, limit=None)
        []
    """
    fetch = within_limit(fetch)
    if limit is not None and limit <= largest_page:
        return fetch({**params, "limit": limit})
    query = dict(params)
    seen: set[str] = set()  # the previous page's items
    inclusive = False  # whether the bound sits on a time the previous page reached
    out: list[Row] = []
    while True:
        items = fetch({**query, "limit": largest_page})
        times = [item[time_field] for item in items]
        if times != sorted(times, reverse=descending):
            raise PagingError(
                f"The service's answer is not ordered by {time_field}: paging cannot rely on "
                f"it; pass limit= (at most {largest_page}) to read one page."
            )
        if bound in query and times:
            head, edge = times[0], query[bound]
            if (head != edge) if inclusive else (head > edge if descending else head < edge):
                raise bound_not_kept(bound, edge, head)
        fresh = [item for item in items if item["id"] not in seen]
        out.extend(fresh)
        if limit is not None and len(out) >= limit:
            return out[:limit]
        if not fresh:
            return out
        last = times[-1]
        inclusive = times[0] != last
        if not inclusive:
            if len(items) >= largest_page:
                # A full page at one time: that time alone, in the largest page, must fit.
                crowded = fetch({**query, "from": last, "to": last, "limit": largest_page})
                if len(crowded) >= largest_page:
                    raise PagingError(
                        f"More than {largest_page} items share {time_field}={last}: they "
                        "cannot be read completely."
                    )
                given = {item["id"] for item in items}
                out.extend(item for item in crowded if item["id"] not in given)
            last = last - 1 if descending else last + 1
        seen = {item["id"] for item in items}
        advance_bound(query, bound, last)
