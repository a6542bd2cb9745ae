"""The ``syvain-metrics`` command.

``syvain-metrics serve`` runs the local reference server until Ctrl-C
(:mod:`syvain_metrics.server.serve`; ``--processes N`` on gunicorn)::

    $ syvain-metrics serve --port 8765 --db metrics.sqlite --api-key ak_local_alice
    Syvain Metrics local server at http://127.0.0.1:8765 (API key: ak_local_alice); Ctrl-C to stop
    Dashboard: http://127.0.0.1:8765/dashboard/login?token=...&next=/dashboard/
    (one-time login links; or paste an API key at http://127.0.0.1:8765/dashboard/login)

Each ``--api-key`` is its own organization. Without one, a database file's stored
keys are accepted again (they are stored only as hashes, so they are not printed), or
a random key is made (and printed, that once). Ctrl-C or SIGTERM stop it cleanly at any
moment, start-up included (:mod:`syvain_metrics.signal_guard`): exit status 0 after
Ctrl-C, 143 after SIGTERM. Behind a reverse proxy that ends TLS, ``--trusted-proxy
ADDRESS`` has that proxy's ``X-Forwarded-*`` headers believed (and the dashboard's
cookie ``Secure``); from any other peer they are ignored.

``syvain-metrics sync`` uploads the ``log()`` events that ended processes left in the
spool (killed jobs, ``os._exit``, offline jobs), with their original ids, so nothing is
stored twice, and applies the runs' creations, status changes and annotations that wait
with them, in the order they happened::

    $ syvain-metrics sync
    synced 2500 events from 3 batches in 1 spool(s); 0 rejected; 0 batches kept

It sends to the configured host only (``--host``, else the credentials'), passes over the
spools of other users and, unless ``--other-hosts``, those recorded for another host; a
batch it cannot read whole is set aside in its spool's ``damaged/`` directory. Each is
reported, and the exit status is 1 when anything of this user's was not stored.

Example:
    >>> main(["serve", "--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from syvain_metrics._version import __version__
from syvain_metrics.signal_guard import SignalGuard, Stopped, stage


def _proxy_address(text: str) -> str:
    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address or network: {text!r}") from None
    return text.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syvain-metrics", description="Tools of the Syvain Metrics Python SDK."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the local reference server",
        description="Run the local Syvain Metrics server (SQLite storage) until Ctrl-C.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    serve.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to bind, 0 for any free one (default: %(default)s)",
    )
    serve.add_argument(
        "--db",
        default=":memory:",
        metavar="PATH",
        help="SQLite database file (default: in memory, lost on exit)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help="an API key to accept, its own organization (repeatable; default: a random key)",
    )
    serve.add_argument(
        "--threads", type=int, default=8, help="worker threads (default: %(default)s)"
    )
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="answer from N gunicorn worker processes, each with --threads threads, for many "
        "clients writing at once (default: %(default)s; more than one needs --db FILE and "
        'gunicorn: pip install "syvain-metrics[serve]", on a POSIX system)',
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        dest="trusted_proxies",
        type=_proxy_address,
        metavar="ADDRESS",
        help="a reverse proxy (IP address or network) whose X-Forwarded-Proto/-Host/-Port/-For "
        "headers are believed, e.g. one that ends TLS: the dashboard's cookie is then Secure "
        "(repeatable; default: none, such headers are ignored)",
    )
    sync = commands.add_parser(
        "sync",
        help="upload log() events left in the spool by processes that ended",
        description=(
            "Upload the log() events that ended processes left in the spool, with their "
            "original ids (a second run stores nothing twice), apply the runs' creations, "
            "status changes and annotations waiting with them, and remove them."
        ),
    )
    sync.add_argument(
        "--spool-dir",
        default=None,
        metavar="PATH",
        help="the spool root (default: $SYVAIN_METRICS_SPOOL_DIR, else ~/.cache/syvain-metrics/spool)",
    )
    sync.add_argument(
        "--api-key",
        default=None,
        help="API key (default: $SYVAIN_METRICS_API_KEY, else the CLI login)",
    )
    sync.add_argument(
        "--host",
        default=None,
        help="service origin to send to (default: $SYVAIN_METRICS_HOST, else the CLI login's); "
        "spools recorded for another host are skipped and reported",
    )
    sync.add_argument(
        "--other-hosts",
        action="store_true",
        help="also send the spools recorded for another host (or none) to this one",
    )
    sync.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="give up on a batch the service does not take within this many seconds",
    )
    return parser


def sync(
    spool_dir: str | None,
    api_key: str | None,
    host: str | None,
    timeout: float,
    other_hosts: bool = False,
) -> int:
    """Replay the spool; print one summary line, then what was not stored and why; 0 when
    every event found was stored, 1 when some were rejected, kept, damaged or left for
    another host."""
    from pathlib import Path

    from syvain_metrics.client.sync import sync_spool
    from syvain_metrics.errors import MetricsApiError
    from syvain_metrics.pipeline.spool import configured_root

    root = Path(spool_dir) if spool_dir else configured_root()
    try:
        report = sync_spool(
            root, api_key=api_key, host=host, timeout=timeout, other_hosts=other_hosts
        )
    except MetricsApiError as error:
        print(f"syvain-metrics sync: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"syvain-metrics sync: cannot read the spool {root}: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    for refusal in report.rejected[:20]:
        event = refusal.event if isinstance(refusal.event, dict) else {}
        print(
            f"rejected: {event.get('name')!r} step {event.get('step')}: {refusal.message}",
            file=sys.stderr,
        )
    for label, reasons in (
        ("kept", report.kept),
        ("damaged", report.damaged),
        ("other host", report.other_hosts),
        ("ignored", report.other_owners),
        ("set aside before", report.set_aside_where),
    ):
        for reason in reasons:
            print(f"{label}: {reason}", file=sys.stderr)
    return 0 if report.complete else 1


def _guarded_serve(arguments: list[str]) -> int:
    # Ctrl-C and SIGTERM are handled from here on, before anything else is done: at any
    # moment of start-up, serving or stopping they end ``serve`` cleanly.
    try:
        guard = SignalGuard().install()
    except ValueError as error:
        print(f"syvain-metrics serve: {error}", file=sys.stderr)
        return 2
    try:
        stage("started")
        args = _parser().parse_args(arguments)
        from syvain_metrics.server.serve import serve

        status = serve(
            args.host,
            args.port,
            args.db,
            args.api_keys,
            args.threads,
            args.processes,
            args.trusted_proxies,
            guard,
        )
        return guard.exit_status if guard.received is not None else status
    except Stopped:
        return guard.exit_status
    finally:
        guard.restore()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syvain-metrics`` console script; returns the exit status.

    Example:
        >>> main(["serve", "--port", "0"])  # doctest: +SKIP
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["serve"]:
        return _guarded_serve(arguments)
    args = _parser().parse_args(arguments)
    if args.command == "sync":
        return sync(args.spool_dir, args.api_key, args.host, args.timeout, args.other_hosts)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
