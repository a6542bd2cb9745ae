"""syvain-metrics: an object-style Python SDK for the Syvain Metrics REST API.

Example:
    >>> import syvain_metrics as sm
    >>> sm.connect("ak_org_...")                                    # doctest: +SKIP
    >>> exp = sm.Experiment.create("mamba-run-001")                 # doctest: +SKIP
    >>> with exp.run():                                             # doctest: +SKIP
    ...     exp.log("loss", 0.5, step=0)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from syvain_metrics._version import __version__

if TYPE_CHECKING:
    from syvain_metrics.client.ranks import RankInfo, rank_info
    from syvain_metrics.client.registry import connect, get_session, set_default_session
    from syvain_metrics.client.retry import RetryPolicy
    from syvain_metrics.client.session import Session
    from syvain_metrics.context.system import SystemMetrics
    from syvain_metrics.errors import (
        ExperimentNotCreatedError,
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
        OfflineError,
        PagingError,
        PartialIngestError,
        RejectedEvent,
        RunFinishedError,
    )
    from syvain_metrics.resources.annotation import Annotation
    from syvain_metrics.resources.auth_status import AuthStatus, whoami
    from syvain_metrics.resources.catalog import CatalogEntry, CatalogValues
    from syvain_metrics.resources.compare import Series, compare, iter_compare
    from syvain_metrics.resources.experiment import UNSET, Experiment
    from syvain_metrics.resources.experiment.writing import IngestResult
    from syvain_metrics.resources.experiment_list import ExperimentList
    from syvain_metrics.resources.folder import Folder
    from syvain_metrics.resources.ingestion_key import IngestionKey
    from syvain_metrics.resources.metric import Metric, MetricRows
    from syvain_metrics.resources.point import MetricPoint
    from syvain_metrics.testing import start_local_server

# Where each public name lives: imported on first use, so that `import syvain_metrics`
# (and the `syvain-metrics` command, which must handle a signal from its first instruction)
# costs only this file.
_LAZY: dict[str, str] = {
    "ExperimentNotCreatedError": "syvain_metrics.errors",
    "FlushError": "syvain_metrics.errors",
    "MetricsApiAuthError": "syvain_metrics.errors",
    "MetricsApiConflictError": "syvain_metrics.errors",
    "MetricsApiConnectionError": "syvain_metrics.errors",
    "MetricsApiError": "syvain_metrics.errors",
    "MetricsApiNotFoundError": "syvain_metrics.errors",
    "MetricsApiPermissionError": "syvain_metrics.errors",
    "MetricsApiRateLimitError": "syvain_metrics.errors",
    "MetricsApiRequestError": "syvain_metrics.errors",
    "MetricsApiResponseError": "syvain_metrics.errors",
    "MetricsApiTimeoutError": "syvain_metrics.errors",
    "MetricsApiTransportError": "syvain_metrics.errors",
    "MetricsValidationError": "syvain_metrics.errors",
    "OfflineError": "syvain_metrics.errors",
    "PagingError": "syvain_metrics.errors",
    "PartialIngestError": "syvain_metrics.errors",
    "RejectedEvent": "syvain_metrics.errors",
    "RunFinishedError": "syvain_metrics.errors",
    "Annotation": "syvain_metrics.resources.annotation",
    "AuthStatus": "syvain_metrics.resources.auth_status",
    "whoami": "syvain_metrics.resources.auth_status",
    "CatalogEntry": "syvain_metrics.resources.catalog",
    "CatalogValues": "syvain_metrics.resources.catalog",
    "UNSET": "syvain_metrics.resources.experiment",
    "Experiment": "syvain_metrics.resources.experiment",
    "Folder": "syvain_metrics.resources.folder",
    "IngestionKey": "syvain_metrics.resources.ingestion_key",
    "Metric": "syvain_metrics.resources.metric",
    "MetricRows": "syvain_metrics.resources.metric",
    "Series": "syvain_metrics.resources.compare",
    "compare": "syvain_metrics.resources.compare",
    "iter_compare": "syvain_metrics.resources.compare",
    "MetricPoint": "syvain_metrics.resources.point",
    "ExperimentList": "syvain_metrics.resources.experiment_list",
    "IngestResult": "syvain_metrics.resources.experiment.writing",
    "RetryPolicy": "syvain_metrics.client.retry",
    "RankInfo": "syvain_metrics.client.ranks",
    "SystemMetrics": "syvain_metrics.context.system",
    "rank_info": "syvain_metrics.client.ranks",
    "Session": "syvain_metrics.client.session",
    "connect": "syvain_metrics.client.registry",
    "get_session": "syvain_metrics.client.registry",
    "set_default_session": "syvain_metrics.client.registry",
    "start_local_server": "syvain_metrics.testing",
}

__all__ = [
    "UNSET",
    "Annotation",
    "AuthStatus",
    "CatalogEntry",
    "CatalogValues",
    "Experiment",
    "ExperimentList",
    "ExperimentNotCreatedError",
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
    "OfflineError",
    "PagingError",
    "PartialIngestError",
    "RankInfo",
    "RejectedEvent",
    "RetryPolicy",
    "RunFinishedError",
    "Series",
    "Session",
    "SystemMetrics",
    "__version__",
    "compare",
    "connect",
    "get_session",
    "iter_compare",
    "rank_info",
    "set_default_session",
    "start_local_server",
    "whoami",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'syvain_metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return list(__all__)
