"""One function per endpoint: take a validated call, ask the store, return ``data``; and
:data:`ENDPOINTS`, the table binding each operation of the contract to its handler.

Bodies and queries are validated with the schemas the operation names in
:mod:`syvain_metrics.contract.operations`, so the client and the server check the same rules.

Example:
    >>> from syvain_metrics.server.store import Store
    >>> store = Store()
    >>> [key] = store.use_api_keys(["ak_local_demo"])
    >>> call = Call(store, store.authenticate(key), "http://127.0.0.1:8765", {}, {}, {})
    >>> auth_status(call)["auth"]
    {'kind': 'api_key'}
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema

from syvain_metrics.contract import operations as ops
from syvain_metrics.contract.limits import (
    ANNOTATIONS_LIMIT,
    CATALOG_LIMIT,
    EXPERIMENTS_LIMIT,
    METRIC_ROWS_LIMIT,
)
from syvain_metrics.contract.operations import Operation
from syvain_metrics.contract.queries import WireQuerySchema
from syvain_metrics.contract.schemas.ingest import CheckedIngestRequest
from syvain_metrics.server import wire
from syvain_metrics.server.errors import invalid
from syvain_metrics.server.inputs import query_schema
from syvain_metrics.server.sql import RowQuery, SeriesFilter, compact
from syvain_metrics.server.store import Principal, StagedBatch, Store


@dataclass(frozen=True)
class Call:
    """A request that passed routing, authentication and validation."""

    store: Store
    principal: Principal
    origin: str
    """Scheme and host the request was sent to (the experiments' ``url`` points there)."""
    args: Mapping[str, str]
    """Path values, percent-decoded."""
    query: Mapping[str, Any]
    body: Mapping[str, Any]
    body_text: str | None = None
    """The canonical JSON text of the parsed body, when the request pipeline made it."""
    staged: StagedBatch | None = None
    """An ingest's batch, made ready before its transaction (:meth:`Store.staging`)."""

    @property
    def org(self) -> str:
        """The caller's organization id."""
        return self.principal.org_id


Data = dict[str, Any]


def clamp_limit(value: int | None, bounds: tuple[int, int]) -> int:
    """The default when ``value`` is ``None``, else ``value`` clamped to the maximum.

    Example:
        >>> clamp_limit(None, (100, 1000)), clamp_limit(5000, (100, 1000))
        (100, 1000)
    """
    default, maximum = bounds
    return default if value is None else min(value, maximum)


def _folder_name(name: str) -> str:
    # A path names at most one folder only if names cannot contain the separator.
    if "/" in name:
        raise invalid("name", "A folder name must not contain '/'.", what="request body")
    return name


def auth_status(call: Call) -> Data:
    """``GET /auth/status``."""
    return {
        "auth": {"kind": call.principal.kind},
        "organization": wire.organization(call.store.organization(call.org)),
    }


def list_folders(call: Call) -> Data:
    """``GET /folders``."""
    folders = call.store.list_folders(call.org, call.query.get("path"))
    return {"folders": [wire.folder(f) for f in folders]}


def create_folder(call: Call) -> Data:
    """``POST /folders``."""
    name = _folder_name(call.body["name"])
    return {
        "folder": wire.folder(call.store.create_folder(call.org, name, call.body.get("parent_id")))
    }


def get_folder(call: Call) -> Data:
    """``GET /folders/{id}``."""
    contents = call.store.get_folder(call.org, call.args["folder_id"])
    return wire.folder_contents(contents, call.origin)


def patch_folder(call: Call) -> Data:
    """``PATCH /folders/{id}``."""
    if "name" in call.body:
        _folder_name(call.body["name"])
    return {
        "folder": wire.folder(call.store.patch_folder(call.org, call.args["folder_id"], call.body))
    }


def list_experiments(call: Call) -> Data:
    """``GET /experiments``."""
    query = call.query
    experiments = call.store.list_experiments(
        call.org,
        limit=clamp_limit(query.get("limit"), EXPERIMENTS_LIMIT),
        status=query.get("status"),
        slug=query.get("slug"),
        search=query.get("search"),
        from_ms=query.get("from_ms"),
        to_ms=query.get("to_ms"),
    )
    return {"experiments": [wire.experiment(e, call.origin) for e in experiments]}


def create_experiment(call: Call) -> Data:
    """``POST /experiments``."""
    return {
        "experiment": wire.experiment(
            call.store.create_experiment(call.org, call.body), call.origin
        )
    }


def get_experiment(call: Call) -> Data:
    """``GET /experiments/{id}``."""
    experiment = call.store.get_experiment(call.org, call.args["experiment_id"])
    return {"experiment": wire.experiment(experiment, call.origin)}


def update_experiment_status(call: Call) -> Data:
    """``POST /experiments/{id}``."""
    experiment_id = call.args["experiment_id"]
    experiment = call.store.update_status(call.org, experiment_id, call.body)
    return {"experiment": wire.experiment(experiment, call.origin)}


def move_experiment(call: Call) -> Data:
    """``PATCH /experiments/{id}``."""
    experiment_id, folder_id = call.args["experiment_id"], call.body["folder_id"]
    experiment = call.store.move_experiment(call.org, experiment_id, folder_id)
    return {"experiment": wire.experiment(experiment, call.origin)}


def _series(experiment_id: str, filters: Mapping[str, Any]) -> SeriesFilter:
    wanted = filters.get("metadata_value_json", ...)
    return SeriesFilter(
        experiment_id=experiment_id,
        metric_name=filters.get("metric_name"),
        metadata_key=filters.get("metadata_key"),
        metadata_value=filters.get("metadata_value"),
        metadata_value_json=None if wanted is ... else compact(wanted),
    )


def _row_query(call: Call, series: list[SeriesFilter]) -> RowQuery:
    query = call.query
    return RowQuery(
        org_id=call.org,
        series=series,
        limit=clamp_limit(query.get("limit"), METRIC_ROWS_LIMIT),
        step=query.get("step"),
        from_step=query.get("from_step"),
        to_step=query.get("to_step"),
        from_time=query.get("from_time"),
        to_time=query.get("to_time"),
        sort_by=query.get("sort_by") or ("step", "client_timestamp"),
        descending=query.get("sort_direction") == "desc",
        include_meta=bool(query.get("include_experiment_meta_as_of")),
    )


class RawJson(str):
    """JSON text to place in an answer as it is (a large rows array, already written)."""


def list_metrics(call: Call) -> Data:
    """``GET /experiments/{id}/metrics``."""
    series = [_series(call.args["experiment_id"], call.query)]
    return {"rows": RawJson(wire.rows_json(call.store.metric_row_texts(_row_query(call, series))))}


def compare_metrics(call: Call) -> Data:
    """``GET /metrics``: a row belongs to the first series it matches."""
    series = [_series(s["experiment_id"], s) for s in call.query["series"]]
    rows = call.store.metric_row_texts(_row_query(call, series), missing_field="series")
    return {"rows": RawJson(wire.rows_json(rows))}


def ingest_metrics(call: Call) -> Data:
    """``POST /experiments/{id}/ingest``: stored before answering, whatever ``sync`` says."""
    call.store.ingest(
        call.org,
        call.args["experiment_id"],
        call.body["data"],
        source=call.body_text,
        staged=call.staged,
    )
    return {"ok": True, "mode": "sync" if call.query.get("sync") else "queued"}


def list_ingestion_keys(call: Call) -> Data:
    """``GET /experiments/{id}/ingestion-keys``."""
    keys = call.store.list_ingestion_keys(call.org, call.args["experiment_id"])
    return {"keys": [wire.ingestion_key(k) for k in keys]}


def create_ingestion_key(call: Call) -> Data:
    """``POST /experiments/{id}/ingestion-keys``."""
    key, token = call.store.create_ingestion_key(
        call.org, call.args["experiment_id"], call.body["name"], call.body.get("ttl_ms")
    )
    return {"key": wire.ingestion_key(key), "token": token}


def revoke_ingestion_key(call: Call) -> Data:
    """``DELETE /experiments/{id}/ingestion-keys/{key_id}``."""
    key = call.store.revoke_ingestion_key(call.org, call.args["experiment_id"], call.args["key_id"])
    return {"key": wire.ingestion_key(key)}


def list_metric_catalog(call: Call) -> Data:
    """``GET /experiments/{id}/catalog``."""
    limit = clamp_limit(call.query.get("limit"), CATALOG_LIMIT)
    entries = call.store.catalog(call.org, call.args["experiment_id"], limit)
    return {"metrics": [wire.catalog_entry(e) for e in entries]}


def inspect_metric_catalog_values(call: Call) -> Data:
    """``GET /experiments/{id}/catalog/{metric}``."""
    limit = clamp_limit(call.query.get("limit"), CATALOG_LIMIT)
    values = call.store.catalog_values(
        call.org, call.args["experiment_id"], call.args["metric"], call.query.get("key"), limit
    )
    return {"metadata": wire.catalog_values(values)}


def list_annotations(call: Call) -> Data:
    """``GET /experiments/{id}/annotations``."""
    annotations = call.store.list_annotations(
        call.org,
        call.args["experiment_id"],
        limit=clamp_limit(call.query.get("limit"), ANNOTATIONS_LIMIT),
        from_ms=call.query.get("from_ms"),
        to_ms=call.query.get("to_ms"),
    )
    return {"annotations": [wire.annotation(a) for a in annotations]}


def create_annotation(call: Call) -> Data:
    """``POST /experiments/{id}/annotations``."""
    experiment, annotation = call.store.create_annotation(
        call.org, call.args["experiment_id"], call.body
    )
    return {
        "experiment": wire.experiment(experiment, call.origin),
        "annotation": wire.annotation(annotation),
    }


@contextlib.contextmanager
def stage_ingest(call: Call) -> Iterator[Call]:
    """The ingest's batch made ready before its write turn: its rows are read out of its text
    while other requests are written, and the write only copies them."""
    with call.store.staging(call.body["data"], source=call.body_text) as staged:
        yield dataclasses.replace(call, staged=staged)


Handler = Callable[[Call], Data]
Stage = Callable[[Call], contextlib.AbstractContextManager[Call]]


@dataclass(frozen=True)
class Endpoint:
    """An operation of the contract, the handler that serves it, and its hooks.

    Example:
        >>> endpoint = Endpoint(ops.GET_EXPERIMENT, get_experiment)
        >>> endpoint.name, endpoint.body
        ('get_experiment', None)
    """

    operation: Operation
    handler: Handler
    body_schema: type[Schema] | None = None
    """Checks the body instead of the operation's own schema (a stricter reading)."""
    stage: Stage | None = None
    """Readies a call before its write turn is taken (runs outside the write lock)."""
    stores_text: bool = False
    """The handler keeps the body's canonical JSON text (``Call.body_text``)."""
    query: WireQuerySchema = dataclasses.field(init=False, repr=False, compare=False)
    body: Schema | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = self.body_schema or self.operation.body
        object.__setattr__(self, "query", query_schema(self.operation.query))
        object.__setattr__(self, "body", body() if body is not None else None)

    @property
    def name(self) -> str:
        """The operation name (``"create_experiment"``...)."""
        return self.operation.operation


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(ops.AUTH_STATUS, auth_status),
    Endpoint(ops.LIST_FOLDERS, list_folders),
    Endpoint(ops.CREATE_FOLDER, create_folder),
    Endpoint(ops.GET_FOLDER, get_folder),
    Endpoint(ops.PATCH_FOLDER, patch_folder),
    Endpoint(ops.LIST_EXPERIMENTS, list_experiments),
    Endpoint(ops.CREATE_EXPERIMENT, create_experiment),
    Endpoint(ops.GET_EXPERIMENT, get_experiment),
    Endpoint(ops.UPDATE_EXPERIMENT_STATUS, update_experiment_status),
    Endpoint(ops.MOVE_EXPERIMENT, move_experiment),
    Endpoint(ops.LIST_METRICS, list_metrics),
    Endpoint(ops.COMPARE_METRICS, compare_metrics),
    Endpoint(
        ops.INGEST_METRICS,
        ingest_metrics,
        # The server stores the request's own text: plainly valid metrics are kept as given.
        body_schema=CheckedIngestRequest,
        stage=stage_ingest,
        stores_text=True,
    ),
    Endpoint(ops.LIST_INGESTION_KEYS, list_ingestion_keys),
    Endpoint(ops.CREATE_INGESTION_KEY, create_ingestion_key),
    Endpoint(ops.REVOKE_INGESTION_KEY, revoke_ingestion_key),
    Endpoint(ops.CATALOG, list_metric_catalog),
    Endpoint(ops.CATALOG_VALUES, inspect_metric_catalog_values),
    Endpoint(ops.LIST_ANNOTATIONS, list_annotations),
    Endpoint(ops.CREATE_ANNOTATION, create_annotation),
)
"""The contract's 20 endpoints (section 5), in the order of
:data:`~syvain_metrics.contract.operations.OPERATIONS`."""
