"""The local server's own limits on what it accepts, each written once.

These are the local server's choices (README, "The local server's limits"), not the
contract's: the hosted service may draw its lines elsewhere, and the SDK does not depend
on them. Whatever crosses one gets a 4xx in the contract's envelope, never a 5xx.

Example:
    >>> MAX_BODY_BYTES // 1024 // 1024, MAX_JSON_DEPTH, MAX_METADATA_BYTES // 1024
    (4, 32, 16)
"""

from __future__ import annotations

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body, in bytes (``413 payload_too_large`` beyond). A full ingest batch of
1,000 metrics with a few kilobytes of metadata each fits; the SDK splits a batch the server
refuses as too large. A body is refused by its ``Content-Length`` before it is read, and a
body without one is read no further than this."""

LARGE_BODY_BYTES = 256 * 1024
"""A body past this size is large: its parsed value may take up to 25 times as much memory."""

LARGE_BODIES_AT_ONCE = 2
"""Large bodies parsed and handled at the same time; more wait their turn, so parallel
large requests do not multiply the server's memory."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects in a JSON body or a JSON query value (the body
object itself is level 1): ``400 validation_error`` beyond."""

MAX_METADATA_BYTES = 16 * 1024
"""Largest ``metadata`` object of an experiment, a metric or an annotation, as compact UTF-8
JSON text: ``400 validation_error`` naming the field beyond."""

MAX_ROWS_ANSWER_BYTES = 64 * 1024 * 1024
"""Largest metric-rows answer, in bytes of row text, about: a page stops at the row that
passes it (at least one row comes), so a read of rows with large metadata is served in
shorter pages instead of one answer of gigabytes. The contract lets a service cap pages,
and the SDK reads on past a short page."""

MAX_IDEMPOTENCY_KEY_LENGTH = 255
"""Longest ``Idempotency-Key`` header value, in characters."""

CONNECTION_LIMIT = 1000
"""Open connections served at once (waitress' ``connection_limit``; its default is 100). Past
it, a new connection takes the place of the connection that has waited longest for its client
(one idle between requests, or still sending its request); it is closed at once only when
every connection has a request being answered."""

CONNECTIONS_PER_CLIENT = 100
"""Open connections one client address holds at once. Its next connection takes the place of
the one of its own that has waited longest for it, as past :data:`CONNECTION_LIMIT`: a client
opening connections it does not use only ever replaces its own, and leaves the other
clients' slots alone. A trusted proxy's address (``serve --trusted-proxy``), which every
client behind it shares, is held to :data:`CONNECTION_LIMIT` only."""

HEAD_TIMEOUT_S = 10
"""A request's head (its request line and header fields) must arrive whole within this many
seconds of the connection's opening, or of its first byte on a kept-alive connection; the
server then answers ``408 request_timeout`` and closes the connection. Bytes arriving do not
move this deadline, so a client sending its head a byte at a time holds a connection no
longer than this."""

BODY_TIMEOUT_S = 60
"""A request's body must arrive whole within this many seconds of the end of its head (a
body of :data:`MAX_BODY_BYTES` at 70 KB/s), or ``408 request_timeout`` and the connection
closed."""

IDLE_TIMEOUT_S = 20
"""A kept-alive connection that sends nothing for this long between requests is closed
(waitress' ``channel_timeout``; its default is 120 s): idle or half-open connections cannot
hold every slot for long."""

CLEANUP_INTERVAL_S = 2
"""How often deadlines and idle connections are checked (waitress' ``cleanup_interval``): a
connection is closed up to this long after its deadline."""

WAL_WAIT_SECONDS = 120.0
"""How long opening a database file waits for another process that holds it (one bringing
an old file to the current layout, say) before its change to WAL mode gives up."""
