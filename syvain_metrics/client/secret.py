"""A key or token that hides itself: its ``repr`` and ``str`` never show the value.

API keys and ingestion tokens are kept as :class:`Secret` everywhere in the SDK, so that
error reporters which record the local variables of every frame (``traceback`` with
``capture_locals=True``, Sentry, IDE debuggers) see ``Secret('***')`` instead of the key.
The value is revealed only where the ``Authorization`` header is built, deep inside
``requests`` (see :class:`syvain_metrics.client.transport.BearerAuth`), at the last moment.

Example:
    >>> key = Secret("ak_org_123")
    >>> key, f"{key}"
    (Secret('***'), "Secret('***')")
    >>> key.reveal()
    'ak_org_123'
"""

from __future__ import annotations

import hmac


class Secret:
    """A string that ``repr``, ``str`` and formatting never show; :meth:`reveal` gives it.

    Example:
        >>> Secret("tok") == Secret("tok"), Secret("tok") == "tok", bool(Secret(""))
        (True, False, False)
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: only where it must travel (a header) or be compared.

        Example:
            >>> Secret("tok").reveal()
            'tok'
        """
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"),
            other._value.encode("utf-8", "surrogatepass"),
        )

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)
