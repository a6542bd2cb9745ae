"""The dashboard's HTTP side: routes under ``/dashboard/``, sign-in, security headers.

Pages are rendered on the server (jinja2, every value escaped); the page's own script and
style sheet come from this package (``/dashboard/static/``), and the Content-Security-Policy
allows nothing else: no inline script or style, no other origin. The dashboard only reads:
its one form that posts signs a browser in or out.

Example:
    >>> from werkzeug.test import Client
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> dashboard = Dashboard(store)
    >>> client = Client(dashboard)
    >>> reply = client.get("/dashboard/")
    >>> reply.status_code, reply.headers["Location"]
    (303, '/dashboard/login?next=/dashboard/')
    >>> reply = client.get(dashboard.login_path(key))
    >>> reply.status_code, "HttpOnly" in reply.headers["Set-Cookie"]
    (200, True)
    >>> client.get("/dashboard/").status_code
    200
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from syvain_metrics._version import __version__
from syvain_metrics.contract import operations
from syvain_metrics.server.dashboard import charts, compare, pages, parallel, runs_table
from syvain_metrics.server.dashboard.access import COOKIE_NAME, SESSION_TTL_S, Access
from syvain_metrics.server.dashboard.runs_query import RunsQuery
from syvain_metrics.server.dashboard.series_cache import SeriesCache
from syvain_metrics.server.errors import ApiError
from syvain_metrics.server.store import Store

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from jinja2 import Environment

logger = logging.getLogger("syvain_metrics.server")

PREFIX = operations.DASHBOARD_PREFIX
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "compare.js": "text/javascript; charset=utf-8",
    "compare.css": "text/css; charset=utf-8",
    "runs.js": "text/javascript; charset=utf-8",
    "runs.css": "text/css; charset=utf-8",
}
MAX_FORM_BYTES = 16 * 1024
_SAFE_NEXT = re.compile(r"^/dashboard(/[^\\\s]*)?$")


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path of this server, else the list page
    (a login link never sends a browser elsewhere).

    Example:
        >>> safe_next("/dashboard/experiments/e1"), safe_next("https://evil.example/")
        ('/dashboard/experiments/e1', '/dashboard/')
        >>> safe_next("/dashboard//evil.example")
        '/dashboard/'
    """
    if value and _SAFE_NEXT.match(value) and "//" not in value and "/.." not in value:
        return value
    return f"{PREFIX}/"


class Dashboard:
    """The dashboard's WSGI application (mounted by the server's application under
    ``/dashboard``), reading ``store``.

    Args:
        store: the server's store; the dashboard only reads it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.access = Access(store)
        self.series_cache = SeriesCache()
        self._templates: Environment | None = None

    # -- sign-in links ---------------------------------------------------------------------

    def login_path(self, api_key: str, page: str | None = None) -> str:
        """A one-time login link (a path of this server) for the API key's organization,
        landing on ``page`` (a dashboard path or URL of this server; the list by default).

        Example:
            >>> store = Store()
            >>> [key] = store.use_api_keys(["ak_local_demo"])
            >>> Dashboard(store).login_path(key, "http://127.0.0.1:8765/dashboard/compare?x=1")
            '/dashboard/login?token=...&next=/dashboard/compare%3Fx%3D1'
        """
        token = self.access.login_token(api_key)
        target = safe_next(_path_of(page)) if page else f"{PREFIX}/"
        return f"{PREFIX}/login?token={token}&next={quote(target, safe='/')}"

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.respond(environ)(environ, start_response)

    def respond(self, environ: WSGIEnvironment) -> WSGIApplication:
        """The answer to one request under ``/dashboard``."""
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except ApiError as error:
            response = self._error(request, error.status, error.message)
        except Exception:
            logger.exception("unexpected error in the dashboard")
            response = self._error(request, 500, "Internal server error")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        method = request.method.upper()
        if path == PREFIX:
            return _redirect(f"{PREFIX}/")
        rest = path[len(PREFIX) :]
        if rest.startswith("/static/"):
            self._only(method, "GET", "HEAD")
            return self._static(rest[len("/static/") :])
        if rest == "/login":
            if method == "POST":
                return self._login_form(request)
            self._only(method, "GET", "HEAD", "POST")
            return self._login_page(request)
        if rest == "/logout":
            self._only(method, "POST")
            return self._logout(request)
        views: dict[str, Callable[[Request, str], Response]] = {
            "/": self._list,
            "/compare": self._compare,
            "/parallel": self._parallel,
            "/data/chart": self._chart,
            "/data/compare": self._compare_data,
        }
        view = views.get(rest)
        if view is None and rest.startswith("/experiments/"):
            raw = _raw_path(request)[len(PREFIX) + len("/experiments/") :]
            if raw and "/" not in raw:
                view = partial(self._experiment, experiment_id=unquote(raw))
        if view is None:
            raise ApiError(404, "not_found", "No such page.")
        self._only(method, "GET", "HEAD")
        org_id = self.access.organization(request.cookies.get(_cookie_name(request)))
        if org_id is None:
            if rest.startswith("/data/"):
                raise ApiError(401, "unauthorized", "Sign in first.")
            return _redirect(f"{PREFIX}/login?next={quote(_here(request), safe='/')}")
        request.environ["syvain_metrics.org_id"] = org_id
        return view(request, org_id)

    @staticmethod
    def _only(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise ApiError(405, "method_not_allowed", "The dashboard only reads.")

    # -- rendering ---------------------------------------------------------------------------

    def _environment(self) -> Environment:
        if self._templates is None:
            try:
                from jinja2 import Environment, PackageLoader, StrictUndefined
            except ImportError as error:  # pragma: no cover - depends on the installed extras
                raise ApiError(
                    501,
                    "not_implemented",
                    'The dashboard needs jinja2: pip install "syvain-metrics[local]"',
                ) from error
            env = Environment(
                loader=PackageLoader("syvain_metrics.server.dashboard", "templates"),
                autoescape=True,
                undefined=StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            env.globals.update(
                static=lambda name: f"{PREFIX}/static/{name}?v={quote(__version__)}",
                experiment_path=operations.dashboard_experiment_path,
                folder_path=operations.dashboard_folder_path,
                when=pages.when,
                value_text=pages.value_text,
                cell_text=runs_table.cell_text,
                version=__version__,
            )
            self._templates = env
        return self._templates

    def _page(self, request: Request, template: str, code: int = 200, **context: Any) -> Response:
        org_id = request.environ.get("syvain_metrics.org_id")
        # The header names the organization; its id stays in the tooltip.
        org_name = self.store.organization(org_id).name if org_id else None
        page = self._environment().get_template(template)
        text = page.render(org_id=org_id, org_name=org_name, **context)
        return Response(text, status=code, content_type="text/html; charset=utf-8")

    def _error(self, request: Request, status: int, message: str) -> Response:
        if _raw_path(request).startswith(f"{PREFIX}/data/"):
            body = json.dumps({"error": message})
            return Response(body, status=status, content_type="application/json")
        try:
            return self._page(request, "error.html", status, status=status, message=message)
        except ApiError:  # pragma: no cover - no template engine
            return Response(message, status=status, content_type="text/plain; charset=utf-8")

    def _static(self, name: str) -> Response:
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise ApiError(404, "not_found", "No such file.")
        data = resources.files(__package__).joinpath("static").joinpath(name).read_bytes()
        response = Response(data, content_type=kind)
        response.headers["Cache-Control"] = "no-cache"
        return response

    # -- signing in and out ------------------------------------------------------------------

    def _login_page(self, request: Request) -> Response:
        target = safe_next(request.args.get("next"))
        token = request.args.get("token")
        if token is None:
            if request.headers.get("Sec-Fetch-Site") == "cross-site":
                # A link from another site (a notebook's runs table) comes without the
                # SameSite=Strict cookie, even from a signed-in browser: go on from here, a
                # same-site navigation that carries it (and lands here again, same-origin
                # now, only if the browser is not signed in).
                return self._page(request, "moving_on.html", next=target)
            return self._page(request, "login.html", next=target, message=None)
        session_id = self.access.redeem(token)
        if session_id is None:
            message = "This login link was already used or has expired. Paste an API key."
            return self._page(request, "login.html", 401, next=target, message=message)
        # A page that moves on by itself, not a redirect: the next request then comes from
        # this site, so a SameSite=Strict cookie goes with it even if the link was opened
        # from another site.
        response = self._page(request, "signed_in.html", next=target)
        return self._with_session(request, response, session_id)

    def _login_form(self, request: Request) -> Response:
        self._same_origin(request)
        request.max_content_length = MAX_FORM_BYTES
        try:
            api_key = request.form.get("api_key", "")
            target = safe_next(request.form.get("next"))
        except RequestEntityTooLarge:
            raise ApiError(413, "payload_too_large", "That form is too large.") from None
        session_id = self.access.sign_in(api_key)
        if session_id is None:
            message = "This server does not accept that API key."
            return self._page(request, "login.html", 401, next=target, message=message)
        return self._with_session(request, _redirect(target), session_id)

    def _logout(self, request: Request) -> Response:
        self._same_origin(request)
        self.access.sign_out(request.cookies.get(_cookie_name(request)))
        response = _redirect(f"{PREFIX}/login")
        response.delete_cookie(
            _cookie_name(request),
            path=PREFIX,
            secure=request.scheme == "https",
            httponly=True,
            samesite="Strict",
        )
        return response

    @staticmethod
    def _same_origin(request: Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != request.host_url.rstrip("/"):
            raise ApiError(403, "forbidden", "Sign in from this server's own login page.")

    @staticmethod
    def _with_session(request: Request, response: Response, session_id: str) -> Response:
        response.set_cookie(
            _cookie_name(request),
            session_id,
            max_age=SESSION_TTL_S,
            path=PREFIX,
            secure=request.scheme == "https",
            httponly=True,
            samesite="Strict",
        )
        return response

    # -- pages -------------------------------------------------------------------------------

    @staticmethod
    def _origin(request: Request) -> str:
        return request.host_url.rstrip("/")

    def _list(self, request: Request, org_id: str) -> Response:
        query = RunsQuery.parse({name: request.args.getlist(name) for name in request.args})
        context = runs_table.runs_page(self.store, org_id, self._origin(request), query)
        return self._page(request, "list.html", **context)

    def _parallel(self, request: Request, org_id: str) -> Response:
        ids = parallel.parallel_ids(request.args.getlist("experiments"))
        summary = request.args.get("summary") or None
        context = parallel.parallel_page(self.store, org_id, self._origin(request), ids, summary)
        return self._page(request, "parallel.html", **context)

    def _experiment(self, request: Request, org_id: str, *, experiment_id: str) -> Response:
        context = pages.experiment_page(self.store, org_id, self._origin(request), experiment_id)
        return self._page(request, "experiment.html", **context)

    def _compare(self, request: Request, org_id: str) -> Response:
        ids = compare.experiment_ids(request.args.getlist("experiments"))
        context = compare.compare_page(self.store, org_id, self._origin(request), ids)
        return self._page(request, "compare.html", **context)

    def _compare_data(self, request: Request, org_id: str) -> Response:
        ids = compare.experiment_ids(request.args.getlist("experiments"))
        body = compare.compare_data(
            self.store,
            self.series_cache,
            org_id,
            ids,
            request.args.get("metric"),
            request.args.get("x"),
            request.args.get("width"),
        )
        return Response(body, content_type="application/json")

    def _chart(self, request: Request, org_id: str) -> Response:
        ids = pages.experiment_ids(request.args.getlist("experiments"))
        metric = request.args.get("metric")
        if not metric:
            raise ApiError(400, "validation_error", "Name the metric to draw.")
        x = request.args.get("x", "step")
        if x not in charts.X_AXES:
            raise ApiError(400, "validation_error", "x is 'step' or 'time'.")
        try:
            width = int(request.args.get("width", charts.DEFAULT_WIDTH))
        except ValueError:
            raise ApiError(400, "validation_error", "width is a number of pixels.") from None
        width = min(max(width, charts.MIN_WIDTH), charts.MAX_WIDTH)
        slugs = None
        if len(ids) > 1:
            slugs = [self.store.get_experiment(org_id, e).slug for e in ids]
        data = charts.chart_data(
            self.store,
            org_id,
            ids,
            metric,
            x="time" if x == "time" else "step",
            width=width,
            slugs=slugs,
        )
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return Response(body, content_type="application/json")


def _cookie_name(request: Request) -> str:
    """The session cookie's name on this server. Browsers keep one cookie per host whatever
    its port, so each port gets a name of its own: signing in to one local server then
    neither ends nor reaches the session of another on the same host.

    Example:
        >>> from werkzeug.test import EnvironBuilder
        >>> _cookie_name(Request(EnvironBuilder(base_url="http://127.0.0.1:8765").get_environ()))
        'syvain_dashboard_8765'
    """
    _, _, port = request.host.rpartition(":")
    return f"{COOKIE_NAME}_{port}" if port.isdigit() else COOKIE_NAME


def _raw_path(request: Request) -> str:
    uri = request.environ.get("REQUEST_URI") or request.environ.get("RAW_URI")
    if uri:
        return str(uri).partition("?")[0]
    return quote(request.path, safe="/")


def _here(request: Request) -> str:
    query = request.query_string.decode("latin-1")
    return _raw_path(request) + (f"?{query}" if query else "")


def _path_of(page: str) -> str:
    """The path (and query) of a URL or path."""
    if "://" in page:
        page = "/" + page.split("://", 1)[1].partition("/")[2]
    return page


def _redirect(location: str) -> Response:
    return Response("", status=303, headers={"Location": location})
