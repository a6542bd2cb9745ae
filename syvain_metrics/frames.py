"""The optional extras, imported lazily: pandas frames and matplotlib plots of metric rows,
and tqdm progress bars.

Example:
    >>> df = exp.metrics("loss").to_pandas()          # doctest: +SKIP
    >>> df.groupby("split")["value"].min()            # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from syvain_metrics.errors import MetricsApiError

if TYPE_CHECKING:
    from syvain_metrics.resources.row_columns import RowColumns

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


def progress_bar(total: int | None, description: str, *, unit: str = "metric") -> Any:
    """A ``tqdm.auto`` progress bar (a widget in a notebook, text in a terminal; needs the
    ``progress`` extra); ``total=None`` when the count is not known in advance.

    Example:
        >>> bar = progress_bar(2_000, "ingest run-1")  # doctest: +SKIP
        >>> bar.update(1_000); bar.close()             # doctest: +SKIP
    """
    _require("tqdm", "progress")
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit)


def rows_to_frame(table: RowColumns, *, expand_metadata: bool = True) -> Any:
    """One row per event: typed columns, timestamps as UTC datetimes, ``step`` as nullable
    Int64; built from the columns of ``table`` (each distinct metadata text parsed once).

    With ``expand_metadata`` each metadata key also gets its own column (when it does not
    clash with a fixed column).
    """
    pd = _require("pandas", "pandas")
    parsed: dict[str, dict[str, Any]] = {}

    def parse(text: str | None) -> dict[str, Any]:
        text = text or "{}"
        found = parsed.get(text)
        if found is None:
            found = parsed[text] = json.loads(text)
        return found

    metadata = list(map(parse, table.column("event_metadata_json")))
    frame = pd.DataFrame(
        {
            "event_id": table.column("event_id"),
            "experiment_id": table.column("experiment_id"),
            "experiment_slug": table.column("experiment_slug"),
            "name": table.column("metric_name"),
            "value": pd.array(table.column("metric_value"), dtype="float64"),
            "step": pd.Series(table.column("step"), dtype="float64").astype("Int64").array,
            # Copies: the parsed dicts are shared between rows with the same metadata text.
            "metadata": [dict(item) for item in metadata],
            "client_timestamp": pd.to_datetime(
                table.column("client_timestamp_ms"), unit="ms", utc=True
            ),
            "server_timestamp": pd.to_datetime(
                table.column("server_timestamp_ms"), unit="ms", utc=True
            ),
        },
        columns=list(FRAME_COLUMNS),
    )
    if expand_metadata:
        keys = sorted({key for item in parsed.values() for key in item} - set(FRAME_COLUMNS))
        for key in keys:
            frame[key] = [item.get(key) for item in metadata]
    return frame


def plot_rows(table: RowColumns, *, x: str = "step", ax: Any = None) -> Any:
    """Draw one line per (experiment, metric, metadata) series; returns the matplotlib axes."""
    _require("matplotlib", "plot")
    import matplotlib.pyplot as plt

    if x not in ("step", "client_timestamp"):
        raise MetricsApiError("x must be 'step' or 'client_timestamp'.")
    axes = ax if ax is not None else plt.subplots()[1]
    groups: dict[tuple[str, str, str], tuple[list[Any], list[float]]] = {}
    xs_column = table.column("step" if x == "step" else "client_timestamp_ms")
    for slug, name, meta, x_value, y_value in zip(
        table.column("experiment_slug"),
        table.column("metric_name"),
        table.column("event_metadata_json"),
        xs_column,
        table.column("metric_value"),
        strict=True,
    ):
        xs, ys = groups.setdefault((slug, name, meta or "{}"), ([], []))
        xs.append(x_value)
        ys.append(y_value)
    for (slug, name, meta), (xs, ys) in groups.items():
        label = f"{slug} {name}" + ("" if meta == "{}" else f" {meta}")
        axes.plot(xs, ys, label=label)
    axes.set_xlabel(x)
    axes.legend()
    return axes
