"""Credentials: an explicit API key, the CLI's ``"local"`` / ``"local-dev"`` files, or the environment.

Example:
    >>> creds = resolve_credentials("ak_org_123", host="http://127.0.0.1:8765/")
    >>> creds.host
    'http://127.0.0.1:8765'
    >>> creds  # the key never shows
    Credentials(host='http://127.0.0.1:8765', source='api_key', org_id=None)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from syvain_metrics.errors import MetricsApiAuthError

PRODUCTION_HOST = "https://metrics.syvain.com"
DEVELOPMENT_HOST = "https://syvain-metrics-app-dev.syvaintech.workers.dev"
API_KEY_ENV = "SYVAIN_METRICS_API_KEY"
HOST_ENV = "SYVAIN_METRICS_HOST"
_CLI_MODES = {
    "local": ("syvain-metrics", PRODUCTION_HOST),
    "local-dev": ("syvain-metrics-dev", DEVELOPMENT_HOST),
}


@dataclass(frozen=True)
class Credentials:
    """A resolved API key and the origin it is for. The key is kept out of ``repr``.

    Example:
        >>> Credentials(api_key="secret", host="https://metrics.syvain.com").host
        'https://metrics.syvain.com'
    """

    api_key: str = field(repr=False)
    host: str
    source: str = "api_key"
    org_id: str | None = None
    login_at: int | None = field(default=None, repr=False)


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
    raw = value.strip()
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as error:
        raise MetricsApiAuthError(f"Metrics API host is not a valid URL: {raw!r}.") from error
    if parts.scheme not in {"http", "https"}:
        raise MetricsApiAuthError(f"Metrics API host must use http or https: {raw!r}.")
    if parts.username is not None or parts.password is not None:
        # Not echoed: user info may hold a password.
        raise MetricsApiAuthError("Metrics API host must not contain user info.")
    if not parts.hostname:
        raise MetricsApiAuthError(f"Metrics API host must name a host: {raw!r}.")
    if parts.path not in {"", "/"} or parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise MetricsApiAuthError(
            "Metrics API host must be an origin without a path, query or fragment: "
            f"{parts.scheme}://{parts.netloc}{parts.path} (query and fragment not shown)."
        )
    return f"{parts.scheme}://{parts.netloc}"


def cli_auth_path(mode: str) -> Path:
    """Where the CLI keeps its login for ``mode`` (``"local"`` or ``"local-dev"``).

    Example:
        >>> cli_auth_path("local").name
        'auth.json'
    """
    app, _ = _CLI_MODES[mode]
    config_home = os.environ.get("XDG_CONFIG_HOME")
    root = Path(config_home).expanduser() if config_home else Path.home() / ".config"
    return root / app / "auth.json"


def load_cli_credentials(mode: str, *, host: str | None = None) -> Credentials:
    """Read the CLI's ``auth.json`` for ``mode``; an explicit ``host`` wins over the file's.

    Example:
        >>> load_cli_credentials("local")  # doctest: +SKIP
        Credentials(host='https://metrics.syvain.com', source='local', org_id='org_1')
    """
    path = cli_auth_path(mode)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise MetricsApiAuthError(f"Metrics CLI auth file was not found at {path}.") from error
    except (OSError, UnicodeDecodeError) as error:
        raise MetricsApiAuthError(f"Metrics CLI auth file could not be read: {path}.") from error
    except json.JSONDecodeError as error:
        raise MetricsApiAuthError(f"Metrics CLI auth file is not valid JSON: {path}.") from error
    if not isinstance(raw, dict):
        raise MetricsApiAuthError(f"Metrics CLI auth file must contain a JSON object: {path}.")
    api_key = raw.get("apiKey")
    if not isinstance(api_key, str) or not api_key.strip():
        raise MetricsApiAuthError(f"Metrics CLI auth file does not contain apiKey: {path}.")
    _, default_host = _CLI_MODES[mode]
    file_host = raw.get("host")
    chosen = host if host is not None else file_host if isinstance(file_host, str) else None
    org_id = raw.get("orgId")
    login_at = raw.get("loginAt")
    return Credentials(
        api_key=api_key.strip(),
        host=normalize_host(chosen) if chosen and chosen.strip() else default_host,
        source=mode,
        org_id=org_id if isinstance(org_id, str) and org_id else None,
        login_at=login_at if isinstance(login_at, int) and not isinstance(login_at, bool) else None,
    )


def resolve_credentials(api_key: str | None = None, *, host: str | None = None) -> Credentials:
    """Turn what the user passed to ``connect()`` into :class:`Credentials`.

    ``api_key`` may be a key, ``"local"``, ``"local-dev"``, or ``None`` to read
    ``SYVAIN_METRICS_API_KEY`` (and ``SYVAIN_METRICS_HOST``), falling back to ``"local"``.

    Example:
        >>> resolve_credentials("  ak_org_1  ").host
        'https://metrics.syvain.com'
    """
    if api_key is None:
        env_key = os.environ.get(API_KEY_ENV, "").strip()
        if host is None and os.environ.get(HOST_ENV, "").strip():
            host = os.environ[HOST_ENV]
        api_key = env_key or "local"
    if not isinstance(api_key, str):
        raise MetricsApiAuthError("Metrics API key must be a string.")
    if api_key in _CLI_MODES:
        return load_cli_credentials(api_key, host=host)
    key = api_key.strip()
    if not key:
        raise MetricsApiAuthError("Metrics API key must not be empty.")
    return Credentials(api_key=key, host=normalize_host(host) if host else PRODUCTION_HOST)
