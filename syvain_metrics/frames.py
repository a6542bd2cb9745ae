"""The optional extras, imported lazily: pandas frames and matplotlib plots of metric rows,
and tqdm progress bars.

Example:
    >>> df = exp.metrics("loss").to_pandas()          # doctest: +SKIP
    >>> df.groupby("split")["value"].min()            # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from syvain_metrics.errors import MetricsApiError

FRAME_COLUMNS = (
    "event_id",
    "experiment_id",
    "experiment_slug",
    "name",
    "value",
    "step",
    "metadata",
    "client_timestamp",
    "server_timestamp",
)


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise MetricsApiError(
            f"This needs {module}: pip install 'syvain-metrics[{extra}]'"
        ) from None


def progress_bar(total: int, description: str) -> Any:
    """A tqdm progress bar counting metrics (needs the ``progress`` extra).

    Example:
        >>> bar = progress_bar(2_000, "ingest run-1")  # doctest: +SKIP
        >>> bar.update(1_000); bar.close()             # doctest: +SKIP
    """
    tqdm = _require("tqdm", "progress")
    return tqdm.tqdm(total=total, desc=description, unit="metric")


def rows_to_frame(rows: Sequence[dict[str, Any]], *, expand_metadata: bool = True) -> Any:
    """One row per event: typed columns, timestamps as UTC datetimes, ``step`` as nullable Int64.

    With ``expand_metadata`` each metadata key also gets its own column (when it does not
    clash with a fixed column).
    """
    pd = _require("pandas", "pandas")
    metadata = [json.loads(r.get("event_metadata_json") or "{}") for r in rows]
    frame = pd.DataFrame(
        {
            "event_id": [r["event_id"] for r in rows],
            "experiment_id": [r["experiment_id"] for r in rows],
            "experiment_slug": [r["experiment_slug"] for r in rows],
            "name": [r["metric_name"] for r in rows],
            "value": pd.array([r["metric_value"] for r in rows], dtype="float64"),
            "step": pd.array(
                [None if r["step"] is None else int(r["step"]) for r in rows], dtype="Int64"
            ),
            "metadata": metadata,
            "client_timestamp": pd.to_datetime(
                [r["client_timestamp_ms"] for r in rows], unit="ms", utc=True
            ),
            "server_timestamp": pd.to_datetime(
                [r["server_timestamp_ms"] for r in rows], unit="ms", utc=True
            ),
        },
        columns=list(FRAME_COLUMNS),
    )
    if expand_metadata:
        keys = sorted({key for item in metadata for key in item} - set(FRAME_COLUMNS))
        for key in keys:
            frame[key] = [item.get(key) for item in metadata]
    return frame


def plot_rows(rows: Sequence[dict[str, Any]], *, x: str = "step", ax: Any = None) -> Any:
    """Draw one line per (experiment, metric, metadata) series; returns the matplotlib axes."""
    _require("matplotlib", "plot")
    import matplotlib.pyplot as plt

    if x not in ("step", "client_timestamp"):
        raise MetricsApiError("x must be 'step' or 'client_timestamp'.")
    axes = ax if ax is not None else plt.subplots()[1]
    groups: dict[tuple[str, str, str], tuple[list[Any], list[float]]] = {}
    for row in rows:
        xs, ys = groups.setdefault(
            (row["experiment_slug"], row["metric_name"], row.get("event_metadata_json") or "{}"),
            ([], []),
        )
        xs.append(row["step"] if x == "step" else row["client_timestamp_ms"])
        ys.append(row["metric_value"])
    for (slug, name, meta), (xs, ys) in groups.items():
        label = f"{slug} {name}" + ("" if meta == "{}" else f" {meta}")
        axes.plot(xs, ys, label=label)
    axes.set_xlabel(x)
    axes.legend()
    return axes
