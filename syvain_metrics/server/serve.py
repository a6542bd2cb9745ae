"""``syvain-metrics serve``: the local reference server, from one process or several.

One process (the default, and the only way where gunicorn is not installed, Windows
included): waitress, with the connection limits of :mod:`~syvain_metrics.server.connections`.
``--processes N``: gunicorn's arbiter and N worker processes over the same database file
(:mod:`~syvain_metrics.server.prefork`). Either way the command prints the URL and one
one-time dashboard login link per API key, and Ctrl-C or SIGTERM stop it cleanly at any
moment, start-up included (:mod:`syvain_metrics.signal_guard`): exit status 0 after
Ctrl-C, 143 after SIGTERM.

Example:
    >>> from syvain_metrics.cli import main
    >>> main(["serve", "--port", "0"])  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from syvain_metrics.signal_guard import SignalGuard, held, stage

if TYPE_CHECKING:
    from syvain_metrics.server.store import Store

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    host: str,
    port: int,
    db: str,
    api_keys: Sequence[str],
    threads: int = 8,
    processes: int = 1,
    trusted_proxies: Sequence[str] = (),
    guard: SignalGuard | None = None,
) -> int:
    """Serve until interrupted; print one line with the URL and the accepted API keys, then
    the login links. Returns the exit status (2: it could not start).

    Run by :func:`~syvain_metrics.cli.main` under ``guard``: Ctrl-C or SIGTERM at any moment
    raise :class:`~syvain_metrics.signal_guard.Stopped` here (or, once gunicorn's
    arbiter runs, are acted on by it), and everything opened so far is closed before it goes
    on.
    """
    if processes < 1 or threads < 1:
        print("syvain-metrics serve: --processes and --threads must be at least 1", file=sys.stderr)
        return 2
    if processes > 1:
        return _serve_processes(
            host, port, db, api_keys, threads, processes, trusted_proxies, guard
        )
    return _serve_one(host, port, db, api_keys, threads, trusted_proxies)


def _serve_one(
    host: str,
    port: int,
    db: str,
    api_keys: Sequence[str],
    threads: int,
    trusted_proxies: Sequence[str],
) -> int:
    from syvain_metrics.server.app import MetricsApp
    from syvain_metrics.server.runner import SERVE_SWITCH_INTERVAL_S, make_server, stop_server
    from syvain_metrics.server.store import Store

    store: Store | None = None
    server: Any = None
    app: MetricsApp | None = None
    try:
        try:
            store = Store(db)
        except ValueError as error:
            print(f"syvain-metrics serve: {error}", file=sys.stderr)
            return 2
        try:
            keys = store.use_api_keys(api_keys)
            app = MetricsApp(store, trusted_proxies=trusted_proxies)
            stage("store-open")
            server = make_server(app, host, port, threads=threads)
        except (ValueError, OSError) as error:
            print(f"syvain-metrics serve: {error}", file=sys.stderr)
            return 2
        stage("listening")
        links = [app.dashboard.login_path(key) for key in keys]
        with held():  # every line whole, or none: a link is never cut in two
            print_banner(server.effective_host, server.effective_port, host, db, keys, store, links)
        stage("serving")
        sys.setswitchinterval(SERVE_SWITCH_INTERVAL_S)  # this process is the server's alone
        server.run()  # returns after Ctrl-C or SIGTERM (waitress catches KeyboardInterrupt)
    finally:
        with held():  # a second signal does not cut the clean-up short
            stage("stopping")
            if server is not None and app is not None:
                stop_server(server, None, app.faults)
            if store is not None:
                store.close()
    return 0


def _serve_processes(
    host: str,
    port: int,
    db: str,
    api_keys: Sequence[str],
    threads: int,
    processes: int,
    trusted_proxies: Sequence[str],
    guard: SignalGuard | None,
) -> int:
    from syvain_metrics.server import prefork
    from syvain_metrics.server.app import MetricsApp
    from syvain_metrics.server.store import Store

    missing = prefork.gunicorn_missing()
    if missing is not None:
        print(f"syvain-metrics serve: {missing}", file=sys.stderr)
        return 2
    store: Store | None = None
    listener = None
    try:
        try:
            store = Store(db, shared=True)
        except ValueError as error:
            print(f"syvain-metrics serve: {error} (--processes {processes})", file=sys.stderr)
            return 2
        try:
            keys = store.use_api_keys(api_keys)
            app = MetricsApp(store, trusted_proxies=trusted_proxies)
            stage("store-open")
            # Nothing of an earlier run can be in progress, and its logins are forgotten.
            app.idempotency.reset()
            store.forget_logins()
            listener = prefork.bind(host, port)
        except (ValueError, OSError) as error:
            print(f"syvain-metrics serve: {error}", file=sys.stderr)
            return 2
        # Stored before the workers start, printed once they answer: they open the links.
        links = [app.dashboard.login_path(key) for key in keys]
        count = store.api_key_count
        bound_host, bound_port = listener.getsockname()[:2]
        # The workers open their own connections: none is shared across a fork.
        app.close()
        store = None

        def announce() -> None:
            print_banner(bound_host, bound_port, host, db, keys, count, links)

        prefork.serve_processes(
            listener,
            db,
            keys,
            threads=threads,
            processes=processes,
            trusted_proxies=trusted_proxies,
            announce=announce,
            guard=guard,
        )
        listener = None  # gunicorn's, and closed by it
    finally:
        with held():
            if listener is not None:
                listener.close()
            if store is not None:
                store.close()
    return 0


def print_banner(
    bound_host: str,
    bound_port: int | str,
    host: str,
    db: str,
    keys: Sequence[str],
    stored: Store | int,
    links: Sequence[str],
) -> None:
    """Print the server's address and accepted keys, then a login link per key (with a
    ``printing`` stage between the first line and the links)."""
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    label = "API key" if len(keys) == 1 else "API keys"
    count = stored if isinstance(stored, int) else stored.api_key_count
    accepted = (
        f"{label}: {', '.join(keys)}"
        if keys
        else f"the {count} API key(s) stored in {db}, kept as hashes"
    )
    origin = f"http://{shown}:{bound_port}"
    print(f"Syvain Metrics local server at {origin} ({accepted}); Ctrl-C to stop", flush=True)
    stage("printing")
    for key, link in zip(keys, links, strict=True):
        owner = f" ({key})" if len(keys) > 1 else ""
        print(f"Dashboard{owner}: {origin}{link}", flush=True)
    print(f"(one-time login links; or paste an API key at {origin}/dashboard/login)", flush=True)
    if host not in LOOPBACK:
        print(
            f"warning: listening on {host}, not loopback; anyone who can reach it and knows a key "
            "can read and write its data",
            file=sys.stderr,
            flush=True,
        )
