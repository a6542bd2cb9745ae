"""The contract's 20 operations: name, method and path, written once for the SDK and the
local server alike.

Example:
    >>> CATALOG_VALUES.path("exp/1", "loss rate")
    '/experiments/exp%2F1/catalog/loss%20rate'
    >>> CATALOG_VALUES.rule
    '/experiments/<experiment_id>/catalog/<metric>'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from syvain_metrics.errors import MetricsValidationError

API_PREFIX = "/api/v1"
"""Every route below is under this prefix."""

Method = Literal["GET", "POST", "PATCH", "DELETE"]
Credential = Literal["api_key", "ingestion_key", "any"]
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    """One operation: its name (as in the contract's wire examples), method, path template,
    and the transport facts the contract ties to it.

    Example:
        >>> GET_EXPERIMENT.method, GET_EXPERIMENT.path("0f8e2c1a")
        ('GET', '/experiments/0f8e2c1a')
        >>> INGEST_METRICS.credential, INGEST_METRICS.long_wait
        ('ingestion_key', True)
    """

    operation: str
    method: Method
    template: str
    credential: Credential = "api_key"
    """Who may call it: the API key, the experiment's ingestion token, or either."""
    idempotency_key: bool | None = None
    """Whether calls carry an ``Idempotency-Key``; ``None`` means "on POST and PATCH"."""
    long_wait: bool = False
    """Uses the ingest timeout: ``sync=true`` may hold the answer."""

    @property
    def sends_idempotency_key(self) -> bool:
        """One key per logical call, reused on retries (contract section 1)."""
        if self.idempotency_key is not None:
            return self.idempotency_key
        return self.method in ("POST", "PATCH")

    def path(self, *segments: str) -> str:
        """The path after ``/api/v1``, each segment percent-encoded with no safe characters.

        Empty or non-string segments are refused before any request is built.
        """
        names = _PLACEHOLDER.findall(self.template)
        if len(segments) != len(names):
            raise TypeError(f"{self.operation} needs {len(names)} path segment(s): {names}")
        for name, segment in zip(names, segments, strict=True):
            if not isinstance(segment, str) or not segment:
                raise MetricsValidationError(
                    {name: [f"Must be a non-empty string, got {segment!r}."]}
                )
        encoded = iter(quote(segment, safe="") for segment in segments)
        return _PLACEHOLDER.sub(lambda _match: next(encoded), self.template)

    @property
    def rule(self) -> str:
        """The template in werkzeug's routing syntax (the local server's)."""
        return _PLACEHOLDER.sub(r"<\1>", self.template)


AUTH_STATUS = Route("auth_status", "GET", "/auth/status", credential="any")
LIST_FOLDERS = Route("list_folders", "GET", "/folders")
CREATE_FOLDER = Route("create_folder", "POST", "/folders")
GET_FOLDER = Route("get_folder", "GET", "/folders/{folder_id}")
PATCH_FOLDER = Route("patch_folder", "PATCH", "/folders/{folder_id}")
LIST_EXPERIMENTS = Route("list_experiments", "GET", "/experiments")
CREATE_EXPERIMENT = Route("create_experiment", "POST", "/experiments")
GET_EXPERIMENT = Route("get_experiment", "GET", "/experiments/{experiment_id}")
UPDATE_EXPERIMENT_STATUS = Route("update_experiment_status", "POST", "/experiments/{experiment_id}")
MOVE_EXPERIMENT = Route("move_experiment", "PATCH", "/experiments/{experiment_id}")
LIST_METRICS = Route("list_metrics", "GET", "/experiments/{experiment_id}/metrics")
COMPARE_METRICS = Route("compare_metrics", "GET", "/metrics")
INGEST_METRICS = Route(
    "ingest_metrics",
    "POST",
    "/experiments/{experiment_id}/ingest",
    credential="ingestion_key",
    long_wait=True,
)
LIST_INGESTION_KEYS = Route(
    "list_ingestion_keys", "GET", "/experiments/{experiment_id}/ingestion-keys"
)
CREATE_INGESTION_KEY = Route(
    "create_ingestion_key",
    "POST",
    "/experiments/{experiment_id}/ingestion-keys",
    idempotency_key=False,
)
REVOKE_INGESTION_KEY = Route(
    "revoke_ingestion_key", "DELETE", "/experiments/{experiment_id}/ingestion-keys/{key_id}"
)
CATALOG = Route("list_metric_catalog", "GET", "/experiments/{experiment_id}/catalog")
CATALOG_VALUES = Route(
    "inspect_metric_catalog_values", "GET", "/experiments/{experiment_id}/catalog/{metric}"
)
LIST_ANNOTATIONS = Route("list_annotations", "GET", "/experiments/{experiment_id}/annotations")
CREATE_ANNOTATION = Route(
    "create_annotation",
    "POST",
    "/experiments/{experiment_id}/annotations",
    credential="ingestion_key",
)

ROUTES: tuple[Route, ...] = (
    AUTH_STATUS,
    LIST_FOLDERS,
    CREATE_FOLDER,
    GET_FOLDER,
    PATCH_FOLDER,
    LIST_EXPERIMENTS,
    CREATE_EXPERIMENT,
    GET_EXPERIMENT,
    UPDATE_EXPERIMENT_STATUS,
    MOVE_EXPERIMENT,
    LIST_METRICS,
    COMPARE_METRICS,
    INGEST_METRICS,
    LIST_INGESTION_KEYS,
    CREATE_INGESTION_KEY,
    REVOKE_INGESTION_KEY,
    CATALOG,
    CATALOG_VALUES,
    LIST_ANNOTATIONS,
    CREATE_ANNOTATION,
)
"""Every operation of the contract (section 5), in its order."""

DASHBOARD_PREFIX = "/dashboard"
"""The local server's dashboard pages are under this path (outside the API)."""


def dashboard_experiment_path(experiment_id: str) -> str:
    """The path of an experiment's dashboard page (an experiment's ``url`` on the local server).

    Example:
        >>> dashboard_experiment_path("exp/1")
        '/dashboard/experiments/exp%2F1'
    """
    return f"{DASHBOARD_PREFIX}/experiments/{quote(experiment_id, safe='')}"


def dashboard_folder_path(folder_id: str | None = None) -> str:
    """The path of the dashboard's list page, showing one folder's experiments (or all).

    Example:
        >>> dashboard_folder_path("f 1"), dashboard_folder_path()
        ('/dashboard/?folder=f%201', '/dashboard/')
    """
    if folder_id is None:
        return f"{DASHBOARD_PREFIX}/"
    return f"{DASHBOARD_PREFIX}/?folder={quote(folder_id, safe='')}"
