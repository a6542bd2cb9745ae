"""Every numeric limit of the wire contract, written once.

The SDK's schemas and the local server both read these, so the two sides cannot drift.

Example:
    >>> MAX_METRICS_PER_INGEST
    1000
"""

from __future__ import annotations

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer the service stores exactly (its runtime keeps numbers as doubles)."""

MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999
"""The range of millisecond timestamps an answer may carry: what a ``datetime`` holds
(years 1 to 9999)."""

FOLDER_NAME_MAX = 200
SLUG_MAX = 200
DESCRIPTION_MAX = 4_000
ERROR_NAME_MAX = 500
ERROR_DETAIL_MAX = 8_000
CLIENT_EVENT_ID_MAX = 200
METRIC_NAME_MAX = 500
ANNOTATION_MAX = 16_000
INGESTION_KEY_NAME_MAX = 200
INGESTION_KEY_TTL_MAX_MS = 7 * 24 * 60 * 60 * 1000
MAX_METRICS_PER_INGEST = 1_000
MAX_COMPARE_SERIES = 64

MAX_METRIC_ROWS_LIMIT = 100_000
"""Largest ``limit`` the service honours for metric rows (it clamps larger ones)."""

# (default, maximum) ``limit`` of each list operation; the service clamps larger ones.
EXPERIMENTS_LIMIT = (100, 1_000)
METRIC_ROWS_LIMIT = (1_000, MAX_METRIC_ROWS_LIMIT)
ANNOTATIONS_LIMIT = (100, 1_000)
CATALOG_LIMIT = (100, 1_000)

DEFAULT_PAGE_SIZE = 50_000
"""Rows per request when the SDK pages a read: half the largest metric-rows ``limit``, so that
a page and the next one fetched meanwhile stay small in memory (about 60 MB each while
decoded) and a large read overlaps its requests with its decoding. Reads do not depend on
the service honouring it: the end of a read is a page that brings no new rows."""

STREAM_PAGE_SIZE = 20_000
"""Rows per page of a streamed read (``iter_metrics()``) unless told otherwise: pages in
flight stay around 25 MB each whatever the length of the history."""

EXPERIMENT_STATUSES = ("created", "running", "done", "error")
STATUS_UPDATES = ("running", "done", "error")
METRIC_SORT_KEYS = ("step", "client_timestamp", "server_timestamp")
COMPARE_SORT_KEYS = ("series", *METRIC_SORT_KEYS)
SORT_DIRECTIONS = ("asc", "desc")
AUTH_KINDS = ("api_key", "session", "ingestion_key")
INGEST_MODES = ("sync", "queued")

DEFAULT_INGESTION_KEY_NAME = "SDK ingestion key"
DEFAULT_ERROR_NAME = "Error"
INGESTION_TOKEN_RENEWAL_MS = 5 * 60 * 1000
"""A cached ingestion token is replaced once it is this close to expiry."""
