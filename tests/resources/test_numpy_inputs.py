"""numpy scalars are accepted wherever numbers are: run and event metadata (nested too),
annotations, ``ingest()`` records, ``Experiment.list(metadata=...)`` filters, steps, limits,
timestamps and the bounds of reads. A ``float32`` is stored as the decimal it prints as;
NaN or inf in metadata is a clear validation error and nothing is written. Against the real
local server."""

from __future__ import annotations

import pytest

import syvain_metrics as sm
from syvain_metrics.resources.experiment.values import plain

np = pytest.importorskip("numpy")

T0 = 1_700_000_000_000


def test_run_metadata_takes_numpy_scalars_nested_too(metrics_session: sm.Session) -> None:
    exp = sm.Experiment.create(
        "np-meta",
        metadata={
            "bs": np.int64(32),
            "lr": np.float32(0.1),
            "ok": np.bool_(True),
            "model": {"widths": [np.int32(64), np.uint8(8)], "dropout": np.float64(0.25)},
            "scale": np.array(2.5),  # a 0-d array is a scalar
        },
        capture_environment=False,
    )
    expected = {
        "bs": 32,
        "lr": 0.1,
        "ok": True,
        "model": {"widths": [64, 8], "dropout": 0.25},
        "scale": 2.5,
    }
    stored = sm.Experiment.get(exp.id).metadata
    assert stored == expected
    assert type(stored["bs"]) is int
    assert type(stored["ok"]) is bool
    found = sm.Experiment.list(metadata={"bs": np.int64(32), "lr": np.float32(0.1)})
    assert [run.slug for run in found] == ["np-meta"]
    assert sm.Experiment.list(metadata={"bs": np.int64(64)}) == []
    assert len(sm.Experiment.list(limit=np.int64(1), from_ms=np.int64(0))) == 1


@pytest.mark.parametrize("bad", [np.float32("nan"), np.float64("inf"), np.float16("-inf")])
def test_non_finite_metadata_is_a_clear_error_and_nothing_is_created(
    metrics_session: sm.Session, bad: object
) -> None:
    with pytest.raises(sm.MetricsValidationError, match="finite"):
        sm.Experiment.create("np-bad", metadata={"lr": {"x": bad}})
    exp = sm.Experiment.create("np-ok")
    with pytest.raises(sm.MetricsValidationError, match="finite"):
        exp.log("loss", 1.0, step=0, metadata={"x": bad})
    with pytest.raises(sm.MetricsValidationError, match="finite"):
        exp.annotate("note", metadata={"x": bad})
    assert [run.slug for run in sm.Experiment.list()] == ["np-ok"]
    assert exp.pending_logs == 0
    assert exp.annotations() == []


def test_an_array_of_several_values_stays_refused(metrics_session: sm.Session) -> None:
    with pytest.raises(sm.MetricsValidationError, match="JSON"):
        sm.Experiment.create("np-array", metadata={"x": np.array([1, 2])})


def test_log_annotate_and_reads_take_numpy_steps_metadata_and_bounds(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("np-log")
    exp.log(
        "loss",
        np.float32(0.5),
        step=np.int64(3),
        metadata={"split": "train", "fold": np.int64(1)},
        timestamp_ms=np.int64(T0),
    )
    exp.log({"loss": 0.25}, step=np.int64(4), metadata={"fold": np.int64(1)}, timestamp_ms=T0)
    note = exp.annotate("checkpoint", metadata={"step": np.int64(4), "best": np.bool_(True)})
    assert note.metadata == {"step": 4, "best": True}
    exp.flush()

    rows = exp.metrics(
        "loss",
        metadata={"fold": np.int64(1)},
        from_step=np.int64(0),
        to_step=np.int64(10),
        from_time=np.int64(T0 - 1),
        to_time=np.int64(T0 + 1),
        limit=np.int64(10),
    )
    assert rows.steps == [3, 4]
    assert rows.values == [0.5, 0.25]
    assert [r.metadata["fold"] for r in rows] == [1, 1]
    assert exp.metrics("loss", step=np.int64(4)).values == [0.25]
    assert exp.annotations()[0].metadata == {"step": 4, "best": True}


def test_ingest_takes_numpy_fields_and_stores_a_list_sent_again_once(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("np-ingest")
    records = [
        {
            "name": "loss",
            "value": np.float32(1 / (s + 1)),
            "step": np.int64(s),
            "metadata": {"fold": np.int64(0)},
            "timestamp_ms": np.int64(T0 + s),
        }
        for s in range(4)
    ]
    assert exp.ingest(records, sync=True).count == 4
    assert exp.ingest(records, sync=True).count == 4  # the same ids: stored once
    rows = exp.metrics("loss")
    assert rows.steps == [0, 1, 2, 3]
    assert rows.values[0] == 1.0
    assert records[0]["step"] == np.int64(0)  # the caller's records are left as they were
    assert type(records[0]["step"]) is np.int64


def test_plain_returns_what_needs_no_conversion_itself() -> None:
    plain_input = {"lr": 0.1, "layers": [64, 64], "name": "mlp"}
    assert plain(plain_input) is plain_input
    assert plain([np.int64(1), 2]) == [1, 2]
    assert plain((np.float64(0.5),)) == (0.5,)
