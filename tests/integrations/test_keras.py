"""SyvainKerasCallback on a real Keras 3 fit (torch backend, CPU, a one-layer model) against
the real local server: every value once at the optimizer's step, failures ending ``error``,
ranks other than 0 sending nothing, NaN losses, resumed fits as one curve, bad arguments and
a service that is down."""

from __future__ import annotations

import copy
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.integrations.conftest import framework
from tests.integrations.jobs import RANK_ONE, assert_nothing_sent, run_job

keras = framework("keras")

from syvain_metrics.integrations.keras import SyvainKerasCallback  # noqa: E402

# 64 rows, batches of 16, a quarter held out: 3 training batches per epoch.
STEPS = 3


def data(rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((rows, 4), dtype=np.float32)
    return x, x.sum(axis=1, keepdims=True)


def model(loss: Any = "mse") -> Any:
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="tiny")
    net.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, metrics=["mae"])
    return net


def fit(net: Any, callback: Any, **options: Any) -> Any:
    x, y = data()
    options.setdefault("epochs", 2)
    return net.fit(
        x,
        y,
        batch_size=16,
        validation_split=0.25,
        shuffle=False,
        verbose=0,
        callbacks=[callback, *options.pop("more", [])],
        **options,
    )


def stored(slug: str) -> sm.Experiment:
    runs = [e for e in sm.Experiment.list() if e.slug == slug]
    assert len(runs) == 1, [e.slug for e in sm.Experiment.list()]
    # After the annotations and the status change still on their way (a NaN's note, say).
    return runs[0].refresh()


def test_a_fit_logs_every_value_once_at_the_optimizer_step(metrics_session: sm.Session) -> None:
    history = fit(model(), SyvainKerasCallback("keras-fit", metadata={"data": "v1"}))
    exp = stored("keras-fit")
    assert exp.status == "done"
    assert exp.metadata["data"] == "v1"
    assert exp.metadata["model"] == "tiny"
    assert exp.metadata["optimizer.name"] == "sgd"
    assert (exp.metadata["epochs"], exp.metadata["steps_per_epoch"]) == (2, STEPS)
    for name in ("loss", "mae"):
        batches = exp.metrics(f"batch/{name}")
        assert batches.steps == [1, 2, 3, 4, 5, 6]
    for name in ("loss", "mae", "val_loss", "val_mae"):
        epochs = exp.metrics(f"epoch/{name}")
        assert epochs.steps == [3, 6]
        assert epochs.values == pytest.approx(history.history[name])
    assert exp.metrics("epoch").values == [0, 1]
    # The epoch's value is the last batch's running mean: both at the epoch's last step.
    assert exp.metrics("batch/loss", step=3).values == exp.metrics("epoch/loss", step=3).values


def test_epoch_values_only_and_early_stopping_ends_done(metrics_session: sm.Session) -> None:
    stop = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(net, "stop_training", epoch == 1)
    )
    net = model()
    fit(net, SyvainKerasCallback("keras-stop", log_batches=False), epochs=5, more=[stop])
    exp = stored("keras-stop")
    assert exp.status == "done"
    assert exp.metrics("epoch/loss").steps == [3, 6]
    assert [c.metric_name for c in exp.catalog() if c.metric_name.startswith("batch/")] == []


class LoaderError(RuntimeError):
    pass


def raise_at_batch(epoch: int, batch: int) -> Any:
    seen = {"epoch": -1}

    def begin(index: int, logs: Any) -> None:
        if seen["epoch"] == epoch and index == batch:
            raise LoaderError(f"data loader failed at epoch {epoch} batch {batch}")

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda index, logs: seen.update(epoch=index), on_batch_begin=begin
    )


def test_a_fit_that_raises_inside_the_block_ends_error(metrics_session: sm.Session) -> None:
    with pytest.raises(LoaderError), SyvainKerasCallback("keras-fails") as callback:
        fit(model(), callback, more=[raise_at_batch(1, 1)])
    exp = stored("keras-fails")
    assert (exp.status, exp.error_name, exp.error_detail) == (
        "error",
        "LoaderError",
        "data loader failed at epoch 1 batch 1",
    )
    assert exp.metrics("batch/loss").steps == [1, 2, 3, 4]  # up to the failure
    assert exp.metrics("epoch/loss").steps == [3]


def test_a_fit_left_open_ends_error_when_the_callback_fits_again(
    metrics_session: sm.Session,
) -> None:
    callback = SyvainKerasCallback("keras-retried")
    net = model()
    with pytest.raises(LoaderError):
        fit(net, callback, more=[raise_at_batch(0, 2)])  # caught: no block, no hook
    assert stored("keras-retried").status == "running"
    fit(net, callback, epochs=1)  # the same fit again, the optimizer at step 2
    exp = stored("keras-retried")
    assert exp.status == "done"
    # The optimizer went on from step 2: the second fit's batches are steps 3-5.
    assert exp.metrics("batch/loss").steps == [1, 2, 3, 4, 5]
    texts = [a.annotation for a in exp.annotations()]
    assert "resumed from step 2" in texts


def test_nan_loss_mid_fit_training_goes_on_and_is_annotated(
    metrics_session: sm.Session,
) -> None:
    at = {"batch": (-1, -1)}

    def loss(y_true: Any, y_pred: Any) -> Any:
        mse = keras.ops.mean(keras.ops.square(y_true - y_pred))
        if at["batch"] == (0, 1):  # epoch 0's second batch: a NaN loss, finite gradients
            return mse + keras.ops.stop_gradient(keras.ops.convert_to_tensor(float("nan")))
        return mse

    where = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: at.update(epoch=epoch),
        on_batch_begin=lambda batch, logs: at.update(batch=(at["epoch"], batch)),
    )
    history = fit(model(loss), SyvainKerasCallback("keras-nan"), epochs=2, more=[where])
    assert len(history.history["loss"]) == 2  # the fit went on
    exp = stored("keras-nan")
    assert exp.status == "done"
    # Keras's running means are NaN from batch 2 to the end of epoch 0, finite after.
    assert exp.metrics("batch/loss").steps == [1, 4, 5, 6]
    assert exp.metrics("epoch/loss").steps == [6]
    assert exp.metrics("batch/mae").steps == [1, 2, 3, 4, 5, 6]
    notes = [a for a in exp.annotations() if a.metadata.get("metric") == "batch/loss"]
    assert [(n.metadata["step"], n.metadata["value"]) for n in notes] == [(2, "NaN")]


@pytest.mark.parametrize("rebuilt", [False, True], ids=["optimizer-kept", "optimizer-rebuilt"])
def test_a_fit_resumed_with_initial_epoch_continues_the_run_as_one_curve(
    metrics_session: sm.Session, rebuilt: bool
) -> None:
    net = model()
    fit(net, SyvainKerasCallback("keras-resumed"), epochs=2)
    if rebuilt:  # a new optimizer: its count starts at 0 again
        net.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    fit(net, SyvainKerasCallback("keras-resumed"), epochs=4, initial_epoch=2)
    exp = stored("keras-resumed")
    assert exp.status == "done"
    assert exp.metrics("epoch/loss", last_per_step=True).steps == [3, 6, 9, 12]
    assert exp.metrics("batch/loss", last_per_step=True).steps == list(range(1, 13))
    assert exp.metrics("epoch", last_per_step=True).values == [0, 1, 2, 3]
    assert [a.annotation for a in exp.annotations()] == ["resumed from step 6"]


def test_one_callback_serves_a_fit_and_its_continuation(metrics_session: sm.Session) -> None:
    net, callback = model(), SyvainKerasCallback()
    fit(net, callback, epochs=1)
    fit(net, callback, epochs=2, initial_epoch=1)
    exp = stored(callback.slug)
    assert callback.slug.startswith("keras-")
    assert exp.status == "done"
    assert exp.metrics("epoch/loss").steps == [3, 6]  # logged once each: no overlap


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        pytest.param({"slug": ""}, "slug", id="slug"),
        pytest.param({"slug": "x" * 10_000}, "slug", id="long-slug"),
        pytest.param({"metadata": {"a": float("inf")}}, "metadata", id="metadata"),
        pytest.param({"flush_timeout": -1}, "flush_timeout", id="flush-timeout"),
        pytest.param({"log_batches": "yes"}, "log_batches", id="log-batches"),
        pytest.param({"system_metrics": 0}, "system_metrics", id="system-metrics"),
    ],
)
def test_bad_arguments_raise_and_create_nothing(
    metrics_session: sm.Session, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(sm.MetricsValidationError) as raised:
        SyvainKerasCallback(**arguments)
    assert field in str(raised.value)
    assert sm.Experiment.list() == []


def test_a_service_down_at_the_start_costs_the_fit_nothing(
    metrics_server: LocalServer, metrics_session: sm.Session
) -> None:
    metrics_server.faults.fail_next(None, times=10**6, status=503)
    history = fit(model(), SyvainKerasCallback("keras-late", flush_timeout=0.5))
    assert len(history.history["loss"]) == 2
    metrics_server.faults.clear()
    metrics_session.flush(timeout=60)  # the events waited in the spool: now they are stored
    exp = stored("keras-late")
    assert exp.metrics("batch/loss").steps == [1, 2, 3, 4, 5, 6]
    assert exp.metrics("epoch/val_loss").steps == [3, 6]


RANK_JOB = """
import numpy as np, keras
import syvain_metrics as sm
from syvain_metrics.integrations.keras import SyvainKerasCallback
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})
net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
net.compile(optimizer="sgd", loss="mse")
x = np.ones((32, 4), dtype="float32")
with SyvainKerasCallback("keras-rank", session=session) as callback:
    net.fit(x, x.sum(1), epochs=2, batch_size=8, verbose=0, callbacks=[callback])
session.close()
print("fit done")
"""


def test_a_rank_other_than_zero_sends_nothing(metrics_server: LocalServer, tmp_path: Path) -> None:
    job = RANK_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path)
    )
    done = run_job(job, KERAS_BACKEND="torch", **RANK_ONE)
    assert done.returncode == 0, done.stderr
    assert "fit done" in done.stdout
    assert_nothing_sent(metrics_server, tmp_path)


EXIT_JOB = """
import os, signal
import numpy as np, keras
import syvain_metrics as sm
from syvain_metrics.integrations.keras import SyvainKerasCallback
session = sm.Session({api_key!r}, host={url!r}, spool_dir={spool!r})
net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
net.compile(optimizer="sgd", loss="mse")
x = np.ones((32, 4), dtype="float32")

def stop(batch, logs):
    if batch == 2:  # the fit's third batch: steps 1 and 2 are logged
        if {how!r} == "raise":
            raise RuntimeError("data loader failed at batch 2")
        os.kill(os.getpid(), signal.SIGTERM)

net.fit(x, x.sum(1), epochs=1, batch_size=8, verbose=0, callbacks=[
    SyvainKerasCallback("keras-exit", session=session),
    keras.callbacks.LambdaCallback(on_train_batch_begin=stop),
])
"""


@pytest.mark.parametrize(
    ("how", "status", "name", "detail"),
    [
        pytest.param("raise", 1, "RuntimeError", "data loader failed at batch 2", id="raised"),
        pytest.param("sigterm", 143, "Terminated", "terminated by SIGTERM", id="sigterm"),
    ],
)
def test_a_fit_that_ends_the_program_ends_the_run_error(
    metrics_server: LocalServer, tmp_path: Path, how: str, status: int, name: str, detail: str
) -> None:
    job = EXIT_JOB.format(
        api_key=metrics_server.api_key, url=metrics_server.url, spool=str(tmp_path), how=how
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(job)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KERAS_BACKEND": "torch"},
    )
    assert done.returncode == status, done.stderr
    with metrics_server.session() as session:
        exp = sm.Experiment.list(session=session)[0].refresh()
        assert (exp.slug, exp.status, exp.error_name, exp.error_detail) == (
            "keras-exit",
            "error",
            name,
            detail,
        )
        assert exp.metrics("batch/loss").steps == [1, 2]


def test_keras_keeps_its_asynchronous_dispatch_with_the_callback() -> None:
    # A callback with its own on_train_batch_end turns it off for the whole fit, unless it
    # says it is safe: Keras's own bookkeeping tells.
    callbacks = keras.callbacks.CallbackList([SyvainKerasCallback("keras-async")])
    assert callbacks._async_train is True


def test_a_second_fit_of_a_fresh_model_is_the_next_run(metrics_session: sm.Session) -> None:
    callback = SyvainKerasCallback("keras-again")
    net = model()
    fit(net, callback, epochs=1)
    fit(net, callback, epochs=2, initial_epoch=1)  # continues: the same run
    fit(model(), callback, epochs=1)  # a fresh model from scratch: the next run
    assert callback.slug == "keras-again-2"
    assert stored("keras-again").metrics("epoch/loss").steps == [STEPS, 2 * STEPS]
    again = stored("keras-again-2")
    assert again.status == "done"
    assert again.metrics("epoch/loss").steps == [STEPS]
    assert again.metrics("batch/loss").steps == [1, 2, 3]


def test_steps_stay_monotonic_when_the_optimizer_skips_an_update(
    metrics_session: sm.Session,
) -> None:
    calls = {"count": 0}

    def loss(y: Any, p: Any) -> Any:  # infinite at the second batch: its update is skipped
        calls["count"] += 1
        return keras.ops.mean((y - p) ** 2) * (math.inf if calls["count"] == 2 else 1.0)

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="tiny")
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01))
    net.compile(optimizer=optimizer, loss=loss, metrics=["mae"])
    fit(net, SyvainKerasCallback("keras-skip"), epochs=2)
    assert int(optimizer.iterations.value) == 2 * STEPS - 1  # one update skipped

    exp = stored("keras-skip")
    batches = exp.metrics("batch/mae").steps
    assert batches == list(range(1, 2 * STEPS + 1))  # never twice, never backwards
    assert exp.metrics("epoch").steps == [STEPS, 2 * STEPS]  # each epoch at its last batch


def test_the_callback_pickles_and_deep_copies_with_its_options(
    metrics_session: sm.Session,
) -> None:
    callback = SyvainKerasCallback("keras-copied", metadata={"team": "a"})
    net = model()
    fit(net, callback, epochs=1)
    loaded = pickle.loads(pickle.dumps(callback))
    twin = copy.deepcopy(callback)
    assert loaded.slug == twin.slug == "keras-copied"
    fit(net, twin, epochs=2, initial_epoch=1)  # the copy continues the same run
    exp = stored("keras-copied")
    assert exp.metadata["team"] == "a"
    assert exp.status == "done"
    assert exp.metrics("epoch/loss").steps == [STEPS, 2 * STEPS]
