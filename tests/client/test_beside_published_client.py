"""The SDK where people migrating from the published client run it: with
``syvain-metrics-api-client`` installed beside it (which brings ``niquests`` and, with it,
``urllib3-future``, whose ``.pth`` file replaces the ``urllib3`` module at start-up).

The one-experiment flow runs in every environment CI makes (newest releases, the lowest
declared versions, and beside the published client); the test that drives both clients in
one process runs where the published client is installed, and ``.ci/run`` sets
``SYVAIN_METRICS_REQUIRE_PUBLISHED_CLIENT=1`` there so that it cannot be skipped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer


def _published_client() -> Any:
    if importlib.util.find_spec("syvain_metrics_api_client") is None:
        if os.environ.get("SYVAIN_METRICS_REQUIRE_PUBLISHED_CLIENT") == "1":
            pytest.fail("syvain-metrics-api-client is required here but not installed")
        pytest.skip("syvain-metrics-api-client is not installed in this environment")
    import syvain_metrics_api_client

    return syvain_metrics_api_client


def _urllib3_distribution() -> str:
    import urllib3

    try:
        if importlib.metadata.version("urllib3-future") == urllib3.__version__:
            return "urllib3-future"
    except importlib.metadata.PackageNotFoundError:
        pass
    return "urllib3"


def one_experiment_flow(session: sm.Session) -> list[str]:
    """whoami, create, log 1,000 in run(), read back, ingest, compare, list, folder move:
    the names of the steps that gave what was asked."""
    passed: list[str] = []
    if sm.whoami(session=session).kind == "api_key":
        passed.append("whoami")
    exp = sm.Experiment.create("beside-1", metadata={"lr": 0.1}, session=session)
    if exp.slug == "beside-1":
        passed.append("create")
    with exp.run():
        for step in range(1000):
            exp.log("loss", 1 / (step + 1), step=step)
    if sm.Experiment.get(exp.id, session=session).status == "done":
        passed.append("run")
    rows = exp.metrics("loss")
    if [row.step for row in rows] == list(range(1000)) and rows[0].value == 1.0:
        passed.append("read")
    other = sm.Experiment.create("beside-2", session=session)
    other.ingest([{"name": "loss", "value": 2.0, "step": s} for s in range(10)], sync=True)
    if len(other.metrics("loss")) == 10:
        passed.append("ingest")
    both = sm.compare([exp.series("loss"), other.series("loss")], to_step=9, session=session)
    if sorted({m.experiment_slug for m in both}) == ["beside-1", "beside-2"] and len(both) == 20:
        passed.append("compare")
    if {e.slug for e in sm.Experiment.list(session=session)} >= {"beside-1", "beside-2"}:
        passed.append("list")
    folder = sm.Folder.create("beside", session=session)
    exp.move(folder)
    if [e.slug for e in sm.Folder.get(folder.id, session=session).experiments] == ["beside-1"]:
        passed.append("move")
    return passed


def test_the_one_experiment_flow_passes_every_step(metrics_server: LocalServer) -> None:
    with metrics_server.session() as session:
        passed = one_experiment_flow(session)
    assert passed == ["whoami", "create", "run", "read", "ingest", "compare", "list", "move"]


def test_both_clients_in_one_process_share_one_server(metrics_server: LocalServer) -> None:
    client_module = _published_client()
    # The point of this environment: the published client's urllib3-future is the urllib3
    # that the SDK's transport runs on.
    assert _urllib3_distribution() == "urllib3-future"
    theirs = client_module.SyvainMetricsApiClient(metrics_server.api_key, host=metrics_server.url)
    with metrics_server.session() as ours:
        exp = sm.Experiment.create("side-by-side", session=ours)
        exp.ingest([{"name": "acc", "value": s / 10, "step": s} for s in range(5)], sync=True)

        # What the SDK wrote, the published client reads, and the other way round.
        seen = theirs.list_metrics(exp.id, metric_name="acc")
        assert [row.step for row in seen.rows] == [0, 1, 2, 3, 4]
        made = theirs.create_experiment("from-published").experiment
        theirs.ingest_metrics(
            made.id,
            [{"client_event_id": "p/0", "name": "acc", "value": 0.5, "step": 0}],
            sync=True,
        )
        read_back = sm.Experiment.get(made.id, session=ours).metrics("acc")
        assert [(row.step, row.value) for row in read_back] == [(0, 0.5)]
        assert {e.slug for e in sm.Experiment.list(session=ours)} == {
            "side-by-side",
            "from-published",
        }
        # The SDK's own errors stay its own beside urllib3-future.
        with pytest.raises(sm.MetricsApiNotFoundError):
            sm.Experiment.get("00000000-0000-0000-0000-000000000000", session=ours)
