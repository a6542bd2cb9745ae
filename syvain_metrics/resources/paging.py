"""Where :class:`~syvain_metrics.errors.PagingError` was imported from before it moved to
:mod:`syvain_metrics.errors`; kept so that those imports still work. Paging itself is
:mod:`syvain_metrics.client.paging`.

Example:
    >>> from syvain_metrics.resources.paging import PagingError
    >>> PagingError.__module__
    'syvain_metrics.errors'
"""

from syvain_metrics.errors import PagingError

__all__ = ["PagingError"]
