"""syvain-metrics: an object-style Python SDK for the Syvain Metrics REST API.

Example:
    >>> import syvain_metrics as sm
    >>> sm.connect("ak_org_...")                                    # doctest: +SKIP
    >>> exp = sm.Experiment.create("mamba-run-001")                 # doctest: +SKIP
    >>> with exp.run():                                             # doctest: +SKIP
    ...     exp.log("loss", 0.5, step=0)
"""

from syvain_metrics._version import __version__
from syvain_metrics.errors import (
    FlushError,
    MetricsApiAuthError,
    MetricsApiConflictError,
    MetricsApiConnectionError,
    MetricsApiError,
    MetricsApiNotFoundError,
    MetricsApiPermissionError,
    MetricsApiRateLimitError,
    MetricsApiRequestError,
    MetricsApiResponseError,
    MetricsApiTimeoutError,
    MetricsApiTransportError,
    MetricsValidationError,
    PagingError,
    PartialIngestError,
    RejectedEvent,
)
from syvain_metrics.resources.annotation import Annotation
from syvain_metrics.resources.auth_status import AuthStatus, whoami
from syvain_metrics.resources.catalog import CatalogEntry, CatalogValues
from syvain_metrics.resources.experiment import UNSET, Experiment
from syvain_metrics.resources.folder import Folder
from syvain_metrics.resources.ingestion_key import IngestionKey
from syvain_metrics.resources.metric import Metric, MetricRows, Series, compare, iter_compare
from syvain_metrics.resources.point import MetricPoint
from syvain_metrics.resources.runs import ExperimentList
from syvain_metrics.resources.writing import IngestResult
from syvain_metrics.retry import RetryPolicy
from syvain_metrics.session import Session, connect, get_session, set_default_session
from syvain_metrics.testing import start_local_server

__all__ = [
    "UNSET",
    "Annotation",
    "AuthStatus",
    "CatalogEntry",
    "CatalogValues",
    "Experiment",
    "ExperimentList",
    "FlushError",
    "Folder",
    "IngestResult",
    "IngestionKey",
    "Metric",
    "MetricPoint",
    "MetricRows",
    "MetricsApiAuthError",
    "MetricsApiConflictError",
    "MetricsApiConnectionError",
    "MetricsApiError",
    "MetricsApiNotFoundError",
    "MetricsApiPermissionError",
    "MetricsApiRateLimitError",
    "MetricsApiRequestError",
    "MetricsApiResponseError",
    "MetricsApiTimeoutError",
    "MetricsApiTransportError",
    "MetricsValidationError",
    "PagingError",
    "PartialIngestError",
    "RejectedEvent",
    "RetryPolicy",
    "Series",
    "Session",
    "__version__",
    "compare",
    "connect",
    "get_session",
    "iter_compare",
    "set_default_session",
    "start_local_server",
    "whoami",
]
