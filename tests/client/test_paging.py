"""Reads never truncate silently.

A fake backend implements the contract's section 8 "Metrics" semantics (filters, inclusive
bounds, sort keys with ``event_id`` last, null steps first ascending / last descending,
limit default 1,000 and clamp 100,000) over an in-memory list of rows. The SDK must return
every row exactly once, in exactly the order this fake gives for the whole result.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

import syvain_metrics as sm
from syvain_metrics.client.paging import RowReader
from tests.conftest import API, API_KEY, HOST, envelope, error_body, experiment_wire, row_wire

Row = dict[str, Any]
Params = dict[str, list[str]]

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 100_000
METRIC_SORT_KEYS = ("step", "client_timestamp", "server_timestamp")
SINGLE_KEYS = {
    "metric_name",
    "metadata_key",
    "metadata_value",
    "metadata_value_json",
    "step",
    "from_step",
    "to_step",
    "from_time",
    "to_time",
    "sort_by",
    "sort_direction",
    "limit",
    "include_experiment_meta_as_of",
}


class BadRequestError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _single(params: Params, key: str) -> str | None:
    values = params.get(key)
    if values is None:
        return None
    if len(values) != 1:
        raise BadRequestError(key, f"{key} given {len(values)} times")
    return values[0]


def _non_negative(params: Params, key: str) -> int | None:
    text = _single(params, key)
    if text is None:
        return None
    try:
        number = int(text)
    except ValueError:
        raise BadRequestError(key, f"{key} is not an integer: {text!r}") from None
    if number < 0:
        raise BadRequestError(key, f"{key} must be >= 0")
    return number


def select(rows: list[Row], params: Params, *, compare: bool = False) -> list[Row]:
    """The fake service's answer to a list-metrics (or compare) query."""
    allowed = SINGLE_KEYS | ({"series"} if compare else set())
    unknown = set(params) - allowed
    if unknown:
        raise BadRequestError(sorted(unknown)[0], "unknown query parameter")
    series_of: dict[str, int] = {}
    if compare:
        series = [json.loads(s) for s in params.get("series", [])]
        if not 1 <= len(series) <= 64:
            raise BadRequestError("series", "1 to 64 series")
        for row in rows:
            for index, wanted in enumerate(series):
                if (
                    row["experiment_id"] == wanted["experiment_id"]
                    and row["metric_name"] == wanted["metric_name"]
                ):
                    series_of[row["event_id"]] = index
                    break
        matched = [row for row in rows if row["event_id"] in series_of]
    else:
        matched = list(rows)
        name = _single(params, "metric_name")
        if name is not None:
            matched = [row for row in matched if row["metric_name"] == name]

    step = _non_negative(params, "step")
    from_step = _non_negative(params, "from_step")
    to_step = _non_negative(params, "to_step")
    from_time = _non_negative(params, "from_time")
    to_time = _non_negative(params, "to_time")
    if step is not None:
        matched = [r for r in matched if r["step"] is not None and r["step"] == step]
    if from_step is not None:
        matched = [r for r in matched if r["step"] is not None and r["step"] >= from_step]
    if to_step is not None:
        matched = [r for r in matched if r["step"] is not None and r["step"] <= to_step]
    if from_time is not None:
        matched = [r for r in matched if r["client_timestamp_ms"] >= from_time]
    if to_time is not None:
        matched = [r for r in matched if r["client_timestamp_ms"] <= to_time]

    sort_text = _single(params, "sort_by")
    keys = sort_text.split(",") if sort_text else ["step", "client_timestamp"]
    choices = (*METRIC_SORT_KEYS, "series") if compare else METRIC_SORT_KEYS
    if not all(k in choices for k in keys):
        raise BadRequestError("sort_by", f"bad sort_by {sort_text!r}")
    direction = _single(params, "sort_direction") or "asc"
    if direction not in ("asc", "desc"):
        raise BadRequestError("sort_direction", "asc or desc")

    def ascending_key(row: Row) -> tuple[Any, ...]:
        parts: list[Any] = []
        for key in keys:
            if key == "step":
                parts.append((0, 0.0) if row["step"] is None else (1, row["step"]))
            elif key == "client_timestamp":
                parts.append(row["client_timestamp_ms"])
            elif key == "server_timestamp":
                parts.append(row["server_timestamp_ms"])
            else:
                parts.append(series_of[row["event_id"]])
        parts.append(row["event_id"])
        return tuple(parts)

    # the key is total (event_id last), so "desc on every key" is the exact reverse
    ordered = sorted(matched, key=ascending_key, reverse=direction == "desc")

    limit_text = _single(params, "limit")
    limit = DEFAULT_LIMIT if limit_text is None else int(limit_text)
    if limit <= 0:
        raise BadRequestError("limit", "limit must be positive")
    return ordered[: min(limit, MAX_LIMIT)]


def as_params(values: dict[str, Any]) -> Params:
    """Python query values as the strings a server would see."""
    out: Params = {}
    for key, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        out[key] = [str(v) for v in items]
    return out


class FakeMetricsServer:
    """``responses`` callbacks for GET .../metrics and GET /metrics over ``rows``."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.queries: list[Params] = []
        self.rejected: list[str] = []

    def expected(self, *, compare: bool = False, **query: Any) -> list[str]:
        """Event ids of the whole answer, in the fake's own order (no limit)."""
        params = as_params({**query, "limit": MAX_LIMIT})
        return [row["event_id"] for row in select(self.rows, params, compare=compare)]

    def install(self, mocked: responses.RequestsMock) -> FakeMetricsServer:
        experiment_metrics = re.compile(
            re.escape(f"{API}/experiments/") + r"[^/?]+/metrics(\?.*)?$"
        )
        mocked.add_callback(responses.GET, experiment_metrics, callback=self._metrics)
        compare_url = re.compile(re.escape(f"{API}/metrics") + r"(\?.*)?$")
        mocked.add_callback(responses.GET, compare_url, callback=self._compare)
        return self

    def _answer(self, request: Any, *, compare: bool) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        params = parse_qs(parts.query, keep_blank_values=True)
        self.queries.append(params)
        rows = self.rows
        if not compare:
            experiment_id = parts.path.split("/")[-2]
            rows = [row for row in rows if row["experiment_id"] == experiment_id]
        try:
            answer = select(rows, params, compare=compare)
        except BadRequestError as error:
            self.rejected.append(str(error))
            body = error_body(str(error), "validation_error", field=error.field)
            return 400, {}, json.dumps(body)
        return 200, {}, json.dumps(envelope({"rows": answer}))

    def _metrics(self, request: Any) -> tuple[int, dict[str, str], str]:
        return self._answer(request, compare=False)

    def _compare(self, request: Any) -> tuple[int, dict[str, str], str]:
        return self._answer(request, compare=True)

    def limits(self) -> list[int]:
        return [int(q["limit"][0]) for q in self.queries]


# -- data -----------------------------------------------------------------------------


def make_rows(
    rng: random.Random,
    steps: list[int | None],
    *,
    name: str = "loss",
    experiment_id: str = "exp-1",
    ts_of: Any = None,
) -> list[Row]:
    """One row per entry of ``steps``; random event ids; timestamps near ``10 * step``,
    overlapping between neighbouring steps and often equal within one."""
    rows = []
    for step in steps:
        event_id = f"ev-{rng.getrandbits(64):016x}"
        if ts_of is not None:
            ts = ts_of(step)
        else:
            base = 1_700_000_000_000 + 10 * (step if step is not None else rng.randrange(400))
            ts = base + rng.randrange(16)
        row = row_wire(
            event_id, step, rng.uniform(0, 5), ts, name=name, experiment_id=experiment_id
        )
        row["server_timestamp_ms"] = ts + rng.randrange(5_000)
        rows.append(row)
    rng.shuffle(rows)
    return rows


def per_step(count: int, per: int, start: int = 0) -> list[int | None]:
    return [start + i // per for i in range(count)]


@pytest.fixture
def small(sleeps: list[float]) -> Iterator[sm.Session]:
    """A session that pages 100 rows at a time."""
    created = sm.Session(
        API_KEY, host=HOST, retry=sm.RetryPolicy(sleep=sleeps.append, jitter=0), page_size=100
    )
    yield created
    created.close()


@pytest.fixture
def exp(small: sm.Session) -> sm.Experiment:
    return sm.Experiment(experiment_wire(), session=small)


def ids(rows: sm.MetricRows) -> list[str]:
    return rows.column("event_id")


def assert_complete(got: list[str], expected: list[str]) -> None:
    assert len(got) == len(set(got)), "a row came twice"
    assert set(got) == set(expected), f"{len(set(expected) - set(got))} rows missing"
    assert got == expected, "rows out of the service's order"


# -- through the SDK and the fake service ------------------------------------------------


@pytest.mark.parametrize("direction", [None, "asc", "desc"])
def test_all_rows_by_step_in_service_order(
    exp: sm.Experiment, mocked: responses.RequestsMock, direction: str | None
) -> None:
    rng = random.Random(1)
    rows = make_rows(rng, per_step(3_000, 7)) + make_rows(rng, per_step(300, 3), name="acc")
    server = FakeMetricsServer(rows).install(mocked)

    got = exp.metrics("loss", sort_direction=direction)

    expected = server.expected(metric_name="loss", sort_direction=direction)
    assert len(expected) == 3_000
    assert_complete(ids(got), expected)
    assert set(got.names) == {"loss"}
    assert server.rejected == []
    assert all(limit <= 100 for limit in server.limits())
    assert len(server.queries) < 100


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_all_rows_by_client_timestamp_in_service_order(
    exp: sm.Experiment, mocked: responses.RequestsMock, direction: str
) -> None:
    rng = random.Random(2)
    server = FakeMetricsServer(make_rows(rng, per_step(3_000, 7))).install(mocked)

    got = exp.metrics("loss", sort_by="client_timestamp", sort_direction=direction)

    expected = server.expected(
        metric_name="loss", sort_by="client_timestamp", sort_direction=direction
    )
    assert_complete(ids(got), expected)
    assert server.rejected == []
    assert len(server.queries) < 100


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_null_steps_come_first_ascending_and_last_descending(
    exp: sm.Experiment, mocked: responses.RequestsMock, direction: str
) -> None:
    rng = random.Random(3)
    stepped = make_rows(rng, per_step(1_000, 7))
    nulls = make_rows(rng, [None] * 230)  # more than two pages of them
    server = FakeMetricsServer(stepped + nulls).install(mocked)

    got = exp.metrics("loss", sort_direction=direction)

    expected = server.expected(metric_name="loss", sort_direction=direction)
    assert_complete(ids(got), expected)
    steps = got.steps
    if direction == "asc":
        assert steps[:230] == [None] * 230
        assert None not in steps[230:]
    else:
        assert steps[-230:] == [None] * 230
        assert None not in steps[:-230]
    assert server.rejected == []


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_a_step_larger_than_a_page_is_read_completely_without_looping(
    exp: sm.Experiment, mocked: responses.RequestsMock, direction: str
) -> None:
    rng = random.Random(4)
    steps = per_step(35, 7) + [5] * 350 + per_step(35, 7, start=6)
    server = FakeMetricsServer(make_rows(rng, steps)).install(mocked)

    got = exp.metrics("loss", sort_direction=direction)

    expected = server.expected(metric_name="loss", sort_direction=direction)
    assert len(expected) == 420
    assert_complete(ids(got), expected)
    assert got.steps.count(5) == 350
    assert len(server.queries) < 100
    assert server.rejected == []


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({}, id="by-step-asc"),
        pytest.param({"sort_direction": "desc"}, id="by-step-desc"),
        pytest.param({"sort_by": "client_timestamp"}, id="by-time-asc"),
        pytest.param({"sort_by": "client_timestamp", "sort_direction": "desc"}, id="by-time-desc"),
    ],
)
def test_a_step_and_millisecond_larger_than_a_page_is_read_in_one_larger_page(
    exp: sm.Experiment, mocked: responses.RequestsMock, query: dict[str, Any]
) -> None:
    rng = random.Random(5)
    same_ms = 1_700_000_000_555
    crowded = make_rows(rng, [5] * 250, ts_of=lambda step: same_ms)
    around = make_rows(rng, per_step(35, 7) + per_step(35, 7, start=6))
    server = FakeMetricsServer(crowded + around).install(mocked)

    got = exp.metrics("loss", **query)

    expected = server.expected(metric_name="loss", **query)
    assert len(expected) == 320
    assert_complete(ids(got), expected)
    # the crowded millisecond was taken in one page larger than the session's page size
    assert any(limit > 250 for limit in server.limits())
    assert len(server.queries) < 100
    assert server.rejected == []


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({}, id="step-asc"),
        pytest.param({"sort_direction": "desc"}, id="step-desc"),
        pytest.param({"sort_by": "client_timestamp", "sort_direction": "desc"}, id="time-desc"),
    ],
)
def test_limit_returns_exactly_the_first_rows(
    exp: sm.Experiment, mocked: responses.RequestsMock, query: dict[str, Any]
) -> None:
    rng = random.Random(6)
    nulls = make_rows(rng, [None] * 20)
    server = FakeMetricsServer(make_rows(rng, per_step(1_500, 7)) + nulls).install(mocked)
    expected = server.expected(metric_name="loss", **query)

    small_read = exp.metrics("loss", limit=50, **query)
    assert ids(small_read) == expected[:50]
    assert len(server.queries) == 1
    assert server.queries[0]["limit"] == ["50"]

    large_read = exp.metrics("loss", limit=250, **query)
    assert ids(large_read) == expected[:250]

    exact = exp.metrics("loss", limit=100, **query)
    assert ids(exact) == expected[:100]
    assert server.rejected == []


def test_server_timestamp_order_is_one_request(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    rng = random.Random(7)
    server = FakeMetricsServer(make_rows(rng, per_step(3_000, 7))).install(mocked)

    got = exp.metrics("loss", sort_by="server_timestamp", sort_direction="desc")

    expected = server.expected(
        metric_name="loss", sort_by="server_timestamp", sort_direction="desc"
    )
    assert_complete(ids(got), expected)
    assert len(server.queries) == 1
    assert server.limits() == [MAX_LIMIT]


EXPLICIT_STEP_SORTS = [
    pytest.param("step", id="step"),
    pytest.param(["step", "server_timestamp"], id="step,server_timestamp"),
]


def _explicit_step_sort_read(
    exp: sm.Experiment, server: FakeMetricsServer, sort_by: Any, direction: str
) -> None:
    sort_text = sort_by if isinstance(sort_by, str) else ",".join(sort_by)
    got = exp.metrics("loss", sort_by=sort_by, sort_direction=direction)
    expected = server.expected(metric_name="loss", sort_by=sort_text, sort_direction=direction)
    assert_complete(ids(got), expected)
    assert server.rejected == []


# sort_by="step" means (step, event_id) and sort_by="step,server_timestamp" means
# (step, server_timestamp, event_id): the ties are NOT broken by the client timestamp.


@pytest.mark.parametrize("sort_by", EXPLICIT_STEP_SORTS)
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_explicit_step_sort_keeps_the_service_order_within_a_crowded_step(
    exp: sm.Experiment, mocked: responses.RequestsMock, sort_by: Any, direction: str
) -> None:
    rng = random.Random(8)
    rows = (
        make_rows(rng, per_step(70, 7))
        + make_rows(rng, [12] * 260)
        + make_rows(rng, per_step(70, 7, start=20))
    )
    server = FakeMetricsServer(rows).install(mocked)
    _explicit_step_sort_read(exp, server, sort_by, direction)


@pytest.mark.parametrize("sort_by", EXPLICIT_STEP_SORTS)
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_explicit_step_sort_keeps_the_service_order_among_null_steps(
    exp: sm.Experiment, mocked: responses.RequestsMock, sort_by: Any, direction: str
) -> None:
    rng = random.Random(8)
    rows = make_rows(rng, per_step(140, 7)) + make_rows(rng, [None] * 150)
    server = FakeMetricsServer(rows).install(mocked)
    _explicit_step_sort_read(exp, server, sort_by, direction)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_compare_pages_and_returns_each_row_once(
    small: sm.Session, mocked: responses.RequestsMock, direction: str
) -> None:
    rng = random.Random(9)
    rows = (
        make_rows(rng, per_step(1_400, 7), experiment_id="exp-1")
        + make_rows(rng, per_step(1_050, 5), experiment_id="exp-2")
        + make_rows(rng, [None] * 120, experiment_id="exp-2")
        + make_rows(rng, per_step(500, 5), experiment_id="exp-1", name="acc")
    )
    server = FakeMetricsServer(rows).install(mocked)
    series = [
        sm.Series("exp-1", "loss", session=small),
        sm.Series("exp-2", "loss", session=small),
        sm.Series("exp-1", "loss", session=small),  # the same rows again: each comes once
    ]

    got = sm.compare(series, sort_direction=direction, session=small)

    series_params = [s.to_param() for s in series]
    expected = server.expected(compare=True, series=series_params, sort_direction=direction)
    assert len(expected) == 2_570
    assert_complete(ids(got), expected)
    assert all(q["series"] == series_params for q in server.queries)
    assert len(server.queries) < 100
    assert server.rejected == []


def test_compare_sorted_by_series_is_complete(
    small: sm.Session, mocked: responses.RequestsMock
) -> None:
    rng = random.Random(10)
    rows = make_rows(rng, per_step(700, 7), experiment_id="exp-1") + make_rows(
        rng, per_step(700, 7), experiment_id="exp-2"
    )
    server = FakeMetricsServer(rows).install(mocked)
    series = [sm.Series("exp-2", "loss", session=small), sm.Series("exp-1", "loss", session=small)]

    got = sm.compare(series, sort_by=["series", "step"], session=small)

    expected = server.expected(
        compare=True, series=[s.to_param() for s in series], sort_by="series,step"
    )
    assert_complete(ids(got), expected)
    assert got.column("experiment_id")[:700] == ["exp-2"] * 700


def test_compare_limit_returns_the_first_rows(
    small: sm.Session, mocked: responses.RequestsMock
) -> None:
    rng = random.Random(11)
    rows = make_rows(rng, per_step(700, 7), experiment_id="exp-1") + make_rows(
        rng, per_step(700, 7), experiment_id="exp-2"
    )
    server = FakeMetricsServer(rows).install(mocked)
    series = [sm.Series("exp-1", "loss", session=small), sm.Series("exp-2", "loss", session=small)]
    expected = server.expected(compare=True, series=[s.to_param() for s in series])

    assert ids(sm.compare(series, limit=40, session=small)) == expected[:40]
    assert len(server.queries) == 1
    assert ids(sm.compare(series, limit=333, session=small)) == expected[:333]


# -- RowReader on its own -----------------------------------------------------------------


class FetchRecorder:
    """A ``fetch`` for RowReader backed by :func:`select`; every call is recorded. ``cap``
    makes it answer at most that many rows whatever the limit asked for."""

    def __init__(self, rows: list[Row], cap: int = MAX_LIMIT) -> None:
        self.rows = rows
        self.cap = cap
        self.calls: list[dict[str, Any]] = []

    def __call__(self, params: dict[str, Any]) -> list[Row]:
        self.calls.append(dict(params))
        assert len(self.calls) < 1_000, "the reader is looping"
        return select(self.rows, as_params(params))[: self.cap]

    def expected(self, **query: Any) -> list[str]:
        return [r["event_id"] for r in select(self.rows, as_params({**query, "limit": MAX_LIMIT}))]


def read_ids(
    fetch: FetchRecorder, page_size: int, limit: int | None = None, **query: Any
) -> list[str]:
    rows = RowReader(fetch=fetch, page_size=page_size).read(dict(query), limit=limit)
    return [row["event_id"] for row in rows]


@pytest.mark.parametrize("query", [{}, {"sort_direction": "desc"}, {"sort_by": "client_timestamp"}])
def test_reader_empty_result(query: dict[str, Any]) -> None:
    fetch = FetchRecorder([])
    assert read_ids(fetch, 10, **query) == []
    assert 1 <= len(fetch.calls) <= 2


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({}, id="asc"),
        pytest.param({"sort_direction": "desc"}, id="desc"),
        pytest.param({"sort_by": "client_timestamp"}, id="time-asc"),
        pytest.param({"sort_by": "client_timestamp", "sort_direction": "desc"}, id="time-desc"),
    ],
)
@pytest.mark.parametrize("steps", [list(range(10)), [3] * 10], ids=["distinct-steps", "one-step"])
def test_reader_exactly_one_page_of_rows(query: dict[str, Any], steps: list[int | None]) -> None:
    fetch = FetchRecorder(make_rows(random.Random(12), steps))
    assert_complete(read_ids(fetch, 10, **query), fetch.expected(**query))
    assert len(fetch.calls) <= 6


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_reader_full_pages_of_only_null_steps(direction: str) -> None:
    rng = random.Random(13)
    rows = make_rows(rng, [None] * 25) + make_rows(rng, per_step(12, 3))
    fetch = FetchRecorder(rows)
    got = read_ids(fetch, 10, sort_direction=direction)
    assert_complete(got, fetch.expected(sort_direction=direction))


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_reader_null_steps_in_one_millisecond_beyond_a_page(direction: str) -> None:
    rng = random.Random(14)
    rows = make_rows(rng, [None] * 25, ts_of=lambda step: 1_700_000_000_000) + make_rows(
        rng, per_step(12, 3)
    )
    fetch = FetchRecorder(rows)
    got = read_ids(fetch, 10, sort_direction=direction)
    assert_complete(got, fetch.expected(sort_direction=direction))


def test_reader_only_null_steps_exactly_a_page() -> None:
    rng = random.Random(15)
    fetch = FetchRecorder(make_rows(rng, [None] * 10))
    for direction in ("asc", "desc"):
        got = read_ids(fetch, 10, sort_direction=direction)
        assert_complete(got, fetch.expected(sort_direction=direction))


def test_reader_descending_reaches_step_zero() -> None:
    rng = random.Random(16)
    rows = make_rows(rng, [0] * 12 + [1] * 3 + [2] * 5)
    fetch = FetchRecorder(rows)
    got = read_ids(fetch, 5, sort_direction="desc")
    assert_complete(got, fetch.expected(sort_direction="desc"))
    for call in fetch.calls:  # no bound below zero was ever asked for
        for key in ("to_step", "from_step", "step", "from_time", "to_time"):
            assert call.get(key) is None or call[key] >= 0


def test_reader_descending_with_step_zero_in_one_millisecond() -> None:
    rng = random.Random(17)
    rows = make_rows(rng, [0] * 12, ts_of=lambda step: 1_700_000_000_000) + make_rows(rng, [1] * 4)
    fetch = FetchRecorder(rows)
    got = read_ids(fetch, 5, sort_direction="desc")
    assert_complete(got, fetch.expected(sort_direction="desc"))


def test_reader_limit_at_most_a_page_is_one_fetch() -> None:
    fetch = FetchRecorder(make_rows(random.Random(18), per_step(60, 4)))
    assert read_ids(fetch, 20, limit=20) == fetch.expected()[:20]
    assert fetch.calls == [{"limit": 20}]


def test_reader_limit_beyond_a_page_pages_and_stops() -> None:
    fetch = FetchRecorder(make_rows(random.Random(19), per_step(600, 4)))
    assert (
        read_ids(fetch, 20, limit=130, sort_direction="desc")
        == fetch.expected(sort_direction="desc")[:130]
    )
    assert len(fetch.calls) < 20


def _bulk_rows(count: int) -> list[Row]:
    return [
        {
            "event_id": f"ev-{i:07d}",
            "experiment_id": "exp-1",
            "metric_name": "loss",
            "step": float(i),
            "client_timestamp_ms": 1_700_000_000_000 + i,
            "server_timestamp_ms": 1_800_000_000_000 - i,
        }
        for i in range(count)
    ]


def test_reader_refuses_to_truncate_an_unpageable_order() -> None:
    fetch = FetchRecorder(_bulk_rows(MAX_LIMIT + 1))
    reader = RowReader(fetch=fetch, page_size=1_000)
    with pytest.raises(sm.PagingError):
        reader.read({"sort_by": "server_timestamp"}, limit=None)


def test_reader_limit_of_the_maximum_in_an_unpageable_order_is_not_an_error() -> None:
    # limit=100,000 asks for at most the largest page: exactly that many rows, no error.
    fetch = FetchRecorder(_bulk_rows(MAX_LIMIT + 1))
    reader = RowReader(fetch=fetch, page_size=1_000)
    rows = reader.read({"sort_by": "server_timestamp"}, limit=MAX_LIMIT)
    assert len(rows) == MAX_LIMIT
    assert rows[0]["event_id"] == f"ev-{MAX_LIMIT:07d}"  # the newest server timestamp first


def test_reader_stops_with_an_error_when_the_service_ignores_the_bound() -> None:
    rows = make_rows(random.Random(21), per_step(50, 2))
    calls: list[dict[str, Any]] = []

    def ignores_bounds(params: dict[str, Any]) -> list[Row]:
        calls.append(dict(params))
        assert len(calls) < 50, "the reader is looping"
        return select(rows, as_params({"limit": params["limit"]}))

    with pytest.raises(sm.PagingError, match="did not honour"):
        RowReader(fetch=ignores_bounds, page_size=10).read({}, limit=None)
    assert len(calls) <= 3


def test_explicit_step_sort_beyond_the_largest_page_needs_no_single_page() -> None:
    # No null steps: the null block is settled by the first ordinary page, so a result
    # larger than the service's largest page still reads completely.
    fetch = FetchRecorder(make_rows(random.Random(22), per_step(60, 2)))
    got = read_ids(fetch, 10, sort_by="step")
    assert_complete(got, fetch.expected(sort_by="step"))
    assert all(call["limit"] == 10 for call in fetch.calls)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_three_key_sort_keeps_every_key_inside_a_crowded_step(direction: str) -> None:
    keys = "step,client_timestamp,server_timestamp"
    rng = random.Random(23)
    rows = make_rows(rng, [None] * 25 + [4] * 35, ts_of=lambda step: 1_700_000_000_000)
    fetch = FetchRecorder(rows)
    got = read_ids(fetch, 10, sort_by=keys, sort_direction=direction)
    assert_complete(got, fetch.expected(sort_by=keys, sort_direction=direction))
    assert all(call["sort_by"] == keys for call in fetch.calls)


def _created(
    items: list[Row], params: Params, *, newest_first: bool, cap: int = 1_000
) -> list[Row]:
    """A fake list answer: bounded by from/to (inclusive), ordered by creation time then id,
    at most ``cap`` items whatever the limit asked for."""
    low = int(_single(params, "from") or 0)
    high = int(_single(params, "to") or 2**53)
    chosen = [i for i in items if low <= i["created_at_ms"] <= high]
    chosen.sort(key=lambda i: (i["created_at_ms"], i["id"]), reverse=newest_first)
    return chosen[: min(cap, int(_single(params, "limit") or 100))]


def test_experiment_list_without_limit_reads_every_experiment(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    # 250 experiments, several created in the same millisecond.
    items = [
        experiment_wire(f"exp-{i:03d}", f"run-{i:03d}", created_at_ms=1_795_000_000_000 + i // 3)
        for i in range(250)
    ]

    cap = [100]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        params = parse_qs(urlsplit(request.url).query)
        chosen = _created(items, params, newest_first=True, cap=cap[0])
        return 200, {}, json.dumps(envelope({"experiments": chosen}))

    mocked.add_callback(responses.GET, f"{API}/experiments", callback=answer)
    expected = [e["id"] for e in _created(items, {"limit": ["1000"]}, newest_first=True)]
    # The service answers at most 100 a request, fewer than the 1,000 asked for: every page
    # is short, and the read goes on until a page brings nothing new.
    assert [e.id for e in sm.Experiment.list()] == expected
    assert len(mocked.calls) >= 4
    assert all(parse_qs(urlsplit(c.request.url).query)["limit"] == ["1000"] for c in mocked.calls)
    cap[0] = 1_000
    assert [e.id for e in sm.Experiment.list(limit=120)] == expected[:120]
    assert [e.id for e in sm.Experiment.list(limit=7)] == expected[:7]


def test_annotations_without_limit_reads_every_annotation(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    items = [
        {
            "id": f"a-{i:03d}",
            "experiment_id": "exp-1",
            "annotation": f"note {i}",
            "metadata": {},
            "created_at_ms": 1_795_000_000_000 + i // 4,
        }
        for i in range(230)
    ]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        params = parse_qs(urlsplit(request.url).query)
        chosen = _created(items, params, newest_first=False)
        return 200, {}, json.dumps(envelope({"annotations": chosen}))

    mocked.add_callback(responses.GET, f"{API}/experiments/exp-1/annotations", callback=answer)
    exp = sm.Experiment(experiment_wire(), session=session)
    assert [a.id for a in exp.annotations()] == [i["id"] for i in items]


def test_a_list_in_an_unexpected_order_is_an_error_not_a_silent_prefix(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    items = [
        experiment_wire(f"e{i}", f"r{i}", created_at_ms=1_795_000_000_000 + i) for i in range(100)
    ]
    mocked.get(f"{API}/experiments", json=envelope({"experiments": items}))  # oldest first
    with pytest.raises(sm.PagingError, match="not ordered"):
        sm.Experiment.list()


def test_paged_reads_always_ask_for_their_order() -> None:
    fetch = FetchRecorder(make_rows(random.Random(31), per_step(40, 3)))
    assert_complete(read_ids(fetch, 10), fetch.expected())
    assert {call["sort_by"] for call in fetch.calls} <= {"step,client_timestamp"}
    assert len(fetch.calls) > 1


def test_a_service_with_exclusive_bounds_is_an_error_not_lost_rows() -> None:
    rows = make_rows(random.Random(32), per_step(30, 3))

    def exclusive(params: dict[str, Any]) -> list[Row]:
        query = dict(params)
        if "from_step" in query:
            query["from_step"] = int(query["from_step"]) + 1
        return select(rows, as_params(query))

    with pytest.raises(sm.PagingError, match="inclusive bounds"):
        RowReader(fetch=exclusive, page_size=10).read({}, limit=None)


def test_a_page_out_of_the_order_asked_for_is_an_error() -> None:
    rows = make_rows(random.Random(33), per_step(30, 3))

    def server_time_order(params: dict[str, Any]) -> list[Row]:
        page = select(rows, as_params(params))
        return sorted(page, key=lambda row: row["server_timestamp_ms"])

    with pytest.raises(sm.PagingError, match="not in the order asked for"):
        RowReader(fetch=server_time_order, page_size=10).read({}, limit=None)


def test_experiment_list_reads_a_millisecond_holding_more_than_a_page(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    items = [
        experiment_wire(f"exp-{i:03d}", f"run-{i:03d}", created_at_ms=1_795_000_000_000)
        for i in range(130)
    ]
    items += [
        experiment_wire(f"old-{i:03d}", f"old-{i:03d}", created_at_ms=1_794_000_000_000 + i)
        for i in range(40)
    ]

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        params = parse_qs(urlsplit(request.url).query)
        return (
            200,
            {},
            json.dumps(envelope({"experiments": _created(items, params, newest_first=True)})),
        )

    mocked.add_callback(responses.GET, f"{API}/experiments", callback=answer)
    expected = [e["id"] for e in _created(items, {"limit": ["1000"]}, newest_first=True)]
    assert [e.id for e in sm.Experiment.list()] == expected


# -- the end of a read does not depend on the service's page cap ----------------------------

CAPPED_QUERIES = [
    pytest.param({}, id="step-asc"),
    pytest.param({"sort_direction": "desc"}, id="step-desc"),
    pytest.param({"sort_by": "client_timestamp"}, id="time-asc"),
    pytest.param({"sort_by": "client_timestamp", "sort_direction": "desc"}, id="time-desc"),
]


@pytest.mark.parametrize("query", CAPPED_QUERIES)
def test_a_service_that_caps_pages_below_the_page_size_is_read_completely(
    query: dict[str, Any],
) -> None:
    # The session asks for 100 rows a page; the service answers at most 37. Every page is
    # short, and none of them is the end: the read goes on until a page brings nothing new.
    rng = random.Random(40)
    rows = (
        make_rows(rng, [None] * 30)
        + make_rows(rng, per_step(200, 7))
        + make_rows(rng, [40] * 90)  # a step of more rows than the cap
        + make_rows(rng, per_step(60, 3, start=41))
    )
    fetch = FetchRecorder(rows, cap=37)
    got = read_ids(fetch, 100, **query)
    assert_complete(got, fetch.expected(**query))
    assert all(call["limit"] in (1, 100, MAX_LIMIT) for call in fetch.calls)


def test_a_capped_crowded_step_in_an_order_without_time_ties_is_an_error() -> None:
    # sort_by="step" leaves no bound to page a step by; a step of more rows than the
    # service's cap cannot be read whole, and the read says so.
    rng = random.Random(40)
    rows = make_rows(rng, per_step(200, 7)) + make_rows(rng, [40] * 90)
    fetch = FetchRecorder(rows, cap=37)
    with pytest.raises(sm.PagingError, match="one sort position"):
        read_ids(fetch, 100, sort_by="step")


def test_a_capped_crowded_millisecond_beyond_the_learned_cap_is_an_error() -> None:
    # 50 rows in one step and one millisecond, a service capping at 20: once the reader has
    # seen that short pages are not the end, a single page of 20 at one position is known to
    # be cut, and the read stops rather than return a prefix.
    rng = random.Random(41)
    rows = make_rows(rng, per_step(100, 2)) + make_rows(
        rng, [80] * 50, ts_of=lambda step: 1_700_000_000_999
    )
    fetch = FetchRecorder(rows, cap=20)
    with pytest.raises(sm.PagingError, match="one sort position"):
        read_ids(fetch, 100)


@pytest.mark.parametrize(
    ("query", "expected_calls"),
    [
        pytest.param({}, 2, id="asc: the page, then one that brings nothing new"),
        pytest.param({"sort_direction": "desc"}, 3, id="desc: the same, then a 1-row null probe"),
        pytest.param({"sort_by": "client_timestamp"}, 2, id="by time"),
    ],
)
def test_a_read_that_fits_one_page_costs_two_requests_and_no_rereads(
    query: dict[str, Any], expected_calls: int
) -> None:
    fetch = FetchRecorder(make_rows(random.Random(42), per_step(500, 1)))
    got = read_ids(fetch, 1_000, **query)
    assert_complete(got, fetch.expected(**query))
    assert len(fetch.calls) == expected_calls
    if query.get("sort_direction") == "desc":
        probe = fetch.calls[-1]
        assert probe["limit"] == 1
        assert probe["sort_direction"] == "asc"
        assert not any(key in probe for key in ("step", "from_step", "to_step"))
    # Only the last step's rows come twice (the inclusive bound), never a whole page.
    rows_sent = sum(len(select(fetch.rows, as_params(call))) for call in fetch.calls)
    assert rows_sent <= len(got) + 2


def test_null_steps_first_need_no_probe_when_reading_ascending() -> None:
    rng = random.Random(43)
    fetch = FetchRecorder(make_rows(rng, [None] * 5) + make_rows(rng, per_step(50, 5)))
    got = read_ids(fetch, 1_000)
    assert_complete(got, fetch.expected())
    assert [call["limit"] for call in fetch.calls] == [1_000, 1_000]
    assert "from_step" not in fetch.calls[0]


def test_the_next_page_is_requested_while_the_caller_works_on_the_current_one() -> None:
    rows = make_rows(random.Random(44), per_step(300, 3))
    second_asked = threading.Event()

    def fetch(params: dict[str, Any]) -> list[Row]:
        if params.get("from_step"):
            second_asked.set()
        return select(rows, as_params(params))

    pages = RowReader(fetch=fetch, page_size=100, prefetch=True).pages({}, limit=None)
    first = next(pages)
    # The caller has not asked for the second page yet, and its request is already out.
    assert second_asked.wait(timeout=10)
    rest = [row for page in pages for row in page]
    got = [row["event_id"] for row in first + rest]
    assert_complete(got, [r["event_id"] for r in select(rows, as_params({"limit": MAX_LIMIT}))])


def test_a_failed_prefetched_page_raises_where_the_page_is_read() -> None:
    rows = make_rows(random.Random(45), per_step(300, 3))

    def fetch(params: dict[str, Any]) -> list[Row]:
        if params.get("from_step"):
            raise sm.MetricsApiRequestError("HTTP 503: down", status_code=503, retryable=True)
        return select(rows, as_params(params))

    pages = RowReader(fetch=fetch, page_size=100, prefetch=True).pages({}, limit=None)
    assert len(next(pages)) == 100
    with pytest.raises(sm.MetricsApiRequestError, match="503"):
        next(pages)


# -- against the real local server: streaming, progress, page sizes ----------------------------


@pytest.fixture
def history(metrics_server: Any) -> Iterator[tuple[sm.Experiment, sm.Session]]:
    """2,000 rows of ``loss`` (some at null steps) and 500 of ``acc`` in one run, read by a
    session that pages 300 rows at a time."""
    session = metrics_server.session(spool_dir=None, page_size=300)
    exp = sm.Experiment.create("streamed", session=session)
    exp.ingest(
        [
            {"name": "loss", "value": i / 3, "step": None if i % 97 == 0 else i // 2}
            for i in range(2_000)
        ]
        + [{"name": "acc", "value": i / 7, "step": i} for i in range(500)],
        sync=True,
    )
    yield exp, session
    session.close()


def _requests_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if re.match(r"GET \S+/metrics\S* -> 200", r.getMessage()))


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_iter_metrics_yields_the_whole_read_in_pages(
    history: tuple[sm.Experiment, sm.Session], direction: str
) -> None:
    exp, _ = history
    pages = list(exp.iter_metrics("loss", sort_direction=direction))
    whole = exp.metrics("loss", sort_direction=direction)
    assert all(isinstance(page, sm.MetricRows) for page in pages)
    assert all(0 < len(page) <= 300 for page in pages)
    assert len(pages) >= 7
    streamed = [event_id for page in pages for event_id in page.column("event_id")]
    assert streamed == whole.column("event_id")
    assert len(set(streamed)) == 2_000
    frames = [page.to_pandas() for page in pages[:2]]  # DataFrame chunks
    assert [len(f) for f in frames] == [len(p) for p in pages[:2]]


def test_iter_metrics_page_size_and_limit(history: tuple[sm.Experiment, sm.Session]) -> None:
    exp, _ = history
    pages = list(exp.iter_metrics("acc", page_size=120))
    # Each request asks for 120; the row at the bound comes again and is dropped.
    assert all(len(p) <= 120 for p in pages)
    assert len(pages) == 5
    assert [r.step for p in pages for r in p] == list(range(500))
    limited = list(exp.iter_metrics("acc", page_size=120, limit=250))
    assert sum(len(p) for p in limited) == 250


@pytest.mark.parametrize("bad", [0, -5, 100_001, 2.5, True, "10"])
def test_a_bad_page_size_is_refused_before_any_request(
    history: tuple[sm.Experiment, sm.Session], bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    exp, _ = history
    caplog.set_level(logging.DEBUG, logger="syvain_metrics")
    with pytest.raises(sm.MetricsValidationError, match="page_size"):
        exp.iter_metrics("acc", page_size=bad)
    with pytest.raises(sm.MetricsValidationError, match="page_size"):
        sm.iter_compare([exp.series("acc")], page_size=bad)
    assert _requests_logged(caplog) == 0


def test_connect_takes_the_page_size(metrics_server: Any) -> None:
    session = sm.connect(metrics_server.api_key, host=metrics_server.url, page_size=2_000)
    try:
        assert session.page_size == 2_000
        with pytest.raises(sm.MetricsValidationError, match="page_size"):
            sm.connect(metrics_server.api_key, host=metrics_server.url, page_size=0)
        assert sm.get_session() is session  # the refused one did not replace it
    finally:
        sm.set_default_session(None)
        session.close()
    assert sm.Session(metrics_server.api_key, host=metrics_server.url).page_size == 50_000


def test_a_read_that_fits_a_page_is_the_page_and_one_confirmation(
    history: tuple[sm.Experiment, sm.Session],
    metrics_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exp, _ = history
    session = metrics_server.session(spool_dir=None)  # the default page: 50,000 rows
    try:
        caplog.set_level(logging.DEBUG, logger="syvain_metrics")
        rows = sm.Experiment.get(exp.id, session=session).metrics("acc")
        assert rows.steps == list(range(500))
        assert _requests_logged(caplog) == 2
    finally:
        session.close()


def test_progress_bars_count_the_rows_read(
    history: tuple[sm.Experiment, sm.Session], capsys: pytest.CaptureFixture[str]
) -> None:
    exp, _ = history
    assert len(exp.metrics("acc", progress=True)) == 500
    assert "500row" in capsys.readouterr().err.replace(" ", "")
    assert len(sm.compare([exp.series("acc"), exp.series("loss")], progress=True)) == 2_500
    assert "2500row" in capsys.readouterr().err.replace(" ", "")


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_progress_must_be_a_flag(history: tuple[sm.Experiment, sm.Session], bad: Any) -> None:
    exp, _ = history
    with pytest.raises(sm.MetricsValidationError, match="progress"):
        exp.metrics("acc", progress=bad)
    with pytest.raises(sm.MetricsValidationError, match="progress"):
        sm.compare([exp.series("acc")], progress=bad)
    with pytest.raises(sm.MetricsValidationError, match="progress"):
        exp.ingest([{"name": "acc", "value": 1.0, "step": 1}], progress=bad)
    assert len(exp.metrics("acc")) == 500  # nothing was written


# -- looking ahead: the next request leaves when a page's bytes arrive ----------------------


class BodyFetch:
    """A fetch that hands the raw answer (``body_of(page)``) to ``on_body`` before returning
    the decoded page, as the session does."""

    def __init__(self, rows: list[Row], body_of: Any) -> None:
        self.rows = rows
        self.body_of = body_of
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, params: dict[str, Any], on_body: Any = None) -> list[Row]:
        with self.lock:
            self.calls.append(dict(params))
            assert len(self.calls) < 200, "the reader is looping"
        page = select(self.rows, as_params(params))
        if on_body is not None:
            on_body(self.body_of(page))
        return page


def test_the_request_after_a_page_leaves_before_the_page_is_decoded() -> None:
    from syvain_metrics.client.pages import Pages as _Pages

    rows = make_rows(random.Random(46), per_step(500, 2))
    calls: list[dict[str, Any]] = []
    next_left_early = threading.Event()

    def fetch(params: dict[str, Any], on_body: Any = None) -> list[Row]:
        calls.append(dict(params))
        first_call = len(calls) == 1
        page = select(rows, as_params(params))
        if on_body is not None:
            on_body(json.dumps(envelope({"rows": page})).encode())
            if first_call:
                # "Decoding" this page: the next request must already be out.
                next_left_early.set() if _wait_for(lambda: len(calls) >= 2) else None
        return page

    pages = _Pages(fetch, prefetch=True, look_ahead=True)
    query = {"sort_by": "step,client_timestamp", "from_step": 10, "limit": 100}
    first = pages.get(query, ("from_step", "step"))
    assert next_left_early.is_set()
    assert calls[1] == {**query, "from_step": int(first[-1]["step"])}
    # The caller then asks for exactly that page: it takes the answer already on its way.
    second = pages.get(calls[1], ("from_step", "step"))
    assert second[0]["step"] == first[-1]["step"]
    assert len(calls) <= 3  # at most one more request ahead, never a run of them
    pages.close()


def _wait_for(condition: Any, seconds: float = 10.0) -> bool:
    done = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return bool(condition())


def test_a_wrong_guess_from_the_raw_bytes_costs_a_request_not_a_row() -> None:
    rows = make_rows(random.Random(47), per_step(600, 3))

    def misleading(page: list[Row]) -> bytes:
        # The bytes name a last step far beyond the real one.
        fake = [*page, {**page[-1], "step": 10_000.0, "event_id": "ev-fake"}] if page else page
        return json.dumps(envelope({"rows": fake})).encode()

    fetch = BodyFetch(rows, misleading)
    got = RowReader(fetch=fetch, page_size=100, prefetch=True, look_ahead=True).read({}, limit=None)
    expected = [r["event_id"] for r in select(rows, as_params({"limit": MAX_LIMIT}))]
    assert_complete([r["event_id"] for r in got], expected)
    assert any(call.get("from_step") == 10_000 for call in fetch.calls)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"data":{"rows":[]},"error":null}',
        b'{"data":{"rows":[{"event_id":"a","experiment_slug":"{","step":1.0}]},"error":null}',
        b'{"data":{"rows":[{"event_id":"a","experiment_slug":"x{","st',
    ],
)
def test_last_row_guesses_never_raise(body: bytes) -> None:
    from syvain_metrics.client.pages import last_row

    row = last_row(body)
    assert row is None or row["event_id"] == "a"


def test_a_step_cut_by_a_full_page_teaches_no_cap() -> None:
    # The first page holds the null steps and the first rows of step 0 only; reading the rest
    # of step 0 brings new rows, which is no sign of a cap (the page asked for was full).
    rng = random.Random(48)
    rows = (
        make_rows(rng, [None] * 36)
        + make_rows(rng, [0] * 6)
        + make_rows(rng, [7] * 100, ts_of=lambda step: 1_700_000_000_777)
    )
    fetch = FetchRecorder(rows)
    got = read_ids(fetch, 40)
    assert_complete(got, fetch.expected())
