"""NVIDIA GPUs through nvidia-ml-py (``pynvml``), when it is installed and a driver answers.

Without the package, without a driver or without a GPU, there are no GPUs: nothing here
raises. NVML is initialised once per process, on first use.

Example:
    >>> reader = GpuReader.open()  # None without a GPU
    >>> reader is None or isinstance(reader.read(), list)
    True
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

logger = logging.getLogger("syvain_metrics")

_MIB = 1024 * 1024
_lock = threading.Lock()
_state: dict[str, Any] = {"pid": None, "nvml": None}


def nvml() -> Any:
    """The initialised ``pynvml`` module, or ``None`` (not installed, no driver, no GPU).

    Example:
        >>> nvml() is None or hasattr(nvml(), "nvmlDeviceGetCount")
        True
    """
    with _lock:
        if _state["pid"] == os.getpid():
            return _state["nvml"]
        _state["pid"] = os.getpid()
        _state["nvml"] = None
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                _state["nvml"] = pynvml
        except Exception as error:  # ImportError, NVMLError (no library, no driver)
            logger.debug("syvain_metrics: no NVML: %r", error)
        return _state["nvml"]


class GpuReader:
    """Reads each GPU's utilisation, memory, power and temperature. A reading a GPU does not
    support (power on some boards) is dropped after its first failure, not retried.

    Example:
        >>> GpuReader.open() is None or isinstance(GpuReader.open().read(), list)
        True
    """

    READINGS = (
        "utilization_percent",
        "memory_used_mb",
        "memory_percent",
        "power_w",
        "temperature_c",
    )

    def __init__(self, lib: Any, handles: list[Any]) -> None:
        self._lib = lib
        self._handles = handles
        self._unsupported: set[tuple[int, str]] = set()

    @classmethod
    def open(cls) -> GpuReader | None:
        """A reader of every GPU NVML sees, or ``None`` without one."""
        lib = nvml()
        if lib is None:
            return None
        try:
            count = lib.nvmlDeviceGetCount()
            return cls(lib, [lib.nvmlDeviceGetHandleByIndex(i) for i in range(count)])
        except Exception:
            return None

    def _one(self, index: int, handle: Any, reading: str) -> float | None:
        lib = self._lib
        if reading == "utilization_percent":
            return float(lib.nvmlDeviceGetUtilizationRates(handle).gpu)
        if reading in ("memory_used_mb", "memory_percent"):
            memory = lib.nvmlDeviceGetMemoryInfo(handle)
            if reading == "memory_used_mb":
                return float(memory.used) / _MIB
            return 100.0 * float(memory.used) / float(memory.total) if memory.total else None
        if reading == "power_w":
            return float(lib.nvmlDeviceGetPowerUsage(handle)) / 1000.0  # milliwatts
        return float(lib.nvmlDeviceGetTemperature(handle, lib.NVML_TEMPERATURE_GPU))

    def read(self) -> list[tuple[int, str, float]]:
        """``(gpu index, reading, value)`` for every supported reading of every GPU."""
        found: list[tuple[int, str, float]] = []
        for index, handle in enumerate(self._handles):
            for reading in self.READINGS:
                if (index, reading) in self._unsupported:
                    continue
                try:
                    value = self._one(index, handle, reading)
                except Exception as error:
                    self._unsupported.add((index, reading))
                    logger.debug("syvain_metrics: GPU %s gives no %s: %r", index, reading, error)
                    continue
                if value is not None:
                    found.append((index, reading, value))
        return found
