"""Test helpers: an in-process local server, and the pytest fixtures built on it.

:class:`LocalServer` runs the local reference server (SQLite + waitress) in a daemon
thread of your process, bound to a free loopback port before the constructor returns::

    from syvain_metrics.testing import LocalServer

    with LocalServer() as server:
        session = server.session()
        exp = sm.Experiment.create("run-1", session=session)

In a notebook, one line starts a server that lives until the kernel ends (or
``server.close()``), keeps its runs in a per-user data file
(:mod:`syvain_metrics.local_data`) and makes its session the default; running the cell again
returns the same server::

    server = sm.start_local_server()

The pytest plugin (registered through the ``pytest11`` entry point, so it is active
wherever the SDK is installed) adds two fixtures for testing your own code:

- ``metrics_server``: one :class:`LocalServer` per test session, its data wiped and
  its faults disarmed before each test that uses it;
- ``metrics_session``: a :class:`~syvain_metrics.Session` connected to it, also made
  the default session (``sm.Experiment.create(...)`` works without ``session=``)
  for the duration of the test.

Example:
    >>> def test_my_training_loop(metrics_session):  # doctest: +SKIP
    ...     exp = sm.Experiment.create("unit-test-run")
    ...     train(exp)
    ...     assert exp.metrics("loss")

This module is imported by pytest in every project that has the SDK installed, so it
imports nothing heavy: the server (werkzeug, waitress) loads only when a
:class:`LocalServer` is created.
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syvain_metrics.client.session import Session
    from syvain_metrics.server.app import MetricsApp
    from syvain_metrics.server.faults import Faults
    from syvain_metrics.server.store import Store

__all__ = ["LocalServer", "start_local_server"]

logger = logging.getLogger("syvain_metrics")


class LocalServer:
    """The local reference server, serving from a daemon thread of this process.

    Args:
        db: a SQLite file, or ``":memory:"`` (the default).
        api_key: the API key it accepts; a random ``ak_local_...`` when ``None``. A database
            file that already has keys keeps them only as hashes: pass one of them again
            (``ValueError`` without one), or keep it in ``key_file``.
        host: the interface to bind (loopback by default).
        port: the port; ``0`` picks a free one.
        threads: waitress worker threads.
        clock: seconds since the epoch, for the server's timestamps and expiries.
        key_file: when ``api_key`` is ``None``, a file (0600) that keeps the API key as
            text: read when it exists, else written with a new key, so every process on
            the database uses the same key.
        shared: other processes may serve the same database file at the same time (write
            turns and dashboard sign-ins go through the file).

    Attributes:
        url: the origin to connect to, e.g. ``http://127.0.0.1:54321``.
        db: the database: a file's path, or ``":memory:"``.
        api_key: the accepted API key.
        faults: the fault switches (see :mod:`syvain_metrics.server.faults`).
        store: the SQLite store, for assertions on what was really written.
        default_session: the session :func:`start_local_server` made the default (else
            ``None``).

    Example:
        >>> with LocalServer() as server:
        ...     session = server.session()
        ...     sm.whoami(session=session).kind  # doctest: +SKIP
        'api_key'
    """

    def __init__(
        self,
        db: str | os.PathLike[str] = ":memory:",
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 8,
        clock: Callable[[], float] = time.time,
        key_file: str | None = None,
        shared: bool = False,
    ) -> None:
        from syvain_metrics.local_data import kept_api_key
        from syvain_metrics.server import MetricsApp, Store, make_server

        db = os.fspath(db)
        self.db: str = db
        self.store: Store = Store(db, clock=clock, shared=shared)
        try:
            if api_key is None and key_file is not None:
                api_key = kept_api_key(key_file, self.store.has_stored_api_keys)
            known = self.store.use_api_keys([api_key] if api_key else [])
        except BaseException:
            self.store.close()
            raise
        if not known:
            self.store.close()
            raise ValueError(
                f"{db} keeps its API keys only as hashes: pass one of them as api_key="
            )
        self.api_key: str = known[0]
        self.app: MetricsApp = MetricsApp(self.store)
        self.faults: Faults = self.app.faults
        try:
            self._server = make_server(self.app, host, port, threads=threads)
        except BaseException:
            self.store.close()
            raise
        bound = self._server.effective_host
        shown = f"[{bound}]" if ":" in str(bound) else bound
        self.url: str = f"http://{shown}:{self._server.effective_port}"
        self._closed = False
        self._close_lock = threading.Lock()
        self._owned: list[Session] = []
        self.default_session: Session | None = None
        self._thread = threading.Thread(
            target=self._server.run, name=f"syvain-metrics-server:{self.url}", daemon=True
        )
        self._thread.start()

    @classmethod
    def open(
        cls, db: str | os.PathLike[str] | None = None, api_key: str | None = None, **options: Any
    ) -> LocalServer:
        """A server on a data file kept between processes: the per-user one by default
        (:func:`syvain_metrics.local_data.default_database`, its directory made private), or
        ``db`` (``":memory:"`` keeps nothing). A file's API key is kept beside it
        (``<db>.key``) unless ``api_key`` is given, and several processes may serve the same
        file at once. Other keyword arguments go to the constructor (``port=``, ...).

        Example:
            >>> with LocalServer.open() as server:  # doctest: +SKIP
            ...     print(server.db)
            /home/me/.local/share/syvain-metrics/local.sqlite
        """
        from pathlib import Path

        from syvain_metrics import local_data

        target = _database(db)
        if target == ":memory:":
            return cls(target, api_key, **options)
        local_data.prepare_directory(Path(target))
        return cls(
            target,
            api_key,
            key_file=None if api_key else local_data.key_file(target),
            shared=sys.platform != "win32",
            **options,
        )

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalServer {self.url}{' closed' if self._closed else ''}>"

    def _repr_html_(self) -> str:
        """What a notebook shows: a one-time sign-in link to the dashboard, the data file and
        the URL (never the API key)."""
        where = "in memory (lost when it closes)" if self.db == ":memory:" else self.db
        lines = [
            f"<b>Syvain Metrics local server</b> at <code>{html.escape(self.url)}</code>",
            f"data: <code>{html.escape(where)}</code>",
        ]
        if self._closed:
            lines.append("closed")
        else:
            link = html.escape(self.dashboard_link(), quote=True)
            lines.append(
                f"<a href='{link}' target='_blank' rel='noopener'>Open the dashboard</a> "
                "(a one-time sign-in link: afterwards the runs' links open without signing in)"
            )
        return "<div>" + "<br>".join(lines) + "</div>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called.

        Example:
            >>> server.closed  # doctest: +SKIP
            False
        """
        return self._closed

    def session(self, **kwargs: Any) -> Session:
        """A new :class:`~syvain_metrics.Session` connected to this server with its API key.

        Keyword arguments go to the session (``timeout=``, ``retry=``, ...).

        Example:
            >>> session = server.session(timeout=2)  # doctest: +SKIP
        """
        from syvain_metrics.client.session import Session

        return Session(self.api_key, host=self.url, **kwargs)

    @property
    def dashboard_url(self) -> str:
        """A one-time link that signs a browser in to this server's dashboard (with
        :attr:`api_key`) and opens the list of experiments; each read makes a new link.

        Example:
            >>> server.dashboard_url  # doctest: +SKIP
            'http://127.0.0.1:54321/dashboard/login?token=...&next=/dashboard/'
        """
        return self.dashboard_link()

    def dashboard_link(self, page: str | None = None, *, api_key: str | None = None) -> str:
        """A one-time link that signs a browser in and opens ``page``: an experiment's ``url``
        or any dashboard path of this server (the list of experiments by default).

        Example:
            >>> print(server.dashboard_link(exp.url))  # doctest: +SKIP
            http://127.0.0.1:54321/dashboard/login?token=...&next=/dashboard/experiments/...
        """
        return self.url + self.app.dashboard.login_path(api_key or self.api_key, page)

    def _own_session(self, options: dict[str, Any]) -> Session:
        """A session this server closes with itself: its default session."""
        session = self.session(**options)
        self._owned.append(session)
        self.default_session = session
        return session

    def add_organization(self, api_key: str | None = None) -> str:
        """Accept another API key, its own organization; returns the key.

        Example:
            >>> other = server.add_organization()  # doctest: +SKIP
        """
        return self.store.add_api_key(api_key)

    def reset(self) -> None:
        """Wipe every folder, experiment, metric, annotation, ingestion key and idempotency
        record, and disarm the faults; the API keys and organizations stay.

        Example:
            >>> server.reset()  # doctest: +SKIP
        """
        self.app.reset()

    def close(self) -> None:
        """Stop serving, close every connection and the database (safe to call twice).

        Example:
            >>> server.close()  # doctest: +SKIP
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        from syvain_metrics.client.registry import get_session, set_default_session
        from syvain_metrics.errors import MetricsApiError
        from syvain_metrics.server import stop_server

        for session in self._owned:
            try:
                if get_session() is session:
                    set_default_session(None)
            except MetricsApiError:  # no default session
                pass
            session.close()
        try:
            stop_server(self._server, self._thread, self.faults)
        finally:
            self.store.close()


def _database(db: str | os.PathLike[str] | None) -> str:
    """``":memory:"``, or the absolute path of a database file (the per-user one for
    ``None``): one name per database, whatever the working directory."""
    if db is None:
        from syvain_metrics.local_data import default_database

        return str(default_database())
    target = os.fspath(db)
    return target if target == ":memory:" else os.path.abspath(target)


_started: dict[str, LocalServer] = {}
"""The servers :func:`start_local_server` started in this process, by database."""
_started_lock = threading.Lock()


def start_local_server(
    db: str | os.PathLike[str] | None = None,
    *,
    api_key: str | None = None,
    **session_options: Any,
) -> LocalServer:
    """Start an embedded local server for a notebook or a REPL, in one line: it serves from
    a daemon thread until the kernel (or interpreter) ends or ``server.close()``, and its
    session (``server.default_session``) becomes the default, so ``sm.Experiment.create(...)``
    needs no ``session=``.

    Its runs are kept in the per-user data file (:func:`syvain_metrics.local_data.
    default_database`, under ``$SYVAIN_METRICS_HOME`` when set), found again by the next
    kernel; several kernels may use it at once. ``db`` names another SQLite file, or
    ``":memory:"`` for a server that keeps nothing. A file's API key is kept beside it
    (``<db>.key``, readable by you only) unless you pass ``api_key=``; other keyword
    arguments go to the session (``timeout=``, ``spool_dir=``, ...).

    Called again in the same process for the same ``db``, it returns the server already
    running (its session made the default again; keyword arguments apply only when a server
    starts), so running a notebook's first cell twice keeps everything. Closing a server
    closes its session (after flushing its ``log()`` events) and unsets it as the default;
    the next call starts a new one.

    Example:
        >>> server = sm.start_local_server()  # doctest: +SKIP
        >>> sm.Experiment.create("run-1")     # doctest: +SKIP
        <Experiment run-1 created id=...>
        >>> sm.start_local_server() is server  # doctest: +SKIP
        True
    """
    from syvain_metrics.client.registry import set_default_session

    target = _database(db)
    with _started_lock:
        running = _started.get(target)
        if running is not None and not running.closed:
            logger.info("the local server of %s is already running at %s", target, running.url)
            session = running.default_session
            if session is None or session.closed:
                session = running._own_session(session_options)
            set_default_session(session)
            return running
        server = LocalServer.open(target, api_key)
        try:
            session = server._own_session(session_options)
        except BaseException:
            server.close()
            raise
        set_default_session(session)
        _started[target] = server
    atexit.register(server.close)
    return server


# The plugin's fixtures exist only under pytest: importing this module from a script
# must neither need pytest nor pay for importing it.
if "pytest" in sys.modules:
    import pytest

    @pytest.fixture(scope="session")
    def _syvain_metrics_local_server() -> Iterator[LocalServer]:
        with LocalServer() as server:
            yield server

    @pytest.fixture
    def metrics_server(_syvain_metrics_local_server: LocalServer) -> LocalServer:
        """A local Syvain Metrics server shared by the test session, wiped before this test.

        Example:
            >>> def test_faults(metrics_server):  # doctest: +SKIP
            ...     metrics_server.faults.fail_next("create_experiment", status=503)
        """
        _syvain_metrics_local_server.reset()
        return _syvain_metrics_local_server

    @pytest.fixture
    def metrics_session(
        metrics_server: LocalServer, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Session]:
        """A session connected to ``metrics_server``, the default session during this test.
        Its ``log()`` spool is a temporary directory, never the user's cache; closing it at
        the end of the test waits for every ``log()`` event (and fails the test if one
        could not be stored).

        Example:
            >>> def test_create(metrics_session):  # doctest: +SKIP
            ...     assert sm.Experiment.create("run-1").status == "created"
        """
        from syvain_metrics.client.registry import get_session, set_default_session
        from syvain_metrics.errors import MetricsApiError

        try:
            previous: Session | None = get_session()
        except MetricsApiError:  # no default session yet
            previous = None
        session = metrics_server.session(spool_dir=tmp_path_factory.mktemp("spool"))
        set_default_session(session)
        try:
            yield session
        finally:
            set_default_session(previous)
            session.close()
