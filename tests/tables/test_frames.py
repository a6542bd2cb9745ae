"""The optional extras: DataFrames, plots and progress bars."""

from __future__ import annotations

import builtins
import json
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


def test_frames_hold_every_time_the_contract_allows() -> None:
    # Past 2262 a nanosecond datetime overflows; the contract allows years up to 9999.
    last = 253_402_300_799_999  # 9999-12-31 23:59:59.999 UTC
    rows = sm.MetricRows([row_wire("e1", 0, 1.0, last), row_wire("e2", 1, 2.0, 0)])
    frame = rows.to_pandas()
    assert [t.year for t in frame["client_timestamp"]] == [9999, 1970]
    assert frame["client_timestamp"].iloc[0] == pd.Timestamp("9999-12-31 23:59:59.999", tz="UTC")
    assert [t.year for t in rows.to_pandas(wide=True, index="time").index] == [1970, 9999]


def test_plot_draws_one_line_per_series() -> None:
    axes = sm.MetricRows(some_rows()).plot()
    labels = sorted(line.get_label() for line in axes.get_lines())
    # Labels name what differs between the lines; the event without a step has no place
    # on a step axis.
    assert labels == ["split=train", "split=train, lr=0.1"]
    with pytest.raises(sm.MetricsValidationError, match="Must be 'step', 'time'"):
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


# -- rows held as columns read back exactly as sent ---------------------------------------------


def test_rows_held_as_columns_read_back_exactly_as_the_service_sent_them() -> None:
    from syvain_metrics.tables.columns import RowColumns

    plain = [
        row_wire(f"e{i}", None if i % 4 == 0 else i, i / 7, 1_700_000_000_000 + i)
        for i in range(50)
    ]
    odd = [
        {**row_wire("i1", 3, 1.0, 5), "metric_value": 1, "step": 3},  # ints where floats were
        {**row_wire("i2", 4, 2.0, 6), "extra": {"new": True}},  # a field added by the service
        {"event_id": "i3", "metric_name": "loss", "step": None, "metric_value": 0.5},  # sparse
        {**row_wire("i4", 5, 3.0, 7), "client_timestamp_ms": 2**70},  # beyond a machine int
    ]
    table = RowColumns()
    table.extend(plain)
    table.extend(odd)
    table.extend(plain[:3])
    sent = [*plain, *odd, *plain[:3]]
    assert list(table.rows()) == sent
    assert [type(r["metric_value"]) for r in table.rows()][50:52] == [int, float]
    rows = sm.MetricRows(table)
    assert rows.to_dicts() == sent
    assert rows.steps == [None if r["step"] is None else int(r["step"]) for r in sent]
    assert rows.column("extra") == [None] * 51 + [{"new": True}] + [None] * 5
    assert rows[51].extra == {"new": True}
    assert rows[-1].to_dict() == plain[2]
    assert rows[50:52].to_dicts() == odd[:2]
    with pytest.raises(IndexError):
        rows[len(sent)]


def test_repeated_texts_are_shared_between_rows() -> None:
    from syvain_metrics.tables.columns import RowColumns

    pages = [json.loads(json.dumps([row_wire(f"e{i}", i, 1.0, i) for i in range(20)]))] * 2
    table = RowColumns()
    for page in pages:
        table.extend(json.loads(json.dumps(page)))  # fresh string objects each time
    slugs = table.column("experiment_slug")
    assert len({id(slug) for slug in slugs}) == 1
    assert len({id(e) for e in table.column("event_id")}) == 40
