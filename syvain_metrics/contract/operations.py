"""The contract's 20 operations in one table: each binds its name, method and path to the
schemas of its body, its query and its reply, written once for the SDK and the local server.

The SDK builds a call from an operation (path, idempotency key, timeout, the schema its
answer is loaded with); the local server routes to it and checks a request with the same
schemas (:data:`syvain_metrics.server.handlers.ENDPOINTS` binds each to its handler).
``docs/wire-contract.md`` describes the operations in prose (section 5).

Example:
    >>> CATALOG_VALUES.path("exp/1", "loss rate")
    '/experiments/exp%2F1/catalog/loss%20rate'
    >>> CATALOG_VALUES.rule
    '/experiments/<experiment_id>/catalog/<metric>'
    >>> CREATE_FOLDER.body.__name__, CREATE_FOLDER.reply.__name__
    ('FolderCreateRequest', 'FolderReply')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from marshmallow import Schema

from syvain_metrics.contract import queries
from syvain_metrics.contract.queries import Query
from syvain_metrics.contract.schemas import (
    annotation,
    auth,
    catalog,
    experiment,
    folder,
    ingest,
    ingestion_key,
    metric_query,
    rows,
)
from syvain_metrics.errors import MetricsValidationError

__all__ = [
    "API_PREFIX",
    "AUTH_STATUS",
    "CATALOG",
    "CATALOG_VALUES",
    "COMPARE_METRICS",
    "CREATE_ANNOTATION",
    "CREATE_EXPERIMENT",
    "CREATE_FOLDER",
    "CREATE_INGESTION_KEY",
    "DASHBOARD_PREFIX",
    "GET_EXPERIMENT",
    "GET_FOLDER",
    "INGEST_METRICS",
    "LIST_ANNOTATIONS",
    "LIST_EXPERIMENTS",
    "LIST_FOLDERS",
    "LIST_INGESTION_KEYS",
    "LIST_METRICS",
    "MOVE_EXPERIMENT",
    "OPERATIONS",
    "PATCH_FOLDER",
    "REVOKE_INGESTION_KEY",
    "UPDATE_EXPERIMENT_STATUS",
    "Credential",
    "Method",
    "Operation",
    "dashboard_experiment_path",
    "dashboard_folder_path",
]

API_PREFIX = "/api/v1"
"""Every route below is under this prefix."""

Method = Literal["GET", "POST", "PATCH", "DELETE"]
Credential = Literal["api_key", "ingestion_key", "any"]
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Operation:
    """One operation: its name (as in the contract's wire examples), method, path template,
    the schemas of what it carries, and the transport facts the contract ties to it.

    Example:
        >>> GET_EXPERIMENT.method, GET_EXPERIMENT.path("0f8e2c1a")
        ('GET', '/experiments/0f8e2c1a')
        >>> INGEST_METRICS.credential, INGEST_METRICS.long_wait
        ('ingestion_key', True)
    """

    operation: str
    method: Method
    template: str
    reply: type[Schema]
    """Loads the ``data`` of its 2xx answer."""
    body: type[Schema] | None = None
    """Checks its JSON body; ``None``: it takes none."""
    query: Query = queries.NO_QUERY
    """Its query parameters (:mod:`~syvain_metrics.contract.queries`)."""
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


AUTH_STATUS = Operation(
    "auth_status", "GET", "/auth/status", auth.AuthStatusReply, credential="any"
)
LIST_FOLDERS = Operation(
    "list_folders", "GET", "/folders", folder.FolderListReply, query=folder.FOLDER_LIST
)
CREATE_FOLDER = Operation(
    "create_folder", "POST", "/folders", folder.FolderReply, body=folder.FolderCreateRequest
)
GET_FOLDER = Operation("get_folder", "GET", "/folders/{folder_id}", experiment.FolderContentsReply)
PATCH_FOLDER = Operation(
    "patch_folder",
    "PATCH",
    "/folders/{folder_id}",
    folder.FolderReply,
    body=folder.FolderPatchRequest,
)
LIST_EXPERIMENTS = Operation(
    "list_experiments",
    "GET",
    "/experiments",
    experiment.ExperimentListReply,
    query=experiment.EXPERIMENT_LIST,
)
CREATE_EXPERIMENT = Operation(
    "create_experiment",
    "POST",
    "/experiments",
    experiment.ExperimentReply,
    body=experiment.ExperimentCreateRequest,
)
GET_EXPERIMENT = Operation(
    "get_experiment", "GET", "/experiments/{experiment_id}", experiment.ExperimentReply
)
UPDATE_EXPERIMENT_STATUS = Operation(
    "update_experiment_status",
    "POST",
    "/experiments/{experiment_id}",
    experiment.ExperimentReply,
    body=experiment.StatusUpdateRequest,
)
MOVE_EXPERIMENT = Operation(
    "move_experiment",
    "PATCH",
    "/experiments/{experiment_id}",
    experiment.ExperimentReply,
    body=experiment.ExperimentMoveRequest,
)
LIST_METRICS = Operation(
    "list_metrics",
    "GET",
    "/experiments/{experiment_id}/metrics",
    rows.MetricRowsReply,
    query=metric_query.METRICS_LIST,
)
COMPARE_METRICS = Operation(
    "compare_metrics", "GET", "/metrics", rows.MetricRowsReply, query=metric_query.COMPARE
)
INGEST_METRICS = Operation(
    "ingest_metrics",
    "POST",
    "/experiments/{experiment_id}/ingest",
    ingest.IngestReply,
    body=ingest.IngestRequest,
    query=ingest.INGEST,
    credential="ingestion_key",
    long_wait=True,
)
LIST_INGESTION_KEYS = Operation(
    "list_ingestion_keys",
    "GET",
    "/experiments/{experiment_id}/ingestion-keys",
    ingestion_key.IngestionKeyListReply,
)
CREATE_INGESTION_KEY = Operation(
    "create_ingestion_key",
    "POST",
    "/experiments/{experiment_id}/ingestion-keys",
    ingestion_key.IngestionKeyCreateReply,
    body=ingestion_key.IngestionKeyCreateRequest,
    idempotency_key=False,
)
REVOKE_INGESTION_KEY = Operation(
    "revoke_ingestion_key",
    "DELETE",
    "/experiments/{experiment_id}/ingestion-keys/{key_id}",
    ingestion_key.IngestionKeyReply,
)
CATALOG = Operation(
    "list_metric_catalog",
    "GET",
    "/experiments/{experiment_id}/catalog",
    catalog.CatalogReply,
    query=catalog.CATALOG,
)
CATALOG_VALUES = Operation(
    "inspect_metric_catalog_values",
    "GET",
    "/experiments/{experiment_id}/catalog/{metric}",
    catalog.CatalogValuesReply,
    query=catalog.CATALOG_VALUES,
)
LIST_ANNOTATIONS = Operation(
    "list_annotations",
    "GET",
    "/experiments/{experiment_id}/annotations",
    annotation.AnnotationListReply,
    query=annotation.ANNOTATION_LIST,
)
CREATE_ANNOTATION = Operation(
    "create_annotation",
    "POST",
    "/experiments/{experiment_id}/annotations",
    annotation.AnnotationReply,
    body=annotation.AnnotationCreateRequest,
    credential="ingestion_key",
)

OPERATIONS: tuple[Operation, ...] = (
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
