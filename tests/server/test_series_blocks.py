"""The blocks of steps the store keeps with the events (``series_blocks``): after any mix of
batches — repeated ids within a batch and across batches, replays, steps out of order,
negative or huge steps, events without a step or without metadata — through each way a batch
is written (its JSON text, a staged batch, row by row), the blocks are exactly what a GROUP
BY over the stored events gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syvain_metrics as sm
from syvain_metrics.server.store import Store
from syvain_metrics.testing import LocalServer

BLOCK_KEY = "experiment_seq, metric_name, metadata_json, block"
BLOCKS_OF_EVENTS = (
    "SELECT experiment_seq, metric_name, metadata_json, step >> 4 AS block, count(*), "
    "min(metric_value), max(metric_value), min(step), max(step) FROM events "
    f"WHERE step IS NOT NULL GROUP BY {BLOCK_KEY} ORDER BY {BLOCK_KEY}"
)


def blocks_and_expected(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with store._reading() as db:
        kept = db.execute(f"SELECT * FROM series_blocks ORDER BY {BLOCK_KEY}").fetchall()
        expected = db.execute(BLOCKS_OF_EVENTS).fetchall()
    return [tuple(r) for r in kept], [tuple(r) for r in expected]


@pytest.fixture
def store() -> Iterator[Store]:
    made = Store()
    yield made
    made.close()


def _write(store: Store, org: str, exp: str, batch: list[dict[str, Any]], way: str) -> None:
    if way == "staged":
        with store.staging(batch) as staged, store.transaction(staged):
            store.ingest(org, exp, batch, staged=staged)
    else:
        store.ingest(org, exp, batch)


event = st.fixed_dictionaries(
    {
        "client_event_id": st.sampled_from([f"id-{i}" for i in range(30)]),
        "name": st.sampled_from(["loss", "acc"]),
        "value": st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        "step": st.one_of(
            st.none(),
            st.integers(-40, 200),
            st.sampled_from([2**62, -(2**62), 2**53 - 1]),
        ),
    },
    optional={"metadata": st.sampled_from([{}, {"split": "train"}, {"split": "valid", "k": 1}])},
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.tuples(st.lists(event, min_size=1, max_size=25), st.sampled_from(["text", "staged"])),
        min_size=1,
        max_size=6,
    ),
    replay=st.booleans(),
)
def test_blocks_are_the_group_by_of_the_stored_events(
    batches: list[tuple[list[dict[str, Any]], str]], replay: bool
) -> None:
    store = Store()
    try:
        org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
        exp = store.create_experiment(org, {"slug": "run"}).id
        other = store.create_experiment(org, {"slug": "other"}).id
        for batch, way in batches:
            _write(store, org, exp, batch, way)
            _write(store, org, other, batch[::-1], "text")
        if replay:  # every batch again: nothing is inserted, nothing counted
            before = blocks_and_expected(store)[0]
            for batch, way in batches:
                _write(store, org, exp, batch, way)
            assert blocks_and_expected(store)[0] == before
        kept, expected = blocks_and_expected(store)
        assert kept == expected
        with store._reading() as db:
            stepped = db.execute("SELECT count(*) FROM events WHERE step IS NOT NULL").fetchone()
        assert sum(row[4] for row in kept) == stepped[0]
    finally:
        store.close()


def test_a_batch_written_row_by_row_counts_once(store: Store) -> None:
    # A NUL in a name: the batch is bound row by row rather than read out of its JSON text.
    org = store.authenticate(store.use_api_keys(["ak_local_demo"])[0]).org_id
    exp = store.create_experiment(org, {"slug": "run"}).id
    batch = [
        {"client_event_id": f"r{i % 5}", "name": "lo\x00ss", "value": float(i), "step": 40 - i}
        for i in range(10)
    ]
    store.ingest(org, exp, batch)
    store.ingest(org, exp, batch)
    kept, expected = blocks_and_expected(store)
    assert kept == expected
    # The first write of each id wins: steps 40..36, values 0..4.
    assert [row[3:] for row in kept] == [(2, 5, 0.0, 4.0, 36, 40)]


def test_blocks_over_the_api_after_replays_and_resets(
    metrics_server: LocalServer, metrics_session: sm.Session
) -> None:
    run = sm.Experiment.create("blocks", session=metrics_session)
    batch = (
        [
            {"client_event_id": f"e{s}", "name": "loss", "value": s / 2, "step": s}
            for s in (33, 1, 17, 2, 16, 15, 0)
        ]
        + [
            {
                "client_event_id": f"v{s}",
                "name": "loss",
                "value": -s,
                "step": s,
                "metadata": {"split": "valid"},
            }
            for s in range(20)
        ]
        + [{"client_event_id": "none", "name": "loss", "value": 7.0, "step": None}]
    )
    run.ingest(batch, sync=True)
    run.ingest([*batch[:5], {**batch[0], "value": 1e9}], sync=True)  # replayed: ignored
    store = metrics_server.store
    kept, expected = blocks_and_expected(store)
    assert kept == expected
    org = store.authenticate(metrics_server.api_key).org_id
    assert [row[2:] for row in store.series_blocks(org, run.id, "loss")] == [
        ('{"split":"valid"}', 0, 16, -15.0, 0.0, 0, 15),
        ('{"split":"valid"}', 1, 4, -19.0, -16.0, 16, 19),
        ("{}", 0, 4, 0.0, 7.5, 0, 15),
        ("{}", 1, 2, 8.0, 8.5, 16, 17),
        ("{}", 2, 1, 16.5, 16.5, 33, 33),
    ]
    store.reset()
    assert blocks_and_expected(store) == ([], [])
