"""A metric to send, as an object rather than a dict.

Example:
    >>> MetricPoint("loss", 0.5, step=3, metadata={"split": "train"}).to_dict()
    {'name': 'loss', 'value': 0.5, 'step': 3, 'metadata': {'split': 'train'}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricPoint:
    """One metric for :meth:`Experiment.ingest`. Without ``client_event_id`` the SDK derives
    a stable one from the experiment, name, step and metadata.

    Example:
        >>> exp.ingest([MetricPoint("loss", 0.5, step=1)])  # doctest: +SKIP
    """

    name: str
    value: float
    step: int | None = None
    metadata: Mapping[str, Any] | None = None
    timestamp_ms: int | None = None
    client_event_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The metric as an ingest dict (optional fields only when set; ``step`` always).

        Example:
            >>> MetricPoint("acc", 0.9).to_dict()
            {'name': 'acc', 'value': 0.9, 'step': None}
        """
        out: dict[str, Any] = {"name": self.name, "value": self.value, "step": self.step}
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        if self.timestamp_ms is not None:
            out["timestamp_ms"] = self.timestamp_ms
        if self.client_event_id is not None:
            out["client_event_id"] = self.client_event_id
        return out
