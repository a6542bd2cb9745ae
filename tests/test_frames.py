"""The optional extras: DataFrames, plots and progress bars."""

from __future__ import annotations

import builtins
from typing import Any

import matplotlib
import pandas as pd
import pytest
import responses

import syvain_metrics as sm
from tests.conftest import API, envelope, experiment_wire, key_wire, row_wire

matplotlib.use("Agg")

T0 = 1_795_716_954_000


def some_rows() -> list[dict[str, Any]]:
    return [
        row_wire("e1", 0, 1.0, T0, metadata='{"split":"train"}'),
        row_wire("e2", 1, 0.5, T0 + 10, metadata='{"split":"train","lr":0.1}'),
        row_wire("e3", None, 0.7, T0 + 20, metadata='{"split":"valid"}'),
    ]


def test_to_pandas_gives_typed_columns_and_one_column_per_metadata_key() -> None:
    frame = sm.MetricRows(some_rows()).to_pandas()
    assert list(frame["event_id"]) == ["e1", "e2", "e3"]
    assert list(frame["value"]) == [1.0, 0.5, 0.7]
    assert str(frame["step"].dtype) == "Int64"
    assert frame["step"].tolist()[:2] == [0, 1]
    assert frame["step"].isna().tolist() == [False, False, True]
    assert frame["client_timestamp"].iloc[0] == pd.Timestamp(T0, unit="ms", tz="UTC")
    assert frame["split"].tolist() == ["train", "train", "valid"]
    assert frame["lr"].tolist()[1] == 0.1
    assert pd.isna(frame["lr"].tolist()[0])
    assert frame["metadata"].tolist()[1] == {"split": "train", "lr": 0.1}
    assert "split" not in sm.MetricRows(some_rows()).to_pandas(expand_metadata=False)


def test_plot_draws_one_line_per_series() -> None:
    axes = sm.MetricRows(some_rows()).plot()
    labels = sorted(line.get_label() for line in axes.get_lines())
    assert labels == [
        'run-1 loss {"split":"train","lr":0.1}',
        'run-1 loss {"split":"train"}',
        'run-1 loss {"split":"valid"}',
    ]
    with pytest.raises(sm.MetricsApiError, match="x must be"):
        sm.MetricRows(some_rows()).plot(x="value")


def test_ingest_progress_bar_counts_every_metric(
    session: sm.Session, mocked: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    mocked.post(
        f"{API}/experiments/exp-1/ingestion-keys",
        json=envelope({"key": key_wire(), "token": "tok"}),
    )
    mocked.post(f"{API}/experiments/exp-1/ingest", json=envelope({"ok": True, "mode": "sync"}))
    exp = sm.Experiment(experiment_wire(), session=session)
    points = [{"name": "loss", "value": float(i), "step": i} for i in range(2500)]
    assert exp.ingest(points, progress=True).count == 2500
    assert "2500/2500" in capsys.readouterr().err


def test_a_missing_extra_names_what_to_install(
    session: sm.Session, mocked: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_optional_extras(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] in ("tqdm", "pandas"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optional_extras)
    exp = sm.Experiment(experiment_wire(), session=session)
    with pytest.raises(sm.MetricsApiError, match=r"syvain-metrics\[progress\]"):
        exp.ingest([{"name": "loss", "value": 1.0, "step": 0}], progress=True)
    assert len(mocked.calls) == 0  # nothing was sent
    with pytest.raises(sm.MetricsApiError, match=r"syvain-metrics\[pandas\]"):
        sm.MetricRows(some_rows()).to_pandas()
