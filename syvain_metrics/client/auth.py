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
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from syvain_metrics.client.secret import Secret
from syvain_metrics.contract.hosts import normalize_host
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
    """A resolved API key and the origin it is for. The key is a :class:`Secret`, kept out of
    ``repr`` and of every error reporter's record of local variables.

    Example:
        >>> Credentials(api_key=Secret("secret"), host="https://metrics.syvain.com").host
        'https://metrics.syvain.com'
    """

    api_key: Secret = field(repr=False)
    host: str
    source: str = "api_key"
    org_id: str | None = None
    login_at: int | None = field(default=None, repr=False)


def check_api_key(key: str, where: str = "Metrics API key") -> str:
    """``key`` if it can travel in an ``Authorization`` header: printable latin-1, no
    whitespace inside. The message never shows the key.

    Example:
        >>> check_api_key("ak_org_1")
        'ak_org_1'
        >>> check_api_key("ak_org_1\\r\\nX-Evil: 1")
        Traceback (most recent call last):
        ...
        syvain_metrics.errors.MetricsApiAuthError: Metrics API key contains a control character or a space (not shown); copy the key again.
    """
    problem = _key_problem(key, where)
    if problem is not None:
        raise MetricsApiAuthError(problem)
    return key


def _key_problem(key: str, where: str) -> str | None:
    if any(ord(char) > 0xFF for char in key):
        return (
            f"{where} contains a character outside latin-1 (not shown), which an HTTP header "
            "cannot carry; copy the key again."
        )
    if not key.isprintable() or any(char.isspace() for char in key):
        return f"{where} contains a control character or a space (not shown); copy the key again."
    return None


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


def _warn_if_readable_by_others(path: Path) -> None:
    """Warn when users other than the owner may read the login file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"{path} holds an API key and can be read by other users "
            f"({stat.filemode(mode)}); restrict it with: chmod 600 {path}",
            UserWarning,
            stacklevel=4,
        )


@dataclass(frozen=True)
class _Login:
    """What ``auth.json`` holds, its key already a :class:`Secret`."""

    api_key: Secret = field(repr=False)
    host: str | None
    org_id: str | None
    login_at: int | None


def _parse_login(path: Path) -> _Login | str:
    """Read ``auth.json``: what it holds, or why it cannot be used. It never raises, so that
    no traceback keeps this frame (the file's text, the key in it) nor a decoding error's
    context (a ``JSONDecodeError`` holds the whole text)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"Metrics CLI auth file was not found at {path}."
    except (OSError, UnicodeDecodeError) as error:
        return f"Metrics CLI auth file could not be read: {path} ({type(error).__name__})."
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as error:
        where = (
            f" (line {error.lineno}, column {error.colno})"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        return f"Metrics CLI auth file is not valid JSON{where}: {path}."
    if not isinstance(raw, dict):
        return f"Metrics CLI auth file must contain a JSON object: {path}."
    api_key = raw.get("apiKey")
    if not isinstance(api_key, str) or not api_key.strip():
        return f"Metrics CLI auth file does not contain apiKey: {path}."
    problem = _key_problem(api_key.strip(), f"apiKey in {path}")
    if problem is not None:
        return problem
    file_host = raw.get("host")
    org_id = raw.get("orgId")
    login_at = raw.get("loginAt")
    return _Login(
        api_key=Secret(api_key.strip()),
        host=file_host if isinstance(file_host, str) else None,
        org_id=org_id if isinstance(org_id, str) and org_id else None,
        login_at=login_at if isinstance(login_at, int) and not isinstance(login_at, bool) else None,
    )


def load_cli_credentials(mode: str, *, host: str | None = None) -> Credentials:
    """Read the CLI's ``auth.json`` for ``mode``; an explicit ``host`` wins over the file's.

    Example:
        >>> load_cli_credentials("local")  # doctest: +SKIP
        Credentials(host='https://metrics.syvain.com', source='local', org_id='org_1')
    """
    path = cli_auth_path(mode)
    login = _parse_login(path)
    if isinstance(login, str):
        raise MetricsApiAuthError(login)
    _warn_if_readable_by_others(path)
    _, default_host = _CLI_MODES[mode]
    chosen = host if host is not None else login.host
    return Credentials(
        api_key=login.api_key,
        host=normalize_host(chosen) if chosen and chosen.strip() else default_host,
        source=mode,
        org_id=login.org_id,
        login_at=login.login_at,
    )


def hide_key(api_key: str | Secret | None) -> str | Secret | None:
    """What the user passed as a credential, with a key (not a mode name) made a
    :class:`Secret`, so that frames holding it after this point show no key.

    Example:
        >>> hide_key("ak_org_1"), hide_key("local"), hide_key(None)
        (Secret('***'), 'local', None)
    """
    if isinstance(api_key, str) and api_key not in _CLI_MODES:
        return Secret(api_key)
    return api_key


def resolve_credentials(
    api_key: str | Secret | None = None, *, host: str | None = None
) -> Credentials:
    """Turn what the user passed to ``connect()`` into :class:`Credentials`.

    ``api_key`` may be a key, ``"local"``, ``"local-dev"``, or ``None`` to read
    ``SYVAIN_METRICS_API_KEY`` (and ``SYVAIN_METRICS_HOST``), falling back to ``"local"``.

    Example:
        >>> resolve_credentials("  ak_org_1  ").host
        'https://metrics.syvain.com'
    """
    if isinstance(api_key, Secret):  # hide_key() leaves an exact mode name a str
        if api_key.reveal().strip() in _CLI_MODES:
            return load_cli_credentials(api_key.reveal().strip(), host=host)
        return _key_credentials(api_key, host)
    if api_key is not None and not isinstance(api_key, str):
        raise MetricsApiAuthError("Metrics API key must be a string.")
    if api_key in _CLI_MODES:
        return load_cli_credentials(api_key, host=host)
    # From here the key is only ever a Secret in this frame: a reporter that records local
    # variables (a bad host below, say) must not find the key read from the environment.
    given = Secret(
        api_key.strip() if api_key is not None else os.environ.get(API_KEY_ENV, "").strip()
    )
    if api_key is None:
        if host is None and os.environ.get(HOST_ENV, "").strip():
            host = os.environ[HOST_ENV]
        if not given:
            given = Secret("local")
    del api_key
    if given.reveal() in _CLI_MODES:
        return load_cli_credentials(given.reveal(), host=host)
    return _key_credentials(given, host)


def _key_credentials(key: Secret, host: str | None) -> Credentials:
    key = Secret(key.reveal().strip())
    if not key:
        raise MetricsApiAuthError("Metrics API key must not be empty.")
    problem = _key_problem(key.reveal(), "Metrics API key")
    if problem is not None:
        raise MetricsApiAuthError(problem)
    return Credentials(api_key=key, host=normalize_host(host) if host else PRODUCTION_HOST)
