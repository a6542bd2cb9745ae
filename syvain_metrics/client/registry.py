"""The default session: what class-level calls (``sm.Experiment.get(...)``) use when they
are given no ``session=``.

Example:
    >>> import syvain_metrics as sm
    >>> session = sm.connect("ak_org_123", host="http://127.0.0.1:8765")
    >>> sm.get_session() is session
    True
    >>> sm.set_default_session(None)
    >>> session.close()
"""

from __future__ import annotations

import threading
from typing import Any

from syvain_metrics.client.auth import hide_key
from syvain_metrics.client.session import Session
from syvain_metrics.errors import MetricsApiError

_default_lock = threading.Lock()
_default: Session | None = None


def connect(api_key: str | None = None, **options: Any) -> Session:
    """Open a :class:`Session` and make it the default for class-level calls; ``options`` are
    the session's keyword arguments (``host=``, ``timeout=``, ``spool_dir=``, ...).

    Example:
        >>> import syvain_metrics as sm
        >>> sm.connect("ak_org_123", host="http://127.0.0.1:8765")
        <Session http://127.0.0.1:8765 auth=api_key>
    """
    global _default
    credential = hide_key(api_key)
    del api_key
    session = Session(credential, **options)
    with _default_lock:
        _default = session
    return session


def set_default_session(session: Session | None) -> None:
    """Make ``session`` the default for class-level calls (``None`` clears it).

    Example:
        >>> sm.set_default_session(local_session)  # doctest: +SKIP
    """
    global _default
    with _default_lock:
        _default = session


def get_session(session: Session | None = None) -> Session:
    """``session`` if given, else the default one set by :func:`connect`.

    Example:
        >>> get_session() is sm.connect("ak_org_123")  # doctest: +SKIP
        True
    """
    if session is not None:
        return session
    with _default_lock:
        current = _default
    if current is None:
        raise MetricsApiError(
            "No session: call sm.connect(...) first, or pass session=sm.Session(...)."
        )
    return current
