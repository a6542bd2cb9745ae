"""Annotations: short notes pinned to an experiment's timeline.

Example:
    >>> note = exp.annotate("Checkpoint saved", metadata={"path": "ckpt/99.pt"})  # doctest: +SKIP
    >>> note.text                                                                  # doctest: +SKIP
    'Checkpoint saved'
"""

from __future__ import annotations

from typing import Any

from syvain_metrics.resources.base import Resource, ms_time, wire
from syvain_metrics.resources.lists import ResourceList


class Annotation(Resource):
    """One annotation. ``text`` is the wire ``annotation`` field.

    Example:
        >>> Annotation({"id": "a1", "experiment_id": "e1", "annotation": "hi",
        ...             "metadata": {}, "created_at_ms": 0}, session=None).text
        'hi'
    """

    _repr_fields = ("annotation",)
    _changes_hint = "annotations cannot be changed; add another with exp.annotate(text)."

    id = wire[str]()
    experiment_id = wire[str]()
    text = wire[str]("annotation")
    metadata = wire[dict[str, Any]]()
    created_at_ms = wire[int]()
    created_at: ms_time = ms_time("created_at_ms")

    def _frame_row(self) -> dict[str, Any]:
        row = super()._frame_row()
        return {"text": row.pop("annotation", None), **row}

    def _html_title(self) -> str:
        return "Annotation"

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:39] + "…"
        return f"<Annotation {text!r} id={self.id}>"


class AnnotationList(ResourceList[Annotation]):
    """Annotations, oldest first, as ``exp.annotations()`` returns them.

    Example:
        >>> exp.annotations().to_pandas()  # doctest: +SKIP
    """

    _noun = "annotations"
    _columns = ("created_at", "text", "experiment_id", "id")
