"""Ranks of a distributed job: detected from the launcher's environment; with
``ranks="all"`` eight ranks creating one slug at once get one experiment and every event
carries its rank; with ``ranks="zero"`` the other ranks send nothing, start no thread and
make no spool; only rank 0 changes the run's status.

The ranks are real processes (``multiprocessing`` spawn, as torchrun starts them) against
the real local server.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.client.ranks import RankInfo, detect, rank_mode
from syvain_metrics.testing import LocalServer
from tests.lifecycle.rank_job import EVENTS, rank_job

WORLD = 8


# -- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"},
            RankInfo(3, 1, 8, "torchrun"),
            id="torchrun",
        ),
        pytest.param(
            {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16"},
            RankInfo(5, 1, 16, "slurm"),
            id="slurm",
        ),
        pytest.param(
            {
                "OMPI_COMM_WORLD_RANK": "2",
                "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                "OMPI_COMM_WORLD_SIZE": "4",
            },
            RankInfo(2, 0, 4, "openmpi"),
            id="openmpi",
        ),
        pytest.param({"PMI_RANK": "7", "PMI_SIZE": "8"}, RankInfo(7, 7, 8, "pmi"), id="pmi"),
        pytest.param(
            # torchrun under srun: the SLURM task is one per node, the rank is torchrun's
            {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "RANK": "9", "WORLD_SIZE": "16"},
            RankInfo(9, 9, 16, "torchrun"),
            id="torchrun-under-slurm",
        ),
        pytest.param({}, RankInfo(0, 0, 1, None), id="no-launcher"),
        pytest.param({"RANK": "8", "WORLD_SIZE": "8"}, RankInfo(0, 0, 1, None), id="rank-too-big"),
        pytest.param({"RANK": "x", "WORLD_SIZE": "8"}, RankInfo(0, 0, 1, None), id="not-a-number"),
        pytest.param({"RANK": "-1", "WORLD_SIZE": "2"}, RankInfo(0, 0, 1, None), id="negative"),
    ],
)
def test_the_rank_is_read_from_each_launchers_environment(
    environ: dict[str, str], expected: RankInfo
) -> None:
    assert detect(environ) == expected


def test_the_rank_mode_comes_from_the_session_then_the_environment() -> None:
    assert rank_mode(None, {}) == "zero"
    assert rank_mode(None, {"SYVAIN_METRICS_RANKS": " All "}) == "all"
    assert rank_mode("zero", {"SYVAIN_METRICS_RANKS": "all"}) == "zero"
    with pytest.raises(sm.MetricsValidationError, match="SYVAIN_METRICS_RANKS"):
        rank_mode(None, {"SYVAIN_METRICS_RANKS": "some"})


def test_a_bad_rank_mode_makes_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sm.MetricsValidationError, match="ranks"):
        sm.Session("ak_org_123", host="http://127.0.0.1:9", ranks="every")


def test_the_session_and_the_package_tell_the_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    session = sm.Session("ak_org_123", host="http://127.0.0.1:9", spool_dir=None)
    try:
        assert session.rank == RankInfo(2, 2, 4, "torchrun") == sm.rank_info()
        assert (session.ranks, session.writes, session.is_main_process) == ("zero", False, False)
    finally:
        session.close()


# -- eight ranks at once, against the real server ---------------------------------------------------


def run_ranks(server: LocalServer, tmp_path: Path, mode: str, slug: str) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WORLD)
    rank_zero_done = context.Barrier(WORLD)
    report = context.Queue()
    ranks = [
        context.Process(
            target=rank_job,
            args=(
                rank,
                WORLD,
                mode,
                server.url,
                server.api_key,
                str(tmp_path),
                slug,
                start,
                rank_zero_done,
                report,
            ),
        )
        for rank in range(WORLD)
    ]
    for process in ranks:
        process.start()
    results = sorted(report.get(timeout=240) for _ in ranks)
    for process in ranks:
        process.join(60)
        assert process.exitcode == 0
    return results


def read_run(server: LocalServer, slug: str) -> tuple[sm.Experiment, sm.MetricRows]:
    with server.session(spool_dir=None) as session:
        (exp,) = sm.Experiment.list(slug=slug, session=session)
        return exp, exp.metrics("loss")


def test_all_ranks_write_one_experiment_each_event_tagged_with_its_rank(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    results = run_ranks(metrics_server, tmp_path, "all", "ranks-all")

    exp, rows = read_run(metrics_server, "ranks-all")  # one experiment with this slug
    assert {experiment_id for _, experiment_id, *_ in results} == {exp.id}
    assert Counter(row.metadata["rank"] for row in rows) == dict.fromkeys(range(WORLD), EVENTS)
    for row in rows:
        expected = {"rank": row.metadata["rank"]}
        if row.metadata["rank"] > 0:
            expected["split"] = "train"  # the user's own metadata, with the rank beside it
        assert row.metadata == expected
    assert len({row.event_id for row in rows}) == len(rows) == WORLD * EVENTS
    # Ranks > 0 ran run() and fail() after rank 0's run was done: nothing of theirs applied.
    assert (exp.status, exp.error_name) == ("done", None)


def test_with_rank_zero_only_the_other_ranks_send_nothing_and_make_nothing(
    metrics_server: LocalServer, tmp_path: Path
) -> None:
    results = run_ranks(metrics_server, tmp_path, "zero", "ranks-zero")

    exp, rows = read_run(metrics_server, "ranks-zero")
    assert results[0][1] == exp.id
    assert sorted(row.step or 0 for row in rows) == list(range(EVENTS))  # rank 0's only
    assert all(row.metadata == {} for row in rows)
    for rank, experiment_id, threads, spooled, shown in results[1:]:
        assert experiment_id is None
        assert threads == 0, f"rank {rank} started {threads} threads"
        assert not spooled, f"rank {rank} made a spool"
        assert f"stand-in on rank {rank} of {WORLD}" in shown
    assert (exp.status, exp.error_name) == ("done", None)


# -- the stand-in, up close ---------------------------------------------------------------------------


def test_a_stand_in_costs_nothing_and_says_why_it_cannot_be_read(
    metrics_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    session = metrics_server.session(spool_dir=tmp_path / "spool")
    try:
        with pytest.raises(sm.MetricsValidationError):
            sm.Experiment.create("", session=session)  # bad input fails on every rank
        exp = sm.Experiment.create("stand-in", metadata={"lr": 0.1}, session=session)
        with exp.run():
            exp.log("loss", 0.5, step=0)
            exp.annotate("checkpoint")
            assert exp.ingest([{"name": "loss", "value": 1.0, "step": 1}]).count == 0
        assert (exp.flush(), exp.pending_logs, exp.finish(), exp.slug) == (0, 0, exp, "stand-in")
        for read in (exp.metrics, exp.refresh, lambda: exp.url):
            with pytest.raises(sm.MetricsApiError, match=r"stand-in on rank 3 of 4.*ranks=\"all\""):
                read()
        assert not session.logs.started
        assert not (tmp_path / "spool").exists()
    finally:
        session.close()
    with metrics_server.session(spool_dir=None) as reader:
        assert len(sm.Experiment.list(session=reader)) == 0  # nothing was created


def test_every_rank_writes_with_its_rank_unless_the_event_names_its_own(
    metrics_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with metrics_server.session(spool_dir=None) as rank_zero:
        first = sm.Experiment.create("tagged", session=rank_zero)  # rank 0 made it first
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with metrics_server.session(spool_dir=tmp_path, ranks="all") as session:
        exp = sm.Experiment.create("tagged", session=session)  # no 409: the same run
        with exp.run():
            exp.log("loss", 1.0, step=0)
            exp.log("loss", 2.0, step=1, metadata={"rank": "mine", "split": "val"})
        assert exp.id == first.id
        rows = exp.metrics("loss")
        assert [row.metadata for row in rows] == [{"rank": 1}, {"rank": "mine", "split": "val"}]
        assert exp.refresh().status == "created"  # run() on rank 1 changed no status
