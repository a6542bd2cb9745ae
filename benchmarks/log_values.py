"""What one ``log()`` call costs by the kind of value it is given: a Python float, numpy
scalars (``np.float64``, what ``np.mean()`` returns; ``np.float32`` with an ``np.int64``
step), a torch 0-d tensor (when torch is installed), a NaN (a diverged run logs one every
step) and a mapping of three floats (per value).

Each kind is timed call by call (``time.perf_counter_ns`` around ``exp.log(...)``) over
``--calls`` calls per round, the kinds interleaved round by round so the machine's drift
touches them alike; the figure is the median over every call, and the ratio is against the
Python float's median. The session sends nowhere (a closed loopback port) and keeps its
events in memory: ``log()`` never touches the network on the caller's thread, so what is
measured is what the training loop pays.

Target: numpy and torch scalars within 1.5x of a Python float.

Run::

    python benchmarks/log_values.py [--calls 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import statistics
import time
import warnings
from typing import Any

import syvain_metrics as sm

UNUSED_HOST = "http://127.0.0.1:9"
TARGET = 1.5


Args = list[tuple[Any, Any]]
"""Per call: what is logged (a value or a mapping) and the step."""


def kinds(calls: int) -> dict[str, Args]:
    """The calls measured, by label: their arguments built beforehand, so that making a
    numpy scalar is not counted as logging it."""
    import numpy as np

    steps = list(range(calls))
    numpy_steps = list(np.arange(calls, dtype=np.int64))
    floats = [0.5 + i * 1e-7 for i in steps]
    out: dict[str, Args] = {
        "python float": list(zip(floats, steps, strict=True)),
        "np.float64": [(np.float64(v), s) for v, s in zip(floats, steps, strict=True)],
        "np.float32, np.int64 step": [
            (np.float32(v), s) for v, s in zip(floats, numpy_steps, strict=True)
        ],
    }
    if importlib.util.find_spec("torch") is not None:
        import torch

        out["torch 0-d tensor"] = [(torch.tensor(v), s) for v, s in zip(floats, steps, strict=True)]
    out["NaN (after the first)"] = [(float("nan"), s) for s in steps]
    out["mapping of 3 (per value)"] = [
        ({"loss": v, "acc": 0.9, "lr": 3e-4}, s) for v, s in zip(floats, steps, strict=True)
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls per kind and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (kinds interleaved)")
    args = parser.parse_args()
    logging.getLogger("syvain_metrics").setLevel(logging.CRITICAL)  # the port is closed
    measured = kinds(args.calls)
    per_value = {"mapping of 3 (per value)": 3}
    timings: dict[str, list[int]] = {label: [] for label in measured}
    clock = time.perf_counter_ns
    session = sm.Session("ak_local_bench", host=UNUSED_HOST, spool_dir=None)
    exp = sm.Experiment({"id": "bench-values", "slug": "bench-values"}, session=session)
    exp._annotate_later = lambda text, metadata: None  # type: ignore[method-assign]
    warnings.simplefilter("ignore")  # the first NaN's warning, told once
    exp.log("loss", float("nan"), step=0)
    log = exp.log
    for _ in range(args.rounds):
        for label, calls in measured.items():
            record = timings[label].append
            gc.collect()
            for value, step in calls:
                if type(value) is dict:
                    started = clock()
                    log(value, step=step)
                else:
                    started = clock()
                    log("loss", value, step=step)
                record(clock() - started)
    session.logs.close(timeout=0)  # nothing is delivered to a closed port: drop the rest
    base = statistics.median(timings["python float"])
    print(f"log() median per call, {args.rounds} x {args.calls:,} calls per kind:\n")
    for label, values in timings.items():
        median = statistics.median(values) / per_value.get(label, 1)
        print(f"  {label:<28} {median / 1e3:7.2f} us   {median / base:5.2f}x the Python float")
    worst = max(
        statistics.median(timings[label]) / base
        for label in timings
        if label.startswith(("np.", "torch"))
    )
    verdict = "PASS" if worst <= TARGET else "MISS"
    print(f"\n{verdict}: numpy/torch scalars within {TARGET}x of a Python float ({worst:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
