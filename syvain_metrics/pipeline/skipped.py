"""What ``log()`` did not send: non-finite values (NaN, inf, -inf), counted per experiment
and metric name, and which names were already warned about.

The wire carries finite numbers only, and a diverging run must not die of a NaN: such a
value is counted here instead of sent. ``flush()``, the end of ``run()`` and ``close()``
report the counts (in :class:`~syvain_metrics.FlushError` or in one summary warning).

The lock is an ``RLock`` held for a few dictionary operations: a signal handler that logs a
NaN on the same thread re-enters it instead of deadlocking, and nothing inside can raise.

Example:
    >>> skipped = SkippedValues()
    >>> skipped.count_non_finite("exp-1", "loss", label="run-1")
    True
    >>> skipped.count_non_finite("exp-1", "loss", label="run-1")
    False
    >>> skipped.non_finite("exp-1")
    {'loss': 2}
    >>> print(skipped.take_summary(None))
    2 non-finite values of loss were not sent (run 'run-1')
    >>> print(skipped.take_summary(None))
    None
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class SkippedValues:
    """Per-experiment counts of the non-finite values ``log()`` skipped, and the names
    already warned about (one warning per name per experiment)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._counts: dict[str, dict[str, int]] = {}
        self._summarized: dict[str, dict[str, int]] = {}
        self._labels: dict[str, str] = {}
        self._warned: dict[str, set[str]] = {}

    def count_non_finite(self, experiment_id: str, name: str, *, label: str) -> bool:
        """Count one non-finite value of ``name``; ``True`` the first time for this
        experiment and name (the caller then warns and annotates the run). ``label`` names
        the experiment in summaries.

        Example:
            >>> SkippedValues().count_non_finite("exp-1", "loss", label="run-1")
            True
        """
        with self._lock:
            counts = self._counts.setdefault(experiment_id, {})
            first = name not in counts
            counts[name] = counts.get(name, 0) + 1
            self._labels[experiment_id] = label
            return first

    def first_warning(self, experiment_id: str, name: str) -> bool:
        """Whether ``name`` of this experiment was not warned about yet (and now is): one
        warning per name per experiment, e.g. for a value that is not a number.

        Example:
            >>> skipped = SkippedValues()
            >>> skipped.first_warning("exp-1", "tag"), skipped.first_warning("exp-1", "tag")
            (True, False)
        """
        with self._lock:
            warned = self._warned.setdefault(experiment_id, set())
            if name in warned:
                return False
            warned.add(name)
            return True

    def non_finite(self, experiment_id: str) -> dict[str, int]:
        """The non-finite values skipped so far for this experiment, by metric name.

        Example:
            >>> SkippedValues().non_finite("exp-1")
            {}
        """
        with self._lock:
            return dict(self._counts.get(experiment_id, {}))

    def totals(self, experiment_ids: Iterable[str] | None) -> dict[str, int]:
        """The non-finite values skipped for these experiments (``None``: all), by metric
        name, summed over the experiments.

        Example:
            >>> SkippedValues().totals(None)
            {}
        """
        with self._lock:
            chosen = self._counts if experiment_ids is None else experiment_ids
            out: dict[str, int] = {}
            for experiment_id in chosen:
                for name, count in self._counts.get(experiment_id, {}).items():
                    out[name] = out.get(name, 0) + count
            return out

    def take_summary(self, experiment_ids: Iterable[str] | None) -> str | None:
        """One line about the non-finite values skipped since the last summary for these
        experiments (``None``: all), or ``None`` when there are none; each value is
        summarized once.

        Example:
            >>> SkippedValues().take_summary(["exp-1"]) is None
            True
        """
        parts: list[str] = []
        with self._lock:
            chosen = list(self._counts if experiment_ids is None else experiment_ids)
            for experiment_id in chosen:
                counts = self._counts.get(experiment_id, {})
                told = self._summarized.setdefault(experiment_id, {})
                for name, count in counts.items():
                    new = count - told.get(name, 0)
                    if new > 0:
                        told[name] = count
                        label = self._labels.get(experiment_id, experiment_id)
                        parts.append(f"{describe_count(new, name)} (run {label!r})")
        return "; ".join(parts) if parts else None


def describe_count(count: int, name: str) -> str:
    """``"1 non-finite value of loss was not sent"``, plural when it must be.

    Example:
        >>> describe_count(3, "acc")
        '3 non-finite values of acc were not sent'
    """
    if count == 1:
        return f"1 non-finite value of {name} was not sent"
    return f"{count:,} non-finite values of {name} were not sent"
