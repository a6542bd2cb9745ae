"""System metrics against the real local server: ``run(system_metrics=...)`` and
``exp.start_system_metrics()`` log ``system/...`` series through ``log()`` with ``node`` and
``rank`` metadata, sample at start and at stop, keep going when a reading fails, and stop
with the run. Without a GPU (or nvidia-ml-py) there is no GPU series; without psutil the
call that turns the sampler on says which extra to install.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.context import system
from syvain_metrics.context.gpus import GpuReader
from syvain_metrics.testing import LocalServer

psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.usefixtures("metrics_session")

HOST_SERIES = (
    "system/memory_percent",
    "system/memory_used_mb",
    "system/process_rss_mb",
    "system/cpu_percent",
    "system/process_cpu_percent",
)
GPU_SERIES = (
    "system/gpu_utilization_percent",
    "system/gpu_memory_used_mb",
    "system/gpu_memory_percent",
    "system/gpu_power_w",
    "system/gpu_temperature_c",
)


def series_rows(exp: sm.Experiment) -> dict[str, list[Any]]:
    return {name: list(exp.metrics(name)) for name in (*HOST_SERIES, *GPU_SERIES)}


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "syvain-metrics-system"]


def test_a_run_with_system_metrics_logs_every_host_series_with_node_and_rank() -> None:
    exp = sm.Experiment.create("run-sys")
    with exp.run(system_metrics=0.2):
        assert [t.daemon for t in sampler_threads()] == [True]
        end = time.monotonic() + 1.5
        step = 0
        while time.monotonic() < end:
            exp.log("loss", 1.0 / (step + 1), step=step)
            step += 1
            time.sleep(0.01)
    assert sampler_threads() == []  # stopped with the run

    rows = series_rows(exp)
    for name in HOST_SERIES:
        # 1.5 s at 0.2 s: 8 samples, and one at stop; CPU starts with the second sample.
        assert len(rows[name]) >= 5, name
        assert {(r.metadata["node"], r.metadata["rank"]) for r in rows[name]} == {
            (socket.gethostname(), 0)
        }
        # A time series: no step (a resumed run's last_per_step reads keep every sample).
        assert {r.step for r in rows[name]} == {None}
    assert 0 < rows["system/memory_percent"][0].value <= 100
    assert rows["system/process_rss_mb"][0].value > 1
    if GpuReader.open() is None:
        assert all(rows[name] == [] for name in GPU_SERIES)
    assert len(exp.metrics("loss")) == step  # the loop's own events, all stored
    assert exp.refresh().status == "done"


def test_a_short_run_has_a_sample_of_each_series(
    monkeypatch: pytest.MonkeyPatch, metrics_server: LocalServer, tmp_path: Any
) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with metrics_server.session(spool_dir=tmp_path, ranks="all") as session:
        exp = sm.Experiment.create("run-short", session=session)
        sampler = exp.start_system_metrics(interval=60.0)
        sampler.stop()  # at once: the sample at start, and the last one
        sampler.stop()  # a second stop does nothing
        assert not sampler.running
        exp.flush(timeout=30)
        rows = series_rows(exp)
    for name in HOST_SERIES:
        assert len(rows[name]) >= 1, name
        assert rows[name][0].metadata["rank"] == 3


def test_a_reading_that_fails_is_logged_once_and_sampling_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise RuntimeError("no /proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    exp = sm.Experiment.create("run-broken")
    with caplog.at_level(logging.WARNING, logger="syvain_metrics"), exp.run(system_metrics=0.1):
        for step in range(50):
            exp.log("loss", 0.5, step=step)
            time.sleep(0.01)
    rows = series_rows(exp)
    assert rows["system/memory_percent"] == []
    assert len(rows["system/process_rss_mb"]) >= 3
    assert len(exp.metrics("loss")) == 50
    warned = [r for r in caplog.records if "cannot read memory" in r.getMessage()]
    assert len(warned) == 1


def test_a_log_function_that_raises_does_not_stop_the_sampler() -> None:
    calls: list[str] = []

    def failing_log(name: str, value: float, **kwargs: Any) -> None:
        calls.append(name)
        raise RuntimeError("full disk")

    sampler = system.SystemMetrics(failing_log, interval=0.05).start()
    time.sleep(0.5)
    sampler.stop()
    assert sampler.samples >= 3
    assert len(calls) >= 3


def test_without_psutil_turning_it_on_names_the_extra_and_the_run_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails
    exp = sm.Experiment.create("run-nopsutil")
    with pytest.raises(sm.MetricsApiError, match=r"pip install 'syvain-metrics\[system\]'"):
        exp.start_system_metrics()
    with (
        pytest.raises(sm.MetricsApiError, match="psutil"),
        exp.run(system_metrics=True),
    ):
        pass
    assert exp.refresh().status == "created"
    assert sampler_threads() == []


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "10", True])
def test_a_bad_interval_is_refused(bad: Any) -> None:
    exp = sm.Experiment.create("run-interval")
    with pytest.raises(sm.MetricsValidationError, match="interval"):
        exp.start_system_metrics(interval=bad)
    with (
        pytest.raises(sm.MetricsValidationError, match="system_metrics"),
        exp.run(
            system_metrics="yes"  # type: ignore[arg-type]
        ),
    ):
        pass
    assert sampler_threads() == []
    assert exp.refresh().status == "created"


class Memory:
    used = 2 * 1024 * 1024
    total = 8 * 1024 * 1024


class FakeNvml:
    """NVML of two boards without a power sensor."""

    NVML_TEMPERATURE_GPU = 0

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:  # noqa: N802
        return type("Rates", (), {"gpu": 40 + handle})()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Memory:  # noqa: N802
        return Memory()

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        raise RuntimeError("not supported")

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        return 61


def test_a_gpu_reader_drops_a_reading_the_board_does_not_support() -> None:
    reader = GpuReader(FakeNvml(), [0, 1])
    expected = [
        (gpu, reading, value)
        for gpu in (0, 1)
        for reading, value in (
            ("utilization_percent", 40.0 + gpu),
            ("memory_used_mb", 2.0),
            ("memory_percent", 25.0),
            ("temperature_c", 61.0),
        )
    ]
    assert reader.read() == expected
    assert reader.read() == expected  # power is not asked again


def test_gpu_series_carry_the_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system.GpuReader, "open", lambda: GpuReader(FakeNvml(), [0, 1]))
    exp = sm.Experiment.create("run-gpu")
    with exp.run(system_metrics=60.0):
        time.sleep(0.1)
    rows = series_rows(exp)
    utilization = {(r.metadata["gpu"], r.value) for r in rows["system/gpu_utilization_percent"]}
    assert utilization == {(0, 40.0), (1, 41.0)}
    assert rows["system/gpu_power_w"] == []
    assert {r.metadata["node"] for r in rows["system/gpu_temperature_c"]} == {socket.gethostname()}


def test_stop_returns_while_a_reading_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()

    def hung() -> Any:
        entered.set()
        release.wait(60)
        raise RuntimeError("driver hung")

    monkeypatch.setattr(psutil, "virtual_memory", hung)
    exp = sm.Experiment.create("run-hung")
    sampler = exp.start_system_metrics(interval=60.0)
    assert entered.wait(30)
    sampler.stop(timeout=0.2)  # gives up on the stuck sample instead of waiting for it
    assert sampler.running
    assert sampler.samples == 0
    release.set()
    for thread in sampler_threads():
        thread.join(30)
    assert not sampler.running


def test_a_resumed_run_s_reads_keep_every_job_s_samples() -> None:
    exp = sm.Experiment.create("run-sys-resumed")
    for _ in range(2):  # the first job, then the one restarted from its checkpoint
        with exp.run(resume_from=0, system_metrics=60.0):
            pass  # sampled at start and at stop
    rows = exp.metrics("system/memory_percent")
    assert len(rows) == 4
    # The restarted job's samples do not hide the first job's.
    assert len(exp.metrics("system/memory_percent", last_per_step=True)) == 4
