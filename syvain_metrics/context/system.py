"""System metrics: a daemon thread that samples the machine every ``interval`` seconds and
logs each reading as a ``system/...`` series through the run's ``log()``.

Series (each event's metadata: ``node``, the host name, and ``rank``, the process's rank
under torchrun / SLURM / Open MPI, 0 otherwise; GPU series add ``gpu``, the GPU's index):

- ``system/cpu_percent``, ``system/memory_percent``, ``system/memory_used_mb``: the machine;
- ``system/process_cpu_percent`` (100 = one core), ``system/process_rss_mb``: this process;
- ``system/gpu_utilization_percent``, ``system/gpu_memory_used_mb``,
  ``system/gpu_memory_percent``, ``system/gpu_power_w``, ``system/gpu_temperature_c``:
  each NVIDIA GPU, through nvidia-ml-py when it is installed (absent otherwise).

Megabytes are 2**20 bytes. A sample has no step, only its time (the moment of the sample):
read or plot the series against time (``x="time"``). The first sample is taken at start (CPU percentages need
a window, so they start with the second one) and a last one at :meth:`SystemMetrics.stop`,
so a short run has at least one of each. A reading that fails is logged once and skipped;
the sampler never raises into the program.

Example:
    >>> sampler = SystemMetrics(print, interval=10.0)  # doctest: +SKIP
    >>> sampler.start(); sampler.stop()               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from syvain_metrics.context.gpus import GpuReader
from syvain_metrics.errors import MetricsApiError, MetricsValidationError

logger = logging.getLogger("syvain_metrics")

DEFAULT_INTERVAL_S = 10.0
"""Seconds between two samples unless told otherwise."""

MIN_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 2.0
"""The longest ``stop()`` waits for a sample being taken (a run's end must stay bounded)."""
_MIB = 1024 * 1024

LogFunction = Callable[..., None]
"""``log(name, value, *, step, metadata)``, as ``Experiment.log``."""


def check_interval(interval: object) -> float:
    """``interval`` as seconds between samples, or :class:`MetricsValidationError`.

    Example:
        >>> check_interval(2)
        2.0
    """
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval < MIN_INTERVAL_S
    ):
        raise MetricsValidationError(
            {"interval": [f"Must be a number of seconds of at least {MIN_INTERVAL_S}."]}
        )
    return float(interval)


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        raise MetricsApiError(
            "System metrics need psutil: pip install 'syvain-metrics[system]'"
        ) from None
    return psutil


class SystemMetrics:
    """A sampler of the machine's load, logging through ``log`` every ``interval`` seconds
    until :meth:`stop` (also a context manager). Made by ``exp.start_system_metrics()`` or
    ``exp.run(system_metrics=True)``.

    Example:
        >>> with exp.start_system_metrics(interval=5.0):  # doctest: +SKIP
        ...     train()
    """

    def __init__(
        self, log: LogFunction, interval: float = DEFAULT_INTERVAL_S, *, rank: int = 0
    ) -> None:
        self._interval = check_interval(interval)
        self._psutil = _psutil()
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one sample at a time: the thread's, or stop()'s last
        self._failed: set[str] = set()
        self._process: Any = None
        self._gpus: GpuReader | None = None
        self._cpu_ready = False
        self._cpu_logged = False
        self._last_at = 0.0
        self._dead = False
        self.samples = 0
        """Samples taken so far."""
        self.metadata: dict[str, Any] = {"node": socket.gethostname(), "rank": rank}
        """The metadata of every event (GPU series add ``gpu``)."""

    @property
    def running(self) -> bool:
        """Whether the sampler thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SystemMetrics:
        """Start sampling (the first sample at once); returns the sampler."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="syvain-metrics-system", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Take a last sample and stop; safe to call twice. Never raises, and waits at most
        about ``timeout`` seconds (twice that if a reading hangs, e.g. in a GPU driver)."""
        thread = self._thread
        if thread is None or self._stop.is_set():
            return
        self._stop.set()
        if thread is not threading.current_thread():
            thread.join(timeout)
        # A last sample, unless one was just taken; always when none had a CPU window yet,
        # so that even a very short run has every series.
        if not self._cpu_logged or time.monotonic() - self._last_at >= MIN_INTERVAL_S:
            self.sample(timeout)

    def __enter__(self) -> SystemMetrics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        try:
            self._process = self._psutil.Process()
            self._gpus = GpuReader.open()
        except Exception as error:
            self._once("start", error)
        self.sample()
        while not self._stop.wait(self._interval):
            self.sample()

    def _once(self, what: str, error: BaseException) -> None:
        if what not in self._failed:
            self._failed.add(what)
            logger.warning("syvain_metrics: system metrics: cannot read %s: %r", what, error)

    def _read(self, what: str, read: Callable[[], float]) -> float | None:
        try:
            value = float(read())
        except Exception as error:
            self._once(what, error)
            return None
        return value if math.isfinite(value) else None

    def readings(self) -> list[tuple[str, float, dict[str, Any]]]:
        """One sample: ``(series name, value, metadata)`` of every reading that worked.

        Example:
            >>> [name for name, _, _ in sampler.readings()][:2]  # doctest: +SKIP
            ['system/memory_percent', 'system/memory_used_mb']
        """
        ps = self._psutil
        found: list[tuple[str, float, dict[str, Any]]] = []
        meta = self.metadata

        def add(name: str, read: Callable[[], float]) -> None:
            value = self._read(name, read)
            if value is not None:
                found.append((f"system/{name}", value, meta))

        memory = self._read_memory()
        if memory is not None:
            found.append(("system/memory_percent", float(memory.percent), meta))
            found.append(("system/memory_used_mb", float(memory.used) / _MIB, meta))
        process = self._process
        if process is not None:
            add("process_rss_mb", lambda: process.memory_info().rss / _MIB)
        if self._cpu_ready:
            add("cpu_percent", lambda: ps.cpu_percent(None))
            if process is not None:
                add("process_cpu_percent", lambda: process.cpu_percent(None))
            self._cpu_logged = True
        else:  # prime the counters: the first call measures no window and says 0
            self._read("cpu_percent", lambda: ps.cpu_percent(None))
            if process is not None:
                self._read("process_cpu_percent", lambda: process.cpu_percent(None))
            self._cpu_ready = True
        if self._gpus is not None:
            try:
                gpu_readings = self._gpus.read()
            except Exception as error:
                self._once("gpus", error)
                gpu_readings = []
            for index, reading, value in gpu_readings:
                found.append((f"system/gpu_{reading}", value, {**meta, "gpu": index}))
        return found

    def _read_memory(self) -> Any:
        try:
            return self._psutil.virtual_memory()
        except Exception as error:
            self._once("memory", error)
            return None

    def sample(self, wait: float = STOP_TIMEOUT_S) -> int:
        """Take one sample now and log it; returns how many values were logged (0 when the
        sample being taken meanwhile did not end within ``wait`` seconds). Never raises.

        Example:
            >>> sampler.sample()  # doctest: +SKIP
            5
        """
        if self._dead:
            return 0
        if not self._lock.acquire(timeout=wait):
            return 0
        try:
            self._last_at = time.monotonic()
            logged = 0
            try:
                for name, value, metadata in self.readings():
                    # No step: a time series. A sample number would restart at 0 with each
                    # sampler, and a resumed run's reads keeping the last value per step
                    # would hide the first job's samples.
                    self._log(name, value, step=None, metadata=metadata)
                    logged += 1
            except MetricsValidationError as error:
                self._once("log", error)
            except MetricsApiError as error:  # the session closed: nothing more can be sent
                self._dead = True
                self._stop.set()
                logger.debug("syvain_metrics: system metrics stopped: %r", error)
            except Exception as error:
                self._once("log", error)
            self.samples += 1
            return logged
        finally:
            self._lock.release()
