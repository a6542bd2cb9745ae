"""Experiments: the :class:`Experiment` resource, assembled from one module per concern
(``annotations``, ``catalog``, ``ingestion_keys``, ``reading``, ``writing``, ``resuming``,
``termination``)."""

from syvain_metrics.resources.experiment.resource import UNSET, Experiment

__all__ = ["UNSET", "Experiment"]
