"""The compare page's data route on long series, whose slices by step are summed from the
store's blocks of steps rather than read point by point: on random data, every slice holds
exactly the points whose steps it covers (their count, lowest and highest value), a slice of
one point is that point, and no point is lost."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("jinja2", reason="the dashboard needs the 'local' extra")

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syvain_metrics.server.dashboard.compare import SIGNIFICANT
from syvain_metrics.testing import LocalServer


def _rounded(value: float, count: int) -> float:
    return value if count == 1 else float(f"{value:.{SIGNIFICANT}g}")


def _check_series(series: dict[str, Any], points: list[tuple[int | None, float]]) -> None:
    stepped = [(s, v) for s, v in points if s is not None]
    assert series["unplaced"] == len(points) - len(stepped)
    assert sum(series["n"]) == len(stepped)  # no point lost, none counted twice
    x0, x1 = series["x0"], series["x1"]
    assert all(a <= b for a, b in zip(x0, x1, strict=True))
    assert all(b < a for a, b in zip(x0[1:], x1[:-1], strict=True))  # in order, apart
    for low_step, high_step, count, low, high in zip(
        x0, x1, series["n"], series["lo"], series["hi"], strict=True
    ):
        inside = [v for s, v in stepped if low_step <= s <= high_step]
        assert count == len(inside)
        assert low == _rounded(min(inside), count)
        assert high == _rounded(max(inside), count)
        assert {low_step, high_step} <= {s for s, _ in stepped if low_step <= s <= high_step}


sub_series = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 4_000)),
        st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False),
    ),
    min_size=1,
    max_size=400,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    train=sub_series,
    valid=sub_series,
    width=st.integers(16, 40),
    ends=st.tuples(st.integers(0, 50), st.integers(2_000, 100_000)),
)
def test_slices_of_long_series_hold_exactly_their_points(
    metrics_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    train: list[tuple[int | None, float]],
    valid: list[tuple[int | None, float]],
    width: int,
    ends: tuple[int, int],
) -> None:
    store = metrics_server.store
    store.reset()
    org = store.authenticate(metrics_server.api_key).org_id
    run = store.create_experiment(org, {"slug": "long"}).id
    # Both ends set, so the series spans at least ``width`` blocks of 16 steps.
    train = [(ends[0], 1.5), *train, (ends[1], -2.5)]
    events = {"train": train, "valid": valid}
    batch = [
        {
            "client_event_id": f"{split}-{i}",
            "name": "loss",
            "value": value,
            "step": step,
            "metadata": {"split": split},
        }
        for split, points in events.items()
        for i, (step, value) in enumerate(points)
    ]
    store.ingest(org, run, batch[: len(batch) // 2])
    store.ingest(org, run, batch)  # the first half again: stored once
    http = requests.Session()
    assert http.get(metrics_server.dashboard_link(), timeout=30).ok

    def no_point_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a long series is read from its blocks")

    monkeypatch.setattr(store, "metric_buckets", no_point_reads)
    reply = http.get(
        f"{metrics_server.url}/dashboard/data/compare",
        params={"experiments": run, "metric": "loss", "width": str(width)},
        timeout=30,
    )
    monkeypatch.undo()
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    found = {s["metadata"]["split"]: s for s in answer["runs"][0]["series"]}
    assert set(found) == {"train", "valid"} - ({"valid"} if not valid else set())
    for split, series in found.items():
        assert len(series["n"]) <= width
        _check_series(series, events[split])
    assert answer["points"] == len(train) + len(valid)


def test_a_short_series_and_the_time_axis_read_the_points(metrics_server: LocalServer) -> None:
    store = metrics_server.store
    org = store.authenticate(metrics_server.api_key).org_id
    run = store.create_experiment(org, {"slug": "short"}).id
    points = [(s, float(s % 7)) for s in range(0, 200)]  # 13 blocks: fewer than 16 slices
    store.ingest(
        org,
        run,
        [{"client_event_id": str(s), "name": "loss", "value": v, "step": s} for s, v in points],
    )
    http = requests.Session()
    assert http.get(metrics_server.dashboard_link(), timeout=30).ok
    for x in ("step", "time"):
        reply = http.get(
            f"{metrics_server.url}/dashboard/data/compare",
            params={"experiments": run, "metric": "loss", "width": "16", "x": x},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        [series] = reply.json()["runs"][0]["series"]
        assert sum(series["n"]) == 200
        if x == "step":
            assert len(series["n"]) == 16  # the requested slices, as before
            _check_series(series, points)
