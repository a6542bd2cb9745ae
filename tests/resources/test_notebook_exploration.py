"""Notebook exploration against the local server: the runs table, choosing runs by
hyperparameter, summaries (and what they cost in requests), wide and long frames, plots,
displays, re-runnable creates, read-only fields and the embedded server."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest
from matplotlib.axes import Axes

import syvain_metrics as sm
from syvain_metrics.tables.plots import ema
from syvain_metrics.testing import LocalServer

pytest.importorskip("waitress", reason="the local server needs the 'local' extra")
matplotlib.use("Agg")

SWEEP = [("sgd", 0.1), ("sgd", 0.01), ("adam", 0.01), ("adam", 0.001), ("sgd", 0.001)]


def loss(run: int, step: int) -> float:
    return 2.0 / (1 + step * (run + 1) / 10)


@pytest.fixture
def sweep(metrics_session: sm.Session) -> tuple[sm.Folder, sm.ExperimentList]:
    """Five finished runs in a folder (plus one at the root), with train/valid loss and
    accuracy, and an annotation at step 20 on the first."""
    folder = sm.Folder.create("sweep")
    for index, (optimizer, lr) in enumerate(SWEEP):
        exp = sm.Experiment.create(
            f"run-{index}",
            metadata={"optimizer": optimizer, "lr": lr, "model": {"width": 64 * (index + 1)}},
            folder=folder,
        )
        exp.start()
        exp.ingest(
            [
                {"name": "loss", "value": loss(index, s), "step": s, "metadata": {"split": "train"}}
                for s in range(40)
            ]
            + [
                {
                    "name": "loss",
                    "value": loss(index, s) + 0.1,
                    "step": s,
                    "metadata": {"split": "valid"},
                }
                for s in range(0, 40, 10)
            ]
            + [{"name": "acc", "value": s / 40 * (index + 1) / 5, "step": s} for s in range(40)],
            sync=True,
        )
        exp.finish()
    sm.Experiment.create("outside", metadata={"optimizer": "sgd"})
    runs = sm.Experiment.list(folder=folder)
    runs[-1].annotate("lr drop", metadata={"step": 20})
    return folder, runs


def utc_times(dtype: object) -> bool:
    return isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"


def requests_to(caplog: pytest.LogCaptureFixture, pattern: str) -> int:
    return sum(1 for r in caplog.records if re.match(pattern, r.getMessage()))


# -- the runs table ----------------------------------------------------------------


def test_list_returns_a_runs_table_with_readable_columns(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    _, runs = sweep
    assert isinstance(runs, sm.ExperimentList)
    assert [r.slug for r in runs] == [f"run-{i}" for i in range(4, -1, -1)]  # newest first
    frame = runs.to_pandas()
    assert list(frame.columns[:9]) == [
        "slug", "status", "folder", "created", "started", "done", "duration", "description", "error",
    ]  # fmt: skip
    assert set(frame["status"]) == {"done"}
    assert set(frame["folder"]) == {"sweep"}
    assert utc_times(frame["created"].dtype)
    assert frame["duration"].dtype.kind == "m"
    assert (frame["duration"] >= pd.Timedelta(0)).all()
    row = frame.set_index("slug").loc["run-3"]
    assert (row["optimizer"], row["lr"], row["model.width"]) == ("adam", 0.001, 256)
    assert frame["id"].tolist() == [r.id for r in runs]
    assert sm.ExperimentList().to_pandas().columns[0] == "slug"  # an empty table has columns


def test_a_metadata_key_that_clashes_with_a_column_is_prefixed(metrics_session: sm.Session) -> None:
    sm.Experiment.create("clash", metadata={"status": "tuned", "id": 7})
    row = sm.Experiment.list().to_pandas().iloc[0]
    assert row["status"] == "created"
    assert row["metadata.status"] == "tuned"
    assert row["metadata.id"] == 7


def test_list_filters_by_folder_metadata_and_predicate_in_the_client(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    folder, _ = sweep
    assert len(sm.Experiment.list()) == 6
    assert [r.slug for r in sm.Experiment.list(folder=None)] == ["outside"]
    assert len(sm.Experiment.list(folder=folder.id)) == 5
    sgd = sm.Experiment.list(folder=folder, metadata={"optimizer": "sgd"})
    assert [r.slug for r in sgd] == ["run-4", "run-1", "run-0"]
    assert [r.slug for r in sm.Experiment.list(metadata={"optimizer": "sgd"})] == [
        "outside", "run-4", "run-1", "run-0",
    ]  # fmt: skip
    assert [r.slug for r in sm.Experiment.list(metadata={"model.width": 128})] == ["run-1"]
    small = sm.Experiment.list(metadata={"lr": lambda lr: lr < 0.01})
    assert [r.slug for r in small] == ["run-4", "run-3"]
    picked = sm.Experiment.list(where=lambda e: e.slug.endswith(("0", "2")), limit=1)
    assert [r.slug for r in picked] == ["run-2"]  # the limit cuts what passed the filter
    assert [r.slug for r in sgd.where(predicate=lambda e: e.metadata["lr"] > 0.005)] == [
        "run-1", "run-0",
    ]  # fmt: skip
    assert sgd.where({"optimizer": "adam"}) == []


def test_a_bad_selection_is_refused_before_any_request(
    metrics_session: sm.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    with pytest.raises(sm.MetricsValidationError, match="metadata"):
        sm.Experiment.list(metadata=["optimizer"])  # type: ignore[arg-type]
    with pytest.raises(sm.MetricsValidationError, match="where"):
        sm.Experiment.list(where="slug == 'x'")  # type: ignore[arg-type]
    assert requests_to(caplog, r"GET ") == 0


def test_folder_experiments_is_a_runs_table(sweep: tuple[sm.Folder, sm.ExperimentList]) -> None:
    folder, runs = sweep
    contents = sm.Folder.get(folder.id).experiments
    assert isinstance(contents, sm.ExperimentList)
    assert contents == runs
    assert list(contents.to_pandas()["slug"]) == [r.slug for r in runs]
    assert isinstance(contents[:2], sm.ExperimentList)


# -- summaries ---------------------------------------------------------------------


def test_summary_has_one_row_per_run_and_the_right_values(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    _, runs = sweep
    table = runs.summary(["loss", "acc"], how=("last", "min", "max", "mean", "count", "last_step"))
    assert list(table.index) == [r.slug for r in runs]
    assert table.loc["run-2", "optimizer"] == "adam"
    assert table.loc["run-2", "status"] == "done"
    for index in range(5):
        row = table.loc[f"run-{index}"]
        train = [loss(index, s) for s in range(40)]
        valid = [loss(index, s) + 0.1 for s in range(0, 40, 10)]
        for split, values in (("train", train), ("valid", valid)):
            assert row[f"loss[split={split}]:count"] == len(values)
            assert row[f"loss[split={split}]:min"] == pytest.approx(min(values))
            assert row[f"loss[split={split}]:max"] == pytest.approx(max(values))
            assert row[f"loss[split={split}]:mean"] == pytest.approx(sum(values) / len(values))
        assert row["acc:last"] == pytest.approx(39 / 40 * (index + 1) / 5)
        assert row["acc:last_step"] == 39
    assert "loss:count" not in table.columns  # the splits are never mixed silently
    valid_only = runs.summary(
        "loss", how="last", metadata={"split": "valid"}, include_metadata=False
    )
    assert list(valid_only.columns) == ["loss[split=valid]:last"]
    assert valid_only.loc["run-0", "loss[split=valid]:last"] == pytest.approx(loss(0, 30) + 0.1)


def test_summary_reads_up_to_64_series_per_compare_read(
    sweep: tuple[sm.Folder, sm.ExperimentList], caplog: pytest.LogCaptureFixture
) -> None:
    _, runs = sweep
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    runs.summary(["loss", "acc"])
    # 10 series: one compare read, which fits one page: the page and the confirming one.
    assert requests_to(caplog, r"GET \S+/api/v1/metrics -> 200") == 2
    assert requests_to(caplog, r"(GET|POST) ") == 2
    caplog.clear()
    many = sm.ExperimentList([runs[0]] * 33)  # 66 series: two reads
    many.summary(["loss", "acc"], include_metadata=False)
    assert requests_to(caplog, r"GET \S+/api/v1/metrics -> 200") == 4


def test_experiment_summary_is_a_dict_and_a_missing_metric_is_none(
    sweep: tuple[sm.Folder, sm.ExperimentList], caplog: pytest.LogCaptureFixture
) -> None:
    _, runs = sweep
    run0 = runs[-1]
    got = run0.summary(["loss", "nope"], how=("min", "count"), metadata={"split": "train"})
    assert got == {
        "loss[split=train]:min": pytest.approx(loss(0, 39)),
        "loss[split=train]:count": 40,
        "nope:min": None,
        "nope:count": 0,
    }
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    with pytest.raises(sm.MetricsValidationError, match="how"):
        run0.summary("loss", how="median")
    with pytest.raises(sm.MetricsValidationError, match="names"):
        run0.summary([])
    assert requests_to(caplog, r"GET ") == 0


# -- frames ------------------------------------------------------------------------


def test_long_frames_keep_the_slug_and_the_experiment_metadata(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    _, runs = sweep
    run0 = runs[-1]
    plain = run0.metrics("acc").to_pandas()
    assert set(plain["experiment_slug"]) == {"run-0"}
    assert not any(c.startswith("experiment.") for c in plain.columns)
    frame = run0.metrics("acc", include_experiment_meta_as_of=True).to_pandas()
    assert set(frame["experiment.optimizer"]) == {"sgd"}
    assert set(frame["experiment.model.width"]) == {64}
    both = runs.compare("loss", metadata={"split": "valid"}).to_pandas()
    assert both.groupby("experiment_slug")["experiment.lr"].first().to_dict() == {
        f"run-{i}": lr for i, (_, lr) in enumerate(SWEEP)
    }


def test_wide_frames_have_one_column_per_series_indexed_by_step(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    _, runs = sweep
    run0 = runs[-1]
    wide = run0.metrics("loss").to_pandas(wide=True)
    assert list(wide.columns) == ["split=train", "split=valid"]
    assert wide.index.name == "step"
    assert list(wide.index) == list(range(40))
    assert wide.loc[10, "split=valid"] == pytest.approx(loss(0, 10) + 0.1)
    assert pd.isna(wide.loc[11, "split=valid"])
    across = runs.compare("loss", metadata={"split": "valid"}).to_pandas(wide=True)
    assert sorted(across.columns) == [f"run-{i}" for i in range(5)]
    assert list(across.index) == [0, 10, 20, 30]
    by_time = run0.metrics("acc").to_pandas(wide=True, index="time")
    assert utc_times(by_time.index.dtype)
    assert list(by_time.columns) == ["acc"]
    with pytest.raises(sm.MetricsValidationError, match="index"):
        run0.metrics("acc").to_pandas(wide=True, index="value")


def test_annotations_catalog_folders_and_keys_have_frames(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    _, runs = sweep
    run0 = runs[-1]
    notes = run0.annotations().to_pandas()
    assert notes[["text", "metadata.step"]].to_dict("records") == [
        {"text": "lr drop", "metadata.step": 20}
    ]
    assert utc_times(notes["created_at"].dtype)
    catalog = run0.catalog().to_pandas()
    assert catalog.to_dict("records") == [
        {"metric_name": "acc", "metadata_keys": []},
        {"metric_name": "loss", "metadata_keys": ["split"]},
    ]
    assert sm.Folder.list().to_pandas()[["path_name", "parent_id"]].to_dict("records") == [
        {"path_name": "sweep", "parent_id": None}
    ]
    keys = run0.ingestion_keys().to_pandas()
    assert list(keys["is_active"]) == [True]
    assert "token" not in keys.columns


# -- plots -------------------------------------------------------------------------


def test_plot_colours_runs_by_a_hyperparameter(sweep: tuple[sm.Folder, sm.ExperimentList]) -> None:
    _, runs = sweep
    axes = runs.plot("loss", metadata={"split": "valid"}, hue="optimizer", logy=True)
    assert isinstance(axes, Axes)
    lines = axes.get_lines()
    assert len(lines) == 5
    colour = {}
    for line in lines:
        xs = list(line.get_xdata())
        assert xs == [0, 10, 20, 30]
        colour.setdefault(str(line.get_color()), set()).add(tuple(line.get_ydata()))
    assert len(colour) == 2  # sgd and adam
    legend = axes.get_legend()
    assert legend is not None
    assert sorted(t.get_text() for t in legend.get_texts()) == [
        "optimizer=adam", "optimizer=sgd",
    ]  # fmt: skip
    assert axes.get_yscale() == "log"
    assert axes.get_title() == "loss"
    assert axes.get_xlabel() == "step"
    with pytest.raises(sm.MetricsValidationError, match="include_experiment_meta_as_of"):
        runs[0].metrics("loss").plot(hue="optimizer")


def test_plot_smooths_marks_annotations_and_draws_a_time_axis(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    _, runs = sweep
    run0 = runs[-1]
    rows = run0.metrics("acc")
    axes = rows.plot(smooth=0.5, title="accuracy", annotations=run0.annotations())
    raw, smoothed = axes.get_lines()[:2]
    assert list(raw.get_ydata()) == rows.values
    assert list(smoothed.get_ydata()) == ema(rows.values, 0.5)
    assert list(smoothed.get_ydata())[1] == pytest.approx(0.5 * rows.values[1])
    marker = [line for line in axes.get_lines() if list(line.get_xdata()) == [20, 20]]
    assert len(marker) == 1  # the annotation at step 20
    assert any(t.get_text() == "lr drop" for t in axes.texts)
    assert axes.get_title() == "accuracy"
    timed = rows.plot(x="wall", annotations=run0.annotations())
    assert timed.get_xlabel() == "time (UTC)"
    first = timed.get_lines()[0].get_xdata()[0]
    assert isinstance(first, dt.datetime)
    assert first.tzinfo is not None
    # A run of milliseconds: x="time" counts from its start (tests/tables/test_time_axes.py).
    assert rows.plot(x="time").get_xlabel().startswith("time since start (")
    with pytest.raises(sm.MetricsValidationError, match="smooth"):
        rows.plot(smooth=1.5)


# -- displays ----------------------------------------------------------------------


def test_every_object_and_list_has_a_readable_html_view(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    folder, runs = sweep
    run0 = runs[-1]
    page = run0._repr_html_()
    assert f"href='{run0.url}'" in page
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page)
    assert "_ms" not in page
    table = runs._repr_html_()
    assert "ExperimentList (5 experiments)" in table
    assert table.count("href=") == 5
    rows_html = run0.metrics("loss", metadata={"split": "valid"})._repr_html_()
    assert ">10</td>" in rows_html  # whole steps
    assert ">10.0</td>" not in rows_html
    assert "{&quot;split&quot;:&quot;valid&quot;}" in rows_html  # compact metadata
    shown: list[Any] = [
        folder,
        sm.Folder.list(),
        run0.annotations()[0],
        run0.annotations(),
        run0.catalog()[0],
        run0.catalog(),
        run0.catalog_values("loss"),
        run0.ingestion_keys()[0],
        run0.ingestion_keys(),
        run0.metrics("acc")[0],
        sm.whoami(),
    ]
    for thing in shown:
        text = thing._repr_html_()
        assert text.startswith("<b>")
        assert "_ms<" not in text
        assert len(repr(thing)) < 400


def test_lists_have_a_short_repr(sweep: tuple[sm.Folder, sm.ExperimentList]) -> None:
    _, runs = sweep
    text = repr(sm.ExperimentList(runs * 3))
    assert text.startswith("<ExperimentList 15: <Experiment run-4 done id=")
    assert text.endswith(", … 10 more>")
    assert repr(sm.ExperimentList()) == "<ExperimentList 0>"


# -- re-runnable cells ---------------------------------------------------------------


def test_create_with_exist_ok_returns_the_existing_experiment(metrics_session: sm.Session) -> None:
    first = sm.Experiment.create("rerun", metadata={"lr": 0.1})
    again = sm.Experiment.create("rerun", metadata={"lr": 0.2}, exist_ok=True)
    assert again == first
    assert again.metadata == {"lr": 0.1}  # the existing one, unchanged
    with pytest.raises(sm.MetricsApiRequestError) as caught:
        sm.Experiment.create("rerun")
    assert caught.value.status_code == 409
    assert len(sm.Experiment.list()) == 1
    with pytest.raises(sm.MetricsValidationError):
        sm.Experiment.create("other", exist_ok="yes")  # type: ignore[arg-type]


def test_folder_create_with_exist_ok_returns_the_sibling_of_that_name(
    metrics_session: sm.Session,
) -> None:
    root = sm.Folder.create("projects")
    assert sm.Folder.create("projects", exist_ok=True) == root
    child = sm.Folder.create("nlp", parent=root)
    assert sm.Folder.create("nlp", parent=root, exist_ok=True) == child
    elsewhere = sm.Folder.create("nlp", exist_ok=True)  # same name, another parent: new
    assert elsewhere != child
    assert elsewhere.path_name == "nlp"
    with pytest.raises(sm.MetricsApiRequestError, match="409"):
        sm.Folder.create("nlp", parent=root)
    assert len(sm.Folder.list()) == 3


# -- read-only fields ----------------------------------------------------------------


def test_assigning_a_field_the_api_cannot_change_raises_with_a_hint(
    metrics_session: sm.Session,
) -> None:
    exp = sm.Experiment.create("ro", description="before")
    for name, value in (("description", "x"), ("metadata", {}), ("status", "done"),
                        ("created_at", None), ("folder", None), ("url", "/"), ("brand_new", 1)):  # fmt: skip
        with pytest.raises(AttributeError, match=r"Experiment\.\w+ is read-only: .*exp\.move"):
            setattr(exp, name, value)
    assert exp.description == "before"
    assert exp.refresh().description == "before"
    assert not hasattr(exp, "brand_new")
    note = exp.annotate("hello")
    with pytest.raises(AttributeError, match=r"exp\.annotate"):
        note.text = "changed"  # type: ignore[assignment]


def test_folder_name_stays_assignable_and_save_sends_it(metrics_session: sm.Session) -> None:
    folder = sm.Folder.create("old")
    with pytest.raises(AttributeError, match=r"Folder\.path_name is read-only: rename with"):
        folder.path_name = "x"  # type: ignore[assignment]
    with pytest.raises(AttributeError, match=r"Folder\.id is read-only"):
        folder.id = "x"  # type: ignore[assignment]
    folder.name = "new"
    assert folder.save().path_name == "new"
    assert sm.Folder.get(folder.id).name == "new"


# -- the embedded server -------------------------------------------------------------


@pytest.fixture
def no_default_session() -> Iterator[None]:
    sm.set_default_session(None)
    yield
    sm.set_default_session(None)


def test_start_local_server_makes_its_session_the_default_until_closed(
    no_default_session: None,
) -> None:
    server = sm.start_local_server(spool_dir=None)
    try:
        assert isinstance(server, LocalServer)
        assert sm.get_session() is server.default_session
        assert server.default_session is not None
        exp = sm.Experiment.create("nb-run")
        with exp.run():
            exp.log("loss", 0.5, step=0)
        assert sm.Experiment.list()[0].status == "done"
    finally:
        server.close()
    assert server.default_session.closed
    with pytest.raises(sm.MetricsApiError, match="No session"):
        sm.get_session()
    server.close()  # twice is fine


def test_the_readme_notebook_workflow_runs_as_written(no_default_session: None) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- readme-notebook: start -->", 1)[1].split(
        "<!-- readme-notebook: end -->"
    )[0]
    code = block.strip().removeprefix("```python").removesuffix("```")
    namespace: dict[str, Any] = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
        assert list(namespace["table"]["slug"]) == ["adam-0.01", "sgd-0.01", "sgd-0.1"]
        assert [r.slug for r in namespace["sgd"]] == ["sgd-0.01", "sgd-0.1"]
        summary = namespace["summary"]
        assert summary.loc["sgd-0.1", "loss[split=train]:min"] == pytest.approx(2 / (1 + 0.1 * 99))
        # The lowest loss any run reaches, from the formula the cell logs, not from the SDK.
        lowest = min(
            ((2 / (1 + lr * 99)), f"{o}-{lr}")
            for o, lr in [("sgd", 0.1), ("sgd", 0.01), ("adam", 0.01)]
        )
        assert namespace["best"].slug == lowest[1]
        assert isinstance(namespace["ax"], Axes)
        assert len(namespace["ax"].get_lines()) == 6  # raw and smoothed, per run
        assert namespace["wide"].shape == (100, 3)
        server = namespace["server"]
        # The cell run again: the same server, nothing stored twice, no status changed.
        before = {r.slug: (r.status, r.updated_at_ms) for r in namespace["runs"]}
        exec(compile(code, "README.md", "exec"), namespace)
        assert namespace["server"] is server
        again = namespace["runs"]
        assert {r.slug: (r.status, r.updated_at_ms) for r in again} == before
        counts = again.summary(["loss"], how=("count",))["loss[split=train]:count"]
        assert counts.to_dict() == {slug: 100 for slug in before}
    finally:
        namespace["server"].close()


def test_plot_hue_reaches_nested_metadata_and_orders_numbers_numerically(
    sweep: tuple[sm.Folder, sm.ExperimentList],
) -> None:
    _, runs = sweep
    axes = runs.plot("acc", hue="model.width")
    legend = axes.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        f"model.width={w}" for w in (64, 128, 192, 256, 320)
    ]
    assert len({str(line.get_color()) for line in axes.get_lines()}) == 5
    # The first run drawn has lr 0.1; the legend still lists the values in numeric order.
    by_lr = runs.plot("acc", hue="lr").get_legend()
    assert by_lr is not None
    assert [t.get_text() for t in by_lr.get_texts()] == ["lr=0.001", "lr=0.01", "lr=0.1"]
