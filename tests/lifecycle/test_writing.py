"""Writing metrics from a real training loop: ``log()`` takes a mapping of metrics for one
step (nested ones flattened with ``/``), numpy scalars and torch tensors of one element; a
value that is not a number is skipped with one warning per name; a non-finite value (NaN,
inf, -inf) never raises: it is counted, told once per name per run by a warning and an
annotation on the run, and reported by ``flush()``, the end of ``run()`` and ``close()``.
``ingest()``, the synchronous path, keeps refusing non-finite values.

Everything runs against the real local server; what ``log()`` queues is compared byte for
byte through the pipeline's own encoder.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.errors import FlushError
from syvain_metrics.pipeline.batch import encode_chunk
from syvain_metrics.testing import LocalServer

np = pytest.importorskip("numpy")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture
def session(server: LocalServer) -> Iterator[sm.Session]:
    opened = sm.Session(server.api_key, host=server.url, spool_dir=None, flush_interval=0.05)
    yield opened
    if not opened.closed:
        opened.close()


def rows_of(server: LocalServer, experiment_id: str) -> list[tuple[str, int | None, float]]:
    """(name, step, value) of what the server holds, read by a session that logged nothing."""
    with sm.Session(server.api_key, host=server.url, spool_dir=None) as reader:
        rows = sm.Experiment.get(experiment_id, session=reader).metrics()
        return [(r.name, r.step, r.value) for r in rows]


def annotations_of(exp: sm.Experiment, count: int, timeout: float = 30.0) -> list[Any]:
    """The run's annotations once there are ``count`` of them (they are recorded off the
    loop's thread), or what there is when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(exp.annotations())
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def ours(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("syvain_metrics")]


class Tensor:
    """Stands in for ``torch.Tensor`` (torch is not installed here): what ``log()`` knows
    of a tensor is its type's name and module, ``numel()`` and ``item()``."""

    __module__ = "torch"

    def __init__(self, *values: float) -> None:
        self.values = values

    def numel(self) -> int:
        return len(self.values)

    def item(self) -> float:
        (value,) = self.values
        return value


# -- the mapping form ---------------------------------------------------------------------------


def test_a_mapping_stores_each_value_once_at_its_step_with_the_shared_metadata(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("mapping", session=session)
    for step in range(20):
        exp.log({"loss": 1.0 / (step + 1), "acc": step / 20}, step=step, metadata={"split": "t"})
    exp.flush(timeout=30)
    rows = sm.Experiment.get(exp.id, session=session).metrics()
    seen = sorted((r.name, r.step, r.value) for r in rows)
    expected = sorted(
        [("loss", s, 1.0 / (s + 1)) for s in range(20)] + [("acc", s, s / 20) for s in range(20)]
    )
    assert seen == expected
    assert {r.metadata["split"] for r in rows} == {"t"}
    by_step: dict[int | None, set[Any]] = {}
    for r in rows:
        by_step.setdefault(r.step, set()).add(r.timestamp)
    assert all(len(stamps) == 1 for stamps in by_step.values())  # one call, one timestamp


def test_nested_mappings_flatten_with_a_slash(server: LocalServer, session: sm.Session) -> None:
    exp = sm.Experiment.create("nested", session=session)
    exp.log({"train": {"loss": 0.5, "acc": {"top1": 0.25}}, "lr": 0.125}, step=3)
    exp.flush(timeout=30)
    assert sorted(rows_of(server, exp.id)) == [
        ("lr", 3, 0.125),
        ("train/acc/top1", 3, 0.25),
        ("train/loss", 3, 0.5),
    ]


def test_numpy_and_torch_scalars_are_stored_as_floats(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("scalars", session=session)
    exp.log("f64", np.float64(0.5), step=np.int64(1))
    exp.log("f32", np.float32(0.25), step=np.int32(2))
    exp.log("i64", np.int64(7), step=np.uint8(3))
    exp.log("zero_d", np.array(1.5), step=4)
    exp.log("tensor", Tensor(2.5), step=Tensor(5))  # type: ignore[arg-type]
    exp.log({"m64": np.float64(0.75), "mt": Tensor(3.5), "m16": np.float16(0.5)}, step=np.int64(6))
    exp.flush(timeout=30)
    rows = sm.Experiment.get(exp.id, session=session).metrics()
    assert sorted((r.name, r.step, r.value) for r in rows) == [
        ("f32", 2, 0.25),
        ("f64", 1, 0.5),
        ("i64", 3, 7.0),
        ("m16", 6, 0.5),
        ("m64", 6, 0.75),
        ("mt", 6, 3.5),
        ("tensor", 5, 2.5),
        ("zero_d", 4, 1.5),
    ]
    assert {type(r.value) for r in rows} == {float}


def test_real_torch_tensors_of_one_element_are_stored_as_floats(
    server: LocalServer, session: sm.Session
) -> None:
    torch = pytest.importorskip("torch")
    exp = sm.Experiment.create("torch", session=session)
    weights = torch.ones(3, requires_grad=True)
    loss = (weights * 0.5).sum()  # a 0-d tensor that requires grad
    exp.log("loss", loss, step=torch.tensor(1))
    with pytest.warns(UserWarning, match="nan became NaN at step 2"):
        exp.log({"acc": torch.tensor([0.25]), "nan": torch.tensor(float("nan"))}, step=2)
    with pytest.raises(sm.MetricsValidationError, match="value"):
        exp.log("batch", torch.ones(2), step=3)
    exp.flush(timeout=30)
    assert sorted(rows_of(server, exp.id)) == [("acc", 2, 0.25), ("loss", 1, 1.5)]
    assert exp.non_finite == {"nan": 1}


def test_a_numpy_scalar_is_queued_exactly_as_the_python_float(
    session: sm.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = sm.Experiment({"id": "exp-bytes", "slug": "bytes"}, session=session)
    queued: list[Any] = []
    monkeypatch.setattr(session.logs.sender, "put", queued.append)
    call = {"metadata": {"split": "train"}, "timestamp_ms": 1_700_000_000_000}
    exp.log("loss", 0.1, step=40, client_event_id="e1", **call)  # type: ignore[arg-type]
    exp.log("loss", np.float64(0.1), step=np.int64(40), client_event_id="e1", **call)  # type: ignore[arg-type]
    exp.log("loss", Tensor(0.1), step=Tensor(40), client_event_id="e1", **call)  # type: ignore[arg-type]
    plain, numpy_made, torch_made = (encode_chunk([item]).array for item in queued)
    assert plain == numpy_made == torch_made
    assert b'"value":0.1,"step":40' in plain


def test_a_tensor_of_several_values_is_not_a_number(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("batch", session=session)
    with pytest.raises(sm.MetricsValidationError, match=r"value: Must be a number"):
        exp.log("loss", Tensor(1.0, 2.0), step=0)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="'batch_loss' of run 'batch': a Tensor is not a number"):
        exp.log({"batch_loss": Tensor(1.0, 2.0), "loss": 1.0}, step=0)
    exp.flush(timeout=30)
    assert rows_of(server, exp.id) == [("loss", 0, 1.0)]


def test_values_that_are_not_numbers_are_skipped_with_one_warning_per_name(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("mixed", session=session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(10):
            exp.log(
                {"loss": 0.5, "tag": "best", "hist": [1, 2], "none": None, "flag": True}, step=step
            )
    told = ours(caught)
    assert len(told) == 4
    for name, kind in (("tag", "a str"), ("hist", "a list"), ("none", "None"), ("flag", "a bool")):
        assert (
            sum(f"skipped {name!r} of run 'mixed': {kind} is not a number" in t for t in told) == 1
        )
    assert all(w.category is UserWarning and w.filename == __file__ for w in caught)
    exp.flush(timeout=30)
    assert sorted(rows_of(server, exp.id)) == [("loss", s, 0.5) for s in range(10)]
    assert exp.non_finite == {}  # skipped, not counted as non-finite

    other = sm.Experiment.create("mixed-2", session=session)
    with pytest.warns(UserWarning, match="'tag' of run 'mixed-2'"):  # once per name per run
        other.log({"tag": "x"}, step=0)


# -- bad input: a clear error, nothing queued -------------------------------------------------------


NESTED_TOO_LONG = {"a" * 300: {"b" * 300: 1.0}}
SELF_CONTAINING: dict[str, Any] = {"loss": 1.0}
SELF_CONTAINING["again"] = SELF_CONTAINING


@pytest.mark.parametrize(
    ("metrics", "options", "named"),
    [
        ({"loss": 1.0, "": 2.0}, {}, r"metrics\[''\]: A metric name must not be empty"),
        ({"loss": 1.0, "x" * 501: 2.0}, {}, "at most 500 characters, got 501"),
        ({"loss": 1.0, 7: 2.0}, {}, "must be a string"),
        ({"loss": 1.0, "train": {"": 2.0}}, {}, r"metrics\['train/'\]"),
        (NESTED_TOO_LONG, {}, "got 601"),
        (SELF_CONTAINING, {}, "at most 500 characters"),
        ({"loss": 1.0, "bad\ud800": 2.0}, {}, "UTF-8"),
        ({"loss": 1.0, "acc": float("nan")}, {"step": -1}, r"^Invalid input: step:"),
        ({"loss": 1.0}, {"metadata": {"lr": float("nan")}}, r"^Invalid input: metadata"),
        ({"loss": 1.0}, {"timestamp_ms": "now"}, r"^Invalid input: timestamp_ms"),
        ({"loss": 1.0}, {"client_event_id": "e1"}, "each value gets its own"),
        ({"loss": 1.0, "big": 10**400}, {}, r"metrics\['big'\]"),
    ],
)
def test_a_bad_mapping_raises_and_queues_nothing(
    server: LocalServer, session: sm.Session, metrics: Any, options: Any, named: str
) -> None:
    exp = sm.Experiment.create("bad-mapping", session=session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(sm.MetricsValidationError, match=named):
            exp.log(metrics, step=options.pop("step", 1), **options)
    assert ours(caught) == []
    assert exp.pending_logs == 0
    assert exp.non_finite == {}  # a NaN beside the bad input is not counted either
    exp.log("after", 1.0, step=2)  # the session goes on as before
    exp.flush(timeout=30)
    assert rows_of(server, exp.id) == [("after", 2, 1.0)]


def test_a_value_with_a_mapping_is_refused(session: sm.Session) -> None:
    exp = sm.Experiment({"id": "exp-both", "slug": "both"}, session=session)
    with pytest.raises(sm.MetricsValidationError, match="the mapping holds the values"):
        exp.log({"loss": 1.0}, 2.0, step=0)  # type: ignore[call-overload]
    with pytest.raises(sm.MetricsValidationError, match="needs a value"):
        exp.log("loss", step=0)  # type: ignore[call-overload]
    assert exp.pending_logs == 0


# -- non-finite values ----------------------------------------------------------------------------


def test_a_nan_at_step_500_is_counted_annotated_and_reported_while_the_loop_goes_on(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("diverged", session=session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with exp.run():
            for step in range(1_000):
                exp.log("loss", float("nan") if step == 500 else 1.0 / (step + 1), step=step)
            finished = step
    assert finished == 999
    assert exp.refresh().status == "done"
    rows = rows_of(server, exp.id)
    assert len(rows) == 999
    assert sorted(s for _, s, _ in rows) == [s for s in range(1_000) if s != 500]
    assert exp.non_finite == {"loss": 1}
    (note,) = annotations_of(exp, 1)
    assert note.text == "loss became NaN at step 500"
    assert note.metadata == {"metric": "loss", "step": 500, "value": "NaN"}
    told = ours(caught)
    assert len(told) == 2, told
    assert "loss became NaN at step 500 in run 'diverged'" in told[0]
    assert told[1] == "syvain_metrics: 1 non-finite value of loss was not sent (run 'diverged')"


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (np.float64("nan"), "NaN"),
        (np.float32("-inf"), "-inf"),
        (Tensor(float("nan")), "NaN"),
    ],
)
def test_every_non_finite_value_is_told_once_per_name_per_run(
    server: LocalServer, session: sm.Session, bad: Any, shown: str
) -> None:
    runs = [sm.Experiment.create(f"run-{i}", session=session) for i in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for exp in runs:
            for step in range(40_000, 40_010):
                exp.log("loss", bad, step=step)
                exp.log({"train": {"acc": bad}, "lr": 0.1}, step=step)
    told = ours(caught)
    assert len(told) == 4, told  # two names, two runs
    assert all(w.filename == __file__ for w in caught)  # the warning points at the log() call
    assert f"loss became {shown} at step 40,000 in run 'run-0'" in told[0]
    assert f"train/acc became {shown} at step 40,000 in run 'run-0'" in told[1]
    for exp in runs:
        assert exp.non_finite == {"loss": 10, "train/acc": 10}
        with pytest.warns(UserWarning, match="10 non-finite values of loss were not sent"):
            exp.flush(timeout=30)
        assert sorted(rows_of(server, exp.id)) == [("lr", s, 0.1) for s in range(40_000, 40_010)]
        notes = annotations_of(exp, 2)
        assert sorted(a.text for a in notes) == [
            f"loss became {shown} at step 40,000",
            f"train/acc became {shown} at step 40,000",
        ]
        assert {a.metadata["value"] for a in notes} == {shown}


def test_where_warnings_are_errors_the_call_has_done_its_work_before_one_raises(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("strict", session=session)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as `python -W error` or pytest's filterwarnings
        with pytest.raises(UserWarning, match="acc became NaN at step 1"):
            exp.log({"loss": 1.0, "acc": float("nan"), "tag": "x"}, step=1)
        exp.log({"loss": 2.0, "acc": float("nan"), "tag": "x"}, step=2)  # told already
        assert exp.non_finite == {"acc": 2}
        with pytest.raises(UserWarning, match="2 non-finite values of acc"):
            exp.flush(timeout=30)
    assert sorted(rows_of(server, exp.id)) == [("loss", 1, 1.0), ("loss", 2, 2.0)]
    assert [a.text for a in annotations_of(exp, 1)] == ["acc became NaN at step 1"]


def test_a_bad_name_with_a_nan_still_raises_and_counts_nothing(session: sm.Session) -> None:
    exp = sm.Experiment({"id": "exp-bad-nan", "slug": "bad-nan"}, session=session)
    with pytest.raises(sm.MetricsValidationError, match="name"):
        exp.log("", float("nan"), step=1)
    with pytest.raises(sm.MetricsValidationError, match="step"):
        exp.log("loss", float("nan"), step=-1)
    assert exp.non_finite == {}


def test_flush_warns_once_about_what_it_did_not_send(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("flush-report", session=session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp.log("loss", float("nan"), step=1)
        exp.log("loss", float("inf"), step=2)
        exp.log("acc", float("nan"), step=2)
        exp.log("acc", 0.5, step=3)
        exp.flush(timeout=30)
        first = ours(caught)
        assert exp.flush(timeout=30) == 0  # already told
        assert ours(caught) == first
    assert first[-1] == (
        "syvain_metrics: 2 non-finite values of loss were not sent (run 'flush-report'); "
        "1 non-finite value of acc was not sent (run 'flush-report')"
    )
    assert exp.non_finite == {"loss": 2, "acc": 1}  # the counts stay readable
    assert rows_of(server, exp.id) == [("acc", 3, 0.5)]


def test_a_flush_error_carries_the_counts_and_the_next_good_flush_tells_them(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("flush-error", session=session)
    server.faults.reject_metric("poison")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp.log("poison", 1.0, step=0)
        exp.log("loss", float("nan"), step=1)
        with pytest.raises(FlushError) as raised:
            exp.flush(timeout=30)
        before = len(ours(caught))
        assert exp.flush(timeout=30) == 0
        after = ours(caught)
    error = raised.value
    assert error.non_finite == {"loss": 1}
    assert "1 rejected by the service" in str(error)
    assert "1 non-finite value not sent (loss: 1)" in str(error)
    assert before == 1  # the first NaN's own warning; the error told the count
    assert (
        after[-1] == "syvain_metrics: 1 non-finite value of loss was not sent (run 'flush-error')"
    )


def test_close_reports_what_was_never_sent(server: LocalServer) -> None:
    session = sm.Session(server.api_key, host=server.url, spool_dir=None)
    exp = sm.Experiment.create("closing", session=session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp.log("loss", float("nan"), step=0)  # the only event: the sender never starts
        session.close()
    assert ours(caught)[-1] == (
        "syvain_metrics: 1 non-finite value of loss was not sent (run 'closing')"
    )


def test_a_run_that_ends_with_a_flush_error_carries_the_counts(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("run-error", session=session)
    server.faults.reject_metric("poison")
    run = exp.run(flush_timeout=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run.__enter__()
        exp.log("poison", 1.0, step=0)
        exp.log({"loss": float("nan"), "acc": float("inf")}, step=1)
        with pytest.raises(FlushError) as raised:
            run.__exit__(None, None, None)
    assert raised.value.non_finite == {"loss": 1, "acc": 1}
    assert exp.refresh().status == "error"
    # An error carries the counts, but only a report that succeeds tells them as a warning.
    with pytest.warns(UserWarning, match=r"1 non-finite value of loss was not sent \(run 'run-err"):
        session.close()


def test_the_counts_belong_to_the_run_and_survive_pickling_in_a_flush_error(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("counted", session=session)
    other = sm.Experiment.create("other", session=session)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp.log("loss", float("nan"), step=1)
        other.log({"loss": float("inf"), "acc": float("nan")}, step=1)
        assert sm.Experiment.get(exp.id, session=session).non_finite == {"loss": 1}
        assert other.non_finite == {"loss": 1, "acc": 1}
        server.faults.delay("ingest_metrics", seconds=5)
        other.log("late", 1.0, step=2)
        with pytest.raises(FlushError) as raised:
            session.flush(timeout=0.5)  # every run of the session, summed by name
    assert raised.value.non_finite == {"loss": 2, "acc": 1}
    copy = pickle.loads(pickle.dumps(raised.value))
    assert copy.non_finite == {"loss": 2, "acc": 1}
    assert str(copy) == str(raised.value)


def test_threads_logging_non_finite_values_are_counted_exactly_and_told_once(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("threads", session=session)

    def loop() -> None:
        for step in range(2_500):
            exp.log("loss", float("nan"), step=step)
            exp.log("ok", 1.0, step=step)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workers = [threading.Thread(target=loop) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert len(ours(caught)) == 1
    assert exp.non_finite == {"loss": 10_000}
    with pytest.warns(UserWarning, match="10,000 non-finite values of loss"):
        exp.flush(timeout=60)
    assert len(annotations_of(exp, 1)) == 1
    assert sorted(step for _, step, _ in rows_of(server, exp.id)) == sorted(list(range(2_500)) * 4)


def test_ingest_keeps_refusing_non_finite_values_and_names_them(
    server: LocalServer, session: sm.Session
) -> None:
    exp = sm.Experiment.create("ingest-nan", session=session)
    for bad in (float("nan"), float("inf"), float("-inf"), np.float64("nan")):
        metrics = [{"name": "loss", "value": 1.0, "step": s} for s in range(5)]
        metrics[3]["value"] = bad
        with pytest.raises(sm.MetricsValidationError, match=r"metrics\[3\]\.value: .*finite"):
            exp.ingest(metrics)
    assert rows_of(server, exp.id) == []
    assert exp.non_finite == {}


# -- typing ---------------------------------------------------------------------------------------

TYPED = """
import numpy as np
import syvain_metrics as sm

exp = sm.Experiment.create("typed")
exp.log("loss", 0.5, step=1)
exp.log("loss", np.float32(0.5), step=np.int64(1), metadata={"split": "train"})
exp.log({"loss": 0.5, "train": {"acc": 0.9}}, step=1, metadata={"split": "train"})
exp.log({"loss": 0.5}, step=1, client_event_id="e1")
exp.log("loss", "0.5", step=1)
"""


def test_both_forms_type_check_and_their_mistakes_do_not(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="the typing check needs the 'dev' extra")
    (tmp_path / "user.py").write_text(TYPED, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".c"), "user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    lines = TYPED.splitlines()
    assert [int(e.split(":")[1]) for e in errors] == [len(lines) - 1, len(lines)], done.stdout
    assert all("[call-overload]" in e for e in errors), done.stdout
