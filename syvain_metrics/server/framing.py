"""Where a request's body ends, as RFC 9112 §6 says, and what the server does when that is
not sure.

waitress reads ``Content-Length`` and a lone ``chunked`` coding well; everything else it
either answers with a bare 501 (which the contract's envelope reported as an internal error)
or reads in a way another server in front of it may not: ``chunked`` beside a
``Content-Length`` is read as chunked and the connection kept, so the bytes after the body,
as the other server counted them, become a request of their own. Here every request whose
framing is in doubt is refused, and, as for every error waitress answers, the answer says
``Connection: close`` and the connection ends after it:

- ``Transfer-Encoding`` in an HTTP/1.0 request, or beside a ``Content-Length``;
- ``chunked`` not the last coding, applied twice, or an empty ``Transfer-Encoding``;
- another coding before a final ``chunked`` (``gzip, chunked``), which the server does not
  decode. RFC 9112 §6.1 suggests a 501 here; a 400 keeps the local server's rule that
  what a client sends wrong is a 4xx, and a client following the contract does not retry
  it as it would a 5xx.

Each is a 400 ``bad_request`` saying why.

Example:
    >>> framing_error([b"chunked"], content_length=False, version="1.1") is None
    True
    >>> framing_error([b"chunked, identity"], content_length=False, version="1.1")
    'chunked must be the last transfer coding'
    >>> framing_error([b"gzip, chunked"], content_length=False, version="1.1")
    'transfer coding not supported: gzip (send chunked alone)'
"""

from __future__ import annotations

from waitress.parser import (
    HTTPRequestParser,
    ParsingError,
    TransferEncodingNotImplemented,
    get_header_lines,
)
from waitress.rfc7230 import HEADER_FIELD_RE

CHUNKED = "chunked"


def framing_error(
    transfer_encodings: list[bytes], *, content_length: bool, version: str
) -> str | None:
    """Why a request's body length cannot be trusted (it is refused), or ``None`` when it
    can.

    ``transfer_encodings`` holds the value of each ``Transfer-Encoding`` field (none: the
    request has no such field).

    Example:
        >>> framing_error([b"chunked"], content_length=True, version="1.1")
        'Transfer-Encoding and Content-Length together'
    """
    if not transfer_encodings:
        return None
    if version != "1.1":
        return f"Transfer-Encoding in an HTTP/{version} request"
    if content_length:
        return "Transfer-Encoding and Content-Length together"
    codings = [
        coding.strip(b" \t").decode("latin-1").lower()
        for value in transfer_encodings
        for coding in value.split(b",")
        if coding.strip(b" \t")
    ]
    if not codings or codings[-1] != CHUNKED:
        return "chunked must be the last transfer coding"
    if codings.count(CHUNKED) > 1:
        return "chunked applied more than once"
    others = [coding for coding in codings if coding != CHUNKED]
    if others:
        return f"transfer coding not supported: {', '.join(others)} (send chunked alone)"
    return None


def framing_fields(header_plus: bytes) -> tuple[list[bytes], bool]:
    """The ``Transfer-Encoding`` values of a request head and whether it has a
    ``Content-Length``, read with waitress' own header grammar.

    Example:
        >>> framing_fields(b"POST / HTTP/1.1\\r\\nTransfer-Encoding: chunked\\r\\nContent-Length: 3")
        ([b'chunked'], True)
    """
    _, _, fields = header_plus.partition(b"\r\n")
    transfer_encodings: list[bytes] = []
    content_length = False
    for line in get_header_lines(fields):
        match = HEADER_FIELD_RE.match(line)
        if match is None:
            continue  # waitress refuses the head itself
        name = match.group("name").lower()
        if name == b"transfer-encoding":
            transfer_encodings.append(match.group("value").strip(b" \t"))
        elif name == b"content-length":
            content_length = True
    return transfer_encodings, content_length


class FramingParser(HTTPRequestParser):  # type: ignore[misc]
    """waitress' request parser, refusing every request whose framing is in doubt (see the
    module's text) as waitress refuses a malformed one: a 400, then the connection closed.

    Example:
        >>> from waitress.adjustments import Adjustments
        >>> parser = FramingParser(Adjustments())
        >>> parser.received(b"POST / HTTP/1.1\\r\\nTransfer-Encoding: xchunked\\r\\n\\r\\n") > 0
        True
        >>> parser.error.code, parser.error.body
        (400, 'chunked must be the last transfer coding')
    """

    def parse_header(self, header_plus: bytes) -> None:
        # Most requests have no Transfer-Encoding: their framing is waitress' to read, and
        # their fields are not parsed twice. Field names never contain spaces or fold, so a
        # name in any case spelling is found in the lowercased head.
        if b"transfer-encoding" not in header_plus.lower():
            super().parse_header(header_plus)
            return
        transfer_encodings, content_length = framing_fields(header_plus)
        unsupported: TransferEncodingNotImplemented | None = None
        try:
            super().parse_header(header_plus)
        except TransferEncodingNotImplemented as error:
            unsupported = error  # the version and the other fields are read by now
        problem = framing_error(
            transfer_encodings, content_length=content_length, version=self.version
        )
        if problem is None:
            if unsupported is not None:  # pragma: no cover - framing_error refuses it too
                raise unsupported
            return
        raise ParsingError(problem)
