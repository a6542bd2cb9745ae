"""What the system metrics sampler and the environment capture cost.

Three measures, in one run on this machine:

(a) one sample: ``SystemMetrics.sample()`` (the psutil readings, the GPU readings when
    nvidia-ml-py sees a GPU, and one ``exp.log()`` per reading into a real session), called
    ``--samples`` times (500) on a thread of its own like the sampler's; the median / p99 /
    max of the thread's CPU time (``time.thread_time_ns``) and wall time per sample;
(b) the environment capture at creation (``capture_environment()``: one ``git status`` in
    this repository, host, argv, versions, accelerators): median / max of ``--captures`` (20);
(c) a training loop of ``--seconds`` (60) per run, each step about 1 ms of CPU work (the
    same calibrated busy loop as ``training_loop.py``) and three ``log()`` calls, with the
    sampler off and on (every ``--interval`` s, 10 by default), in the order off, on, on,
    off (``--rounds`` times that), against a ``syvain-metrics serve`` process of its own.
    Reported: steps per second of each run, the slowdown of the median "on" step time
    against the median "off" one, the spread between the "off" runs (the machine's noise),
    and the samples stored per ``system/...`` series of each "on" run, read back from the
    server.

Run (from the repository root; the SDK must be importable, e.g. ``pip install -e .``)::

    python benchmarks/system_metrics.py                     # about 4.5 minutes
    python benchmarks/system_metrics.py --seconds 10 --interval 1   # a quick check

Targets: a sample costs <= 1 ms of the sampler thread (median); the capture < 50 ms
(median); >= 6 samples per series over a 60 s loop at the default interval (the first
sample is taken at start and a last one at stop); loop slowdown within the noise. The exit
status is 0 whether a target passes or misses (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from training_loop import (  # benchmarks/ is on sys.path when run as a script
    API_KEY,
    ServerProcess,
    busy_work,
    calibrate,
)

import syvain_metrics as sm
from syvain_metrics.context.environment import capture_environment
from syvain_metrics.context.system import SystemMetrics

HOST_SERIES = (
    "system/cpu_percent",
    "system/memory_percent",
    "system/memory_used_mb",
    "system/process_cpu_percent",
    "system/process_rss_mb",
)
TRAIN = {"split": "train"}


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """Median, p99 (nearest rank) and max."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered[(n - 1) // 2], ordered[min(n - 1, -(-99 * n // 100) - 1)], ordered[-1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def sample_cost(session: sm.Session, count: int) -> None:
    exp = sm.Experiment.create(f"sample-cost-{time.time_ns()}", session=session)
    sampler = SystemMetrics(exp.log, interval=3600.0)
    cpu_ns: list[float] = []
    wall_ns: list[float] = []
    logged: list[int] = []

    def run() -> None:
        sampler.start()  # its thread takes the first sample (and primes the CPU counters)
        time.sleep(0.2)
        for _ in range(count):
            cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
            logged.append(sampler.sample())
            cpu_ns.append(time.thread_time_ns() - cpu)
            wall_ns.append(time.perf_counter_ns() - wall)
        sampler.stop()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    exp.flush(timeout=120)
    cpu = quantiles([v / 1e6 for v in cpu_ns])
    wall = quantiles([v / 1e6 for v in wall_ns])
    print(f"\n(a) one sample ({count} samples, {statistics.median(logged):.0f} values each)")
    print(f"    sampler thread CPU ms: median {cpu[0]:.3f}, p99 {cpu[1]:.3f}, max {cpu[2]:.3f}")
    print(f"    wall ms:               median {wall[0]:.3f}, p99 {wall[1]:.3f}, max {wall[2]:.3f}")
    print(f"    {verdict(cpu[0] <= 1.0)} a sample costs <= 1 ms of the sampler thread (median)")


def capture_cost(count: int) -> None:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        env = capture_environment()
        times.append((time.perf_counter() - start) * 1e3)
    print(f"\n(b) environment capture ({count} captures; parts: {', '.join(sorted(env))})")
    print(f"    ms: median {statistics.median(times):.1f}, max {max(times):.1f}")
    print(f"    {verdict(statistics.median(times) < 50)} capture < 50 ms (median)")


def loop_run(
    session: sm.Session, seconds: float, iterations: int, interval: float | None
) -> dict[str, Any]:
    exp = sm.Experiment.create(f"loop-{time.time_ns()}", session=session)
    sampler = None if interval is None else SystemMetrics(exp.log, interval)
    gc.collect()
    if sampler is not None:
        sampler.start()
    start = time.perf_counter()
    end = start + seconds
    step = 0
    while time.perf_counter() < end:
        x = busy_work(iterations, step)
        exp.log("loss", 1.0 / (1 + step) + 1e-9 * x, step=step, metadata=TRAIN)
        exp.log("lr", 3e-4, step=step)
        exp.log("grad_norm", 1.0 + x % 1.0, step=step)
        step += 1
    elapsed = time.perf_counter() - start
    if sampler is not None:
        sampler.stop()
    exp.flush(timeout=300)
    counts = {name: len(exp.metrics(name)) for name in HOST_SERIES} if sampler else {}
    return {"steps": step, "step_s": elapsed / step, "counts": counts}


def loop_cost(args: argparse.Namespace, tmp: Path) -> None:
    iterations, work_s = calibrate()
    print(
        f"\n(c) training loop, {args.seconds:g} s a run, {work_s * 1e3:.2f} ms of work and 3 "
        f"log() calls a step; sampler every {args.interval:g} s when on"
    )
    off: list[float] = []
    on: list[float] = []
    with ServerProcess(tmp / "loop.sqlite") as server:
        session = sm.Session(API_KEY, host=server.url, spool_dir=tmp / "spool-loop")
        try:
            for round_no in range(1, args.rounds + 1):
                for mode in ("off", "on", "on", "off"):
                    print(f"round {round_no}: sampler {mode} ...", file=sys.stderr, flush=True)
                    interval = args.interval if mode == "on" else None
                    result = loop_run(session, args.seconds, iterations, interval)
                    (on if mode == "on" else off).append(result["step_s"])
                    counts = result["counts"]
                    shown = ", ".join(f"{k.split('/')[1]} {v}" for k, v in counts.items())
                    print(
                        f"    sampler {mode:<3} {result['steps'] / args.seconds:8,.0f} steps/s"
                        + (f"; samples stored: {shown}" if counts else "")
                    )
                    if counts:
                        fewest = min(counts.values())
                        print(f"    {verdict(fewest >= 6)} >= 6 samples per series ({fewest})")
        finally:
            session.close()
    slowdown = statistics.median(on) / statistics.median(off) - 1
    noise = (max(off) - min(off)) / statistics.median(off)
    print(f"    slowdown with the sampler: {slowdown:+.2%} (off runs spread over {noise:.2%})")
    print(f"    {verdict(slowdown <= max(noise, 0.01))} loop slowdown within the noise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500, help="samples timed in (a)")
    parser.add_argument("--captures", type=int, default=20, help="captures timed in (b)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of a loop run")
    parser.add_argument("--interval", type=float, default=10.0, help="sampler interval (s)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of off, on, on, off")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, syvain-metrics {sm.__version__}")
    with tempfile.TemporaryDirectory(prefix="system-metrics-bench-") as name:
        tmp = Path(name)
        with (
            ServerProcess(tmp / "cost.sqlite") as server,
            sm.Session(API_KEY, host=server.url, spool_dir=tmp / "spool-cost") as session,
        ):
            sample_cost(session, args.samples)
        capture_cost(args.captures)
        loop_cost(args, tmp)


if __name__ == "__main__":
    main()
