"""Which peers may say how a request reached them: ``serve --trusted-proxy ADDRESS``.

Behind a reverse proxy that ends TLS, the server sees plain HTTP from the proxy; the proxy
says what the browser used in ``X-Forwarded-Proto`` (and ``-Host``, ``-Port``, ``-For``).
Those headers are believed only from a configured proxy's address (werkzeug's ``ProxyFix``,
one proxy deep); from any other peer, and when no proxy is configured, they are ignored, so a
client cannot claim HTTPS (or another host) for itself. Believed, they make the dashboard's
session cookie ``Secure`` and its same-origin check and links use the browser's origin.

Example:
    >>> proxies = TrustedProxies(["127.0.0.1", "10.1.0.0/16"])
    >>> proxies.trusts("127.0.0.1"), proxies.trusts("10.1.2.3"), proxies.trusts("10.2.0.1")
    (True, True, False)
    >>> TrustedProxies([]).trusts("127.0.0.1")
    False
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def proxy_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or network (``10.0.0.0/8``) of a trusted proxy; ``ValueError`` otherwise.

    Example:
        >>> proxy_network("::1")
        IPv6Network('::1/128')
        >>> proxy_network("proxy.example")
        Traceback (most recent call last):
        ValueError: Not an IP address or network: 'proxy.example'.
    """
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"Not an IP address or network: {text!r}.") from None


class TrustedProxies:
    """The peers whose ``X-Forwarded-*`` headers are believed (none by default).

    Example:
        >>> TrustedProxies(["::1"]).trusts("::1")
        True
    """

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        self.networks = tuple(proxy_network(proxy) for proxy in proxies)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (a request's ``REMOTE_ADDR``) is a configured proxy."""
        if not self.networks or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        """``app``, believing the forwarded headers of requests from a trusted proxy only.

        Example:
            >>> from werkzeug.test import Client
            >>> from werkzeug.wrappers import Request, Response
            >>> def scheme(environ, start_response):
            ...     return Response(Request(environ).scheme)(environ, start_response)
            >>> app = TrustedProxies(["127.0.0.1"]).wrap(scheme)
            >>> forwarded = {"X-Forwarded-Proto": "https"}
            >>> def peer(address):
            ...     return {"REMOTE_ADDR": address}
            >>> Client(app).get("/", headers=forwarded, environ_base=peer("127.0.0.1")).text
            'https'
            >>> Client(app).get("/", headers=forwarded, environ_base=peer("10.0.0.9")).text
            'http'
        """
        if not self:
            return app
        believing = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)

        def proxied(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            chosen = believing if self.trusts(environ.get("REMOTE_ADDR")) else app
            return chosen(environ, start_response)

        return proxied
