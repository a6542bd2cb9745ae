"""The host a client talks to (contract section 1): an ``http`` or ``https`` origin only,
checked before any request is made, with nothing of a password ever echoed.

Example:
    >>> normalize_host("http://127.0.0.1:8765/")
    'http://127.0.0.1:8765'
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from syvain_metrics.errors import MetricsApiAuthError

__all__ = ["normalize_host"]


def _shown(raw: str) -> str:
    """``raw`` for a message, without what may be a password (user info before ``@``)."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "", raw
    if "@" in rest.split("/", 1)[0]:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def normalize_host(value: str) -> str:
    """Check that ``value`` is a bare http(s) origin and return it without a trailing ``/``.

    Example:
        >>> normalize_host("https://metrics.syvain.com/")
        'https://metrics.syvain.com'
        >>> normalize_host("https://metrics.syvain.com/api")
        Traceback (most recent call last):
        ...
        syvain_metrics.errors.MetricsApiAuthError: Metrics API host must be an origin without a path, query or fragment: https://metrics.syvain.com/api (query and fragment not shown).
    """
    if not isinstance(value, str):
        raise MetricsApiAuthError("Metrics API host must be a string.")
    raw = value.strip()
    if not raw.isascii() or not raw.isprintable() or any(char.isspace() for char in raw):
        raise MetricsApiAuthError(
            f"Metrics API host must not contain spaces, control or non-ASCII characters: "
            f"{_shown(raw).encode('ascii', 'backslashreplace').decode()[:200]!r} (an internationalised "
            "name goes in its xn-- form)."
        )
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise MetricsApiAuthError(
            f"Metrics API host is not a valid URL: {_shown(raw)!r}."
        ) from None
    if parts.scheme not in {"http", "https"}:
        raise MetricsApiAuthError(f"Metrics API host must use http or https: {raw!r}.")
    if parts.username is not None or parts.password is not None:
        # Not echoed: user info may hold a password.
        raise MetricsApiAuthError("Metrics API host must not contain user info.")
    if not parts.hostname:
        raise MetricsApiAuthError(f"Metrics API host must name a host: {raw!r}.")
    name = parts.hostname
    if "[" in parts.netloc and not _is_ipv6(name):
        # Python 3.11 refuses a bracketed non-address in urlsplit(); 3.10 lets it through.
        raise MetricsApiAuthError(f"Metrics API host is not a valid IPv6 address: {raw!r}.")
    if not re.fullmatch(r"[a-z0-9._-]+", name) and not (
        ":" in name and re.fullmatch(r"[0-9a-f:.]+", name)
    ):
        raise MetricsApiAuthError(f"Metrics API host is not a valid host name: {raw!r}.")
    if parts.path not in {"", "/"} or parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise MetricsApiAuthError(
            "Metrics API host must be an origin without a path, query or fragment: "
            f"{parts.scheme}://{parts.netloc}{parts.path} (query and fragment not shown)."
        )
    return f"{parts.scheme}://{parts.netloc}"


def _is_ipv6(name: str) -> bool:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return False
    return True
