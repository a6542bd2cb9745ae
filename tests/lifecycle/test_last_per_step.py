"""``last_per_step``: of the rows of one series at one step, the one logged last stays.

The column version is checked against a plain reference written row by row, on handmade
cases (ties, null steps, metadata spelled differently, the rows' order) and on random
tables (hypothesis), with steps held as a packed array and as a plain list.
"""

from __future__ import annotations

import random
from array import array
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import syvain_metrics as sm
from syvain_metrics.contract.schemas.rows import MetricRowTable
from syvain_metrics.tables.columns import RowColumns, last_per_step

META = ['{"split":"train"}', '{"split":"valid"}', "{}"]


def row(
    event_id: str,
    step: float | None,
    client: int,
    server: int | None = None,
    *,
    name: str = "loss",
    experiment: str = "x1",
    meta: str = "{}",
    value: float = 0.0,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "org_id": "o1",
        "experiment_id": experiment,
        "experiment_slug": f"run-{experiment}",
        "metric_name": name,
        "metric_value": value,
        "step": step,
        "event_metadata_json": meta,
        "client_timestamp_ms": client,
        "server_timestamp_ms": client if server is None else server,
    }


def xs(line: Any) -> list[float]:
    return [float(x) for x in line.get_xdata()]


def ys(line: Any) -> list[float]:
    return [float(y) for y in line.get_ydata()]


def reference(rows: list[dict[str, Any]]) -> list[str]:
    """The event ids kept, in order: one row at a time, metadata compared as JSON values."""
    import json

    best: dict[Any, tuple[Any, ...]] = {}
    for item in rows:
        if item["step"] is None:
            continue
        meta = json.dumps(
            {
                k: int(v) if isinstance(v, float) and v.is_integer() else v
                for k, v in json.loads(item["event_metadata_json"]).items()
            },
            sort_keys=True,
        )
        key = (item["experiment_id"], item["metric_name"], meta, float(item["step"]))
        order = (item["client_timestamp_ms"], item["server_timestamp_ms"], item["event_id"])
        if key not in best or order > best[key]:
            best[key] = order
    winners = {order[2] for order in best.values()}
    return [r["event_id"] for r in rows if r["step"] is None or r["event_id"] in winners]


def kept_ids(rows: list[dict[str, Any]]) -> list[str]:
    return last_per_step(RowColumns.from_rows(rows)).column("event_id")


def test_the_row_logged_last_stays_wherever_it_is_in_the_read() -> None:
    rows = [
        row("late", 1.0, client=30, value=3.0),
        row("early", 1.0, client=10, value=1.0),
        row("other-step", 2.0, client=20, value=2.0),
    ]
    table = RowColumns.from_rows(rows)
    kept = last_per_step(table)
    assert kept.column("event_id") == ["late", "other-step"]  # the read's order is kept
    assert kept.column("metric_value") == [3.0, 2.0]
    assert len(kept) == 2
    assert type(kept.columns["step"]) is array  # still packed
    assert kept.row(1) == rows[2]  # whole rows, every field
    assert len(table) == 3  # the table read is not changed


@pytest.mark.parametrize(
    ("rows", "winner"),
    [
        pytest.param(
            [row("a", 5.0, client=10, server=12), row("b", 5.0, client=10, server=11)],
            "a",
            id="same-client-time-later-server-time",
        ),
        pytest.param(
            [row("b", 5.0, client=10, server=11), row("a", 5.0, client=10, server=11)],
            "b",
            id="same-times-greatest-event-id",
        ),
        pytest.param(
            [row("z", 5.0, client=9, server=99), row("a", 5.0, client=10, server=1)],
            "a",
            id="client-time-first",
        ),
    ],
)
def test_ties_are_broken_by_server_time_then_event_id_in_any_order(
    rows: list[dict[str, Any]], winner: str
) -> None:
    assert kept_ids(rows) == [winner]
    assert kept_ids(rows[::-1]) == [winner]


def test_rows_without_a_step_are_all_kept() -> None:
    rows = [
        row("n1", None, client=1),
        row("s1", 1.0, client=2),
        row("n2", None, client=3),
        row("s2", 1.0, client=4),
        row("n3", None, client=3),
    ]
    assert kept_ids(rows) == ["n1", "n2", "s2", "n3"]
    only_nulls = [row(f"n{i}", None, client=1) for i in range(4)]
    assert kept_ids(only_nulls) == ["n0", "n1", "n2", "n3"]


def test_series_differ_by_run_metric_and_metadata_value_not_by_its_spelling() -> None:
    rows = [
        row("a", 1.0, client=1, experiment="x1"),
        row("b", 1.0, client=2, experiment="x2"),
        row("c", 1.0, client=3, name="acc"),
        row("d", 1.0, client=4, meta='{"split":"train","k":1}'),
        row("e", 1.0, client=5, meta='{"k":1.0,"split":"train"}'),  # the same object as d
        row("f", 1.0, client=6, meta='{"k":2,"split":"train"}'),
    ]
    assert kept_ids(rows) == ["a", "b", "c", "e", "f"]


def test_a_read_without_a_repeated_step_is_returned_as_it_is() -> None:
    table = RowColumns.from_rows([row(f"e{i}", float(i), client=i) for i in range(5)])
    assert last_per_step(table) is table
    rows = sm.MetricRows(table)
    assert rows.last_per_step() is rows
    assert last_per_step(RowColumns()) is not None
    assert len(last_per_step(RowColumns())) == 0


def test_steps_sent_as_integers_and_rows_lacking_fields_are_handled() -> None:
    rows = [
        {"event_id": "a", "metric_name": "loss", "step": 3, "client_timestamp_ms": 1},
        {"event_id": "b", "metric_name": "loss", "step": 3.0, "client_timestamp_ms": 2},
        {"event_id": "c", "metric_name": "loss", "step": 4},
        {"event_id": "d", "metric_name": "loss", "step": 4, "client_timestamp_ms": 0},
    ]
    table = RowColumns.from_rows(rows)
    assert type(table.columns["step"]) is list
    assert last_per_step(table).column("event_id") == ["b", "d"]  # a missing time is oldest


def test_the_metric_rows_method_and_a_frame_agree() -> None:
    pytest.importorskip("pandas")
    rows = sm.MetricRows(
        [
            row("old", 1.0, client=1, value=1.0),
            row("new", 1.0, client=2, value=2.0),
            row("two", 2.0, client=3, value=3.0),
        ]
    )
    assert rows.last_per_step().values == [2.0, 3.0]
    assert list(rows.to_pandas(last_per_step=True)["value"]) == [2.0, 3.0]
    assert len(rows.to_pandas()) == 3
    with pytest.raises(sm.MetricsValidationError, match="last_per_step"):
        rows.to_pandas(last_per_step="yes")  # type: ignore[arg-type]


def test_a_plot_draws_the_last_value_of_each_step() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    rows = sm.MetricRows(
        [
            row("old", 1.0, client=1, value=1.0),
            row("new", 1.0, client=2, value=2.0),
            row("two", 2.0, client=3, value=3.0),
        ]
    )
    (line,) = rows.plot(last_per_step=True).get_lines()
    assert xs(line) == [1.0, 2.0]
    assert ys(line) == [2.0, 3.0]
    (line,) = rows.plot().get_lines()
    assert len(xs(line)) == 3


# -- random tables against the reference ---------------------------------------------------------

ROWS = st.lists(
    st.tuples(
        st.sampled_from(["x1", "x2"]),
        st.sampled_from(["loss", "acc"]),
        st.sampled_from([*META, '{"split":"train","k":1}', '{"k":1.0,"split":"train"}']),
        st.one_of(st.none(), st.integers(0, 3)),
        st.integers(0, 3),
        st.integers(0, 3),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ROWS, st.booleans(), st.randoms(use_true_random=False))
def test_random_tables_match_the_reference(
    drawn: list[tuple[Any, ...]], validated: bool, shuffle: random.Random
) -> None:
    rows = [
        row(
            f"e{shuffle.randrange(10**6):06d}-{i}",
            None if s is None else float(s),
            c,
            v,
            experiment=x,
            name=n,
            meta=m,
        )
        for i, (x, n, m, s, c, v) in enumerate(drawn)
    ]
    table = RowColumns()
    # Through the page check (packed columns, shared texts) or straight from dicts.
    table.extend(MetricRowTable().deserialize(rows) if validated and rows else rows)
    assert last_per_step(table).column("event_id") == reference(rows)
    assert [r["event_id"] for r in last_per_step(table).rows()] == reference(rows)
    as_lists = [{**r, "step": None if r["step"] is None else int(r["step"])} for r in rows]
    assert kept_ids(as_lists) == reference(rows)  # steps held as a list of integers


@pytest.mark.parametrize(
    "method",
    [
        sm.Experiment.metrics,
        sm.compare,
        sm.MetricRows.to_pandas,
        sm.MetricRows.plot,
        sm.MetricRows.last_per_step,
        sm.Experiment.summary,
        sm.ExperimentList.summary,
        sm.ExperimentList.compare,
        sm.ExperimentList.plot,
        sm.Experiment.resume,
    ],
)
def test_help_names_the_option(method: object) -> None:
    import inspect
    import pydoc

    text = pydoc.render_doc(method, renderer=pydoc.plaintext)
    assert "last_per_step" in text
    if method is not sm.Experiment.resume and method is not sm.MetricRows.last_per_step:
        parameter = inspect.signature(method).parameters["last_per_step"]  # type: ignore[arg-type]
        assert parameter.default is False
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY


def test_resume_is_offered_by_run() -> None:
    import inspect

    assert inspect.signature(sm.Experiment.run).parameters["resume_from"].default is None


@pytest.mark.parametrize(
    ("repeated", "other"),
    [
        pytest.param(2.0**52, 1.0, id="steps-too-large-for-one-float"),
        pytest.param(1.5, 1.0, id="fractional-steps"),
    ],
)
def test_unusual_steps_still_group_exactly(repeated: float, other: float) -> None:
    # Two series, so the keys combine a series and a step: exact whatever the steps.
    rows = [
        row("a", repeated, client=1),
        row("b", repeated, client=2),
        row("c", other, client=3),
        row("d", repeated, client=4, name="acc"),
        row("e", repeated + 1, client=5),
    ]
    assert kept_ids(rows) == reference(rows) == ["b", "c", "d", "e"]
