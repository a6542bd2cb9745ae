"""Annotations of one experiment: ``annotate()`` and ``annotations()``.

Example:
    >>> exp.annotate("Checkpoint saved").text  # doctest: +SKIP
    'Checkpoint saved'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from syvain_metrics.contract import operations
from syvain_metrics.contract.limits import ANNOTATIONS_LIMIT
from syvain_metrics.contract.schemas.annotation import (
    AnnotationCreateRequest,
    AnnotationListQuery,
    AnnotationListReply,
)
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.resources.annotation import Annotation, AnnotationList
from syvain_metrics.resources.experiment.deferred import DeferredCalls
from syvain_metrics.resources.experiment.values import plain
from syvain_metrics.resources.lists import read_created


class Annotating(DeferredCalls):
    """The annotating operations of an experiment."""

    def annotate(self, text: str, *, metadata: Mapping[str, Any] | None = None) -> Annotation:
        """Pin a note to the experiment (sent with its ingestion token). For a run not created
        yet, in offline mode, or while earlier calls about the run wait in the spool, the note
        waits there too (behind the events logged before it); the annotation returned then
        has a placeholder id.

        Example:
            >>> exp.annotate("Checkpoint saved", metadata={"path": "ckpt/99.pt"})  # doctest: +SKIP
            <Annotation 'Checkpoint saved' id=...>
        """
        body = load_request(
            AnnotationCreateRequest(),
            {"annotation": text, "metadata": {} if metadata is None else plain(metadata)},
        )
        if self._defers_calls():
            return self._annotation_later(body)
        bound = self._bind()
        data = bound.call(operations.CREATE_ANNOTATION, self.id, body=body)
        self._update(data["experiment"])
        return Annotation._from_wire(data["annotation"], bound)

    def annotations(
        self,
        from_ms: int | dt.datetime | None = None,
        to_ms: int | dt.datetime | None = None,
        limit: int | None = None,
    ) -> AnnotationList:
        """Annotations, oldest first, optionally bounded by creation time. Without ``limit``,
        every one (paged by creation time); with it, at most that many. Annotations this
        session still holds for the run (the first NaN of a metric, a resume) are sent first.

        Example:
            >>> [a.text for a in exp.annotations()]  # doctest: +SKIP
            ['Checkpoint saved']
        """
        query = load_request(AnnotationListQuery(), {"from": from_ms, "to": to_ms, "limit": limit})
        self._settle_logs()  # what log() and run() recorded off the loop's thread comes first
        bound = self._bind()
        items = read_created(
            bound,
            operations.LIST_ANNOTATIONS,
            (self.id,),
            AnnotationListReply(),
            "annotations",
            query,
            newest_first=False,
            largest_page=ANNOTATIONS_LIMIT[1],
        )
        return AnnotationList(Annotation._from_wire(item, bound) for item in items)
