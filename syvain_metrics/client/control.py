"""Applying one control record (:mod:`~syvain_metrics.pipeline.control`) through a session:
the function the session hands the sender and ``syvain-metrics sync`` as
``Uplink.control``.

Each record is one request sent once (the caller retries on its own schedule) with the
record's own ``Idempotency-Key``, so a creation the service committed before its answer was
lost is answered again, not made twice. A creation with ``exist_ok`` whose slug is taken
finds the run by slug: creating "by slug" is idempotent however often it is tried.

Example:
    >>> apply_control(session, record, None)["slug"]  # doctest: +SKIP
    'run-1'
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from syvain_metrics.client.requestor import Query
from syvain_metrics.contract import operations
from syvain_metrics.contract.operations import Operation
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.experiment import ExperimentListQuery
from syvain_metrics.errors import MetricsApiRequestError
from syvain_metrics.pipeline.control import ControlRecord


class Session(Protocol):
    """What applying a record needs of a :class:`~syvain_metrics.Session`: one call."""

    def call(
        self,
        route: Operation,
        *segments: str,
        query: Query | None = None,
        body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """Send one logical call of ``route``; return its validated ``data``."""
        ...


def slug_taken(error: MetricsApiRequestError) -> bool:
    """Whether a creation was refused because its slug is taken (a 409 that is not about an
    idempotency key).

    Example:
        >>> slug_taken(MetricsApiRequestError("taken", status_code=409, error_code="slug_exists"))
        True
    """
    return error.status_code == 409 and not str(error.error_code or "").startswith("idempotency")


_LOOKUP_PAUSES = (0.1, 0.3, 1.0)
"""Seconds between looks for a run whose slug a 409 said is taken, when a look misses it:
a service whose reads lag its writes (a replica) may not show yet a run another process (a
rank of the same job) created a moment ago."""


def find_by_slug(session: Session, slug: str, *, attempts: int | None = None) -> dict[str, Any]:
    """The experiment that has ``slug``, as the service answers it (its wire form).

    Example:
        >>> find_by_slug(session, "run-1")["id"]  # doctest: +SKIP
        '0f8e2c1a-...'
    """
    query = load_request(ExperimentListQuery(), {"slug": slug, "limit": 1})
    found: list[dict[str, Any]] = []
    for pause in (0.0, *_LOOKUP_PAUSES):
        time.sleep(pause)
        data = session.call(operations.LIST_EXPERIMENTS, query=query, attempts=attempts)
        found = data["experiments"]
        if found:
            return found[0]
    raise MetricsApiRequestError(
        f"Slug {slug!r} is taken, but no experiment with it is visible to this key.",
        status_code=404,
        error_code="not_found",
    )


def apply_control(session: Session, record: ControlRecord, target: str | None) -> dict[str, Any]:
    """Send ``record`` once; ``target`` is the real id of its experiment (``None`` for a
    creation). Returns the experiment's wire form; raises the request's error.

    Example:
        >>> apply_control(session, ControlRecord.status(exp.id, "done", None, timestamp_ms=1),
        ...               exp.id)["status"]  # doctest: +SKIP
        'done'
    """
    if record.kind == "create":
        try:
            data = session.call(
                operations.CREATE_EXPERIMENT,
                body=record.body,
                idempotency_key=record.key,
                attempts=1,
            )
        except MetricsApiRequestError as error:
            slug = record.slug
            if not (record.exist_ok and slug is not None and slug_taken(error)):
                raise
            return find_by_slug(session, slug, attempts=1)
        experiment: dict[str, Any] = data["experiment"]
        return experiment
    if target is None:  # pragma: no cover - the callers always give it
        raise ValueError("a status change or an annotation needs its experiment's id")
    route = (
        operations.UPDATE_EXPERIMENT_STATUS
        if record.kind == "status"
        else operations.CREATE_ANNOTATION
    )
    data = session.call(route, target, body=record.body, idempotency_key=record.key, attempts=1)
    answered: dict[str, Any] = data["experiment"]
    return answered
