"""The runs table's summaries per sub-series (a metric with one set of event metadata),
combining them only when asked and saying so, a run by its slug, and ``sm.compare`` of
experiments and metric names; against the local server."""

from __future__ import annotations

import logging
import re
import warnings

import pytest

import syvain_metrics as sm

pytest.importorskip("waitress", reason="the local server needs the 'local' extra")
pytest.importorskip("pandas")

TRAIN_STEPS = 30
VALID_EVERY = 5


def train_loss(run: int, step: int) -> float:
    return 3.0 / (1 + step) + 0.05 * run


def valid_loss(run: int, step: int) -> float:
    # The valid curve ranks the runs the other way round from the train curve.
    return 1.0 + 0.1 * (3 - run) + 1 / (1 + step)


def events(run: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for step in range(TRAIN_STEPS):
        out.append(
            {"name": "loss", "value": train_loss(run, step), "step": step,
             "metadata": {"split": "train"}}
        )  # fmt: skip
        if step % VALID_EVERY == 0:
            out.append(
                {"name": "loss", "value": valid_loss(run, step), "step": step,
                 "metadata": {"split": "valid"}}
            )  # fmt: skip
            out.append(
                {"name": "loss", "value": valid_loss(run, step) + 1, "step": step,
                 "metadata": {"task": "b", "split": "valid"}}
            )  # fmt: skip
        out.append({"name": "lr", "value": 0.1 / (step + 1), "step": step})
    return out


@pytest.fixture
def runs(metrics_session: sm.Session) -> sm.ExperimentList:
    for index in range(3):
        run = sm.Experiment.create(f"lr{0.01 * (index + 1):.2f}-bs64", metadata={"run": index})
        run.ingest(events(index), sync=True)
    return sm.Experiment.list()


def expected(run: int, split: str) -> list[float]:
    if split == "train":
        return [train_loss(run, s) for s in range(TRAIN_STEPS)]
    return [valid_loss(run, s) for s in range(0, TRAIN_STEPS, VALID_EVERY)]


def test_each_sub_series_has_its_own_columns_with_its_own_numbers(
    runs: sm.ExperimentList,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing combined: nothing to warn about
        table = runs.summary(["loss", "lr"], how=("min", "count", "last"))
    metric_columns = [c for c in table.columns if c.startswith(("loss", "lr"))]
    assert metric_columns == [
        "loss[split=train]:min", "loss[split=train]:count", "loss[split=train]:last",
        "loss[split=valid]:min", "loss[split=valid]:count", "loss[split=valid]:last",
        "loss[split=valid,task=b]:min", "loss[split=valid,task=b]:count",
        "loss[split=valid,task=b]:last",
        "lr:min", "lr:count", "lr:last",
    ]  # fmt: skip
    for index, run in enumerate(reversed(runs)):  # listed newest first
        row = table.loc[run.slug]
        for split in ("train", "valid"):
            values = expected(index, split)
            assert row[f"loss[split={split}]:min"] == pytest.approx(min(values))
            assert row[f"loss[split={split}]:count"] == len(values)
            assert row[f"loss[split={split}]:last"] == pytest.approx(values[-1])
        assert row["loss[split=valid,task=b]:min"] == pytest.approx(
            min(expected(index, "valid")) + 1
        )
        assert row["lr:last"] == pytest.approx(0.1 / TRAIN_STEPS)
    # The best run by validation loss is not the best by training loss in these runs.
    best = table["loss[split=valid]:min"].idxmin()
    assert best == runs[0].slug == "lr0.03-bs64"
    assert table["loss[split=train]:min"].idxmin() == runs[-1].slug


def test_metadata_narrows_to_the_chosen_sub_series(runs: sm.ExperimentList) -> None:
    table = runs.summary("loss", how="min", metadata={"split": "valid"}, include_metadata=False)
    assert list(table.columns) == ["loss[split=valid]:min", "loss[split=valid,task=b]:min"]
    only_key = runs.summary("loss", how="count", metadata="task", include_metadata=False)
    assert list(only_key.columns) == ["loss[split=valid,task=b]:count"]
    assert set(only_key["loss[split=valid,task=b]:count"]) == {TRAIN_STEPS // VALID_EVERY}


def test_combine_gives_one_column_per_metric_and_says_what_it_mixed(
    runs: sm.ExperimentList,
) -> None:
    with pytest.warns(UserWarning, match="combine=True") as caught:
        table = runs.summary("loss", how=("min", "count"), combine=True, include_metadata=False)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "split=train" in message
    assert "split=valid" in message
    assert "split=valid,task=b" in message
    assert caught[0].filename == __file__  # it points at the caller's line
    assert list(table.columns) == ["loss:min", "loss:count"]
    assert table.attrs["combined"] == {"loss": ["split=train", "split=valid", "split=valid,task=b"]}
    first = runs[-1]
    everything = expected(0, "train") + expected(0, "valid") + [v + 1 for v in expected(0, "valid")]
    assert table.loc[first.slug, "loss:count"] == len(everything)
    assert table.loc[first.slug, "loss:min"] == pytest.approx(min(everything))
    # One run's summary combines the same way, and warns the same way.
    with pytest.warns(UserWarning, match=r"split=train, split=valid"):
        got = first.summary("loss", how="count", combine=True)
    assert got == {"loss:count": len(everything)}
    # A metric with a single sub-series has nothing to combine: no warning, no entry.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lr = runs.summary("lr", how="count", combine=True, include_metadata=False)
    assert lr.attrs["combined"] == {}


def test_one_run_summary_names_its_sub_series(runs: sm.ExperimentList) -> None:
    got = runs[-1].summary(["loss", "nope"], how="min", metadata={"split": "train"})
    assert got == {
        "loss[split=train]:min": pytest.approx(min(expected(0, "train"))),
        "nope:min": None,
    }


def test_last_per_step_counts_one_value_per_step_of_each_sub_series(
    runs: sm.ExperimentList,
) -> None:
    run = runs[-1]
    # Steps 0-9 of the train split logged again, as by a job restarted from a checkpoint.
    run.ingest(
        [{"name": "loss", "value": 9.0 + s, "step": s, "metadata": {"split": "train"}}
         for s in range(10)],
        sync=True,
    )  # fmt: skip
    plain = runs.summary("loss", how="count", include_metadata=False)
    assert plain.loc[run.slug, "loss[split=train]:count"] == TRAIN_STEPS + 10
    once = runs.summary("loss", how=("count", "max"), include_metadata=False, last_per_step=True)
    assert once.loc[run.slug, "loss[split=train]:count"] == TRAIN_STEPS
    assert once.loc[run.slug, "loss[split=train]:max"] == pytest.approx(18.0)
    assert once.loc[run.slug, "loss[split=valid]:count"] == TRAIN_STEPS // VALID_EVERY


def test_summaries_still_cost_one_compare_read_per_64_series(
    runs: sm.ExperimentList, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    runs.summary(["loss", "lr"])
    reads = [
        r for r in caplog.records if re.match(r"GET \S+/api/v1/metrics -> 200", r.getMessage())
    ]
    assert len(reads) == 2  # the page and the one confirming its end
    caplog.clear()
    sm.ExperimentList(list(runs) * 11).summary(["loss", "lr"], include_metadata=False)  # 66
    reads = [
        r for r in caplog.records if re.match(r"GET \S+/api/v1/metrics -> 200", r.getMessage())
    ]
    assert len(reads) == 4


# -- a run by its slug -------------------------------------------------------------


def test_a_run_by_its_slug_position_or_slice(runs: sm.ExperimentList) -> None:
    assert runs["lr0.03-bs64"].metadata == {"run": 2}
    assert runs[0].slug == "lr0.03-bs64"
    assert runs[-1].slug == "lr0.01-bs64"
    part = runs[1:]
    assert isinstance(part, sm.ExperimentList)
    assert [r.slug for r in part] == ["lr0.02-bs64", "lr0.01-bs64"]
    with pytest.raises(KeyError, match=r"lr0\.04-bs64.*closest: lr0\.0\d-bs64"):
        runs["lr0.04-bs64"]
    with pytest.raises(KeyError, match="zzz") as error:
        runs["zzz"]
    assert "closest" not in str(error.value)
    with pytest.raises(IndexError):
        runs[7]


# -- compare of experiments and names ----------------------------------------------


def test_compare_takes_experiments_and_metric_names(runs: sm.ExperimentList) -> None:
    a, b = runs["lr0.01-bs64"], runs["lr0.02-bs64"]
    rows = sm.compare([a, b], "loss", metadata={"split": "valid"})
    per_run = {slug: len(group) for slug, group in rows.to_pandas().groupby("experiment_slug")}
    assert per_run == {
        a.slug: 2 * TRAIN_STEPS // VALID_EVERY,
        b.slug: 2 * TRAIN_STEPS // VALID_EVERY,
    }
    both = sm.compare([a, b], "loss", "lr", to_step=0)
    assert sorted(set(zip(both.column("experiment_slug"), both.names, strict=True))) == [
        (a.slug, "loss"), (a.slug, "lr"), (b.slug, "loss"), (b.slug, "lr"),
    ]  # fmt: skip
    assert sm.compare(runs, "lr", limit=3).values == [0.1, 0.1, 0.1]
    # The series form, as before, also from a generator.
    old = sm.compare(r.series("lr") for r in (a, b))
    assert len(old) == 2 * TRAIN_STEPS
    pages = list(sm.iter_compare([a, b], "lr", page_size=20))
    assert sum(len(page) for page in pages) == 2 * TRAIN_STEPS


def test_compare_refuses_mixed_or_missing_arguments_before_any_request(
    runs: sm.ExperimentList, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = runs[0], runs[1]
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    with pytest.raises(
        sm.MetricsValidationError, match=r"Name the metrics.*compare\(\[a, b\], 'loss'\)"
    ):
        sm.compare([a, b])
    with pytest.raises(sm.MetricsValidationError, match=r"runs\['<slug>'\]"):
        sm.compare(["lr0.01-bs64", "lr0.02-bs64"], "loss")  # type: ignore[list-item]
    with pytest.raises(sm.MetricsValidationError, match="not a mix"):
        sm.compare([a, b.series("loss")], "loss")  # type: ignore[list-item]
    with pytest.raises(sm.MetricsValidationError, match="a Series names its own"):
        sm.compare([a.series("loss")], "loss")
    with pytest.raises(sm.MetricsValidationError, match=r"list of sm\.Series"):
        sm.compare(a, "loss")  # type: ignore[arg-type]
    with pytest.raises(sm.MetricsValidationError, match="metric name"):
        sm.compare([a], "")
    assert not [r for r in caplog.records if re.match(r"(GET|POST) ", r.getMessage())]
