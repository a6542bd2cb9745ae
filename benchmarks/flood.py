"""A flood of ``log()`` calls: memory, loop time and flush time for 2,000,000 calls.

A cell that replays a history calls ``log()`` millions of times in a tight loop. The queue
in front of the spooler is bounded (``QUEUE_LIMIT``): beyond it, ``log()`` waits for the
spooler instead of growing memory. This prints, for the calls of one worker process (a
fresh interpreter, so its memory is its own; the local server runs in this process):

* RSS before the loop, right after it, and after the flush; the peak during the loop and
  the flush (``VmHWM`` of ``/proc/self/status``, reset before the loop), in MB;
* the loop's time and the flush's time (every event stored, checked by reading them back);
* for scale, the same loop appending ``(step, value)`` tuples to a plain list.

``--baseline-ref REF`` runs the same worker on the SDK of that git ref (a temporary
``git worktree add --detach``, removed at the end) and prints both side by side.

Run (from the repository root, Linux)::

    python benchmarks/flood.py                       # 2,000,000 calls
    python benchmarks/flood.py --calls 500000
    python benchmarks/flood.py --baseline-ref main

Target: RSS at most +100 MB above the RSS before the loop, at the peak, for 2,000,000
calls; nothing lost. The exit status is 0 whether the target passes or misses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline_tree import baseline_tree  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS


def worker(kind: str, url: str, key: str, calls: int) -> None:
    """One run in this process; prints one JSON line."""
    import gc

    gc.collect()
    before = _status_mb("VmRSS")
    _reset_peak()
    if kind == "list":
        started = time.perf_counter()
        held: list[tuple[int, float]] = []
        for step in range(calls):
            held.append((step, 1.0))
        loop = time.perf_counter() - started
        after = _status_mb("VmRSS")
        print(
            json.dumps(
                {
                    "before": before,
                    "after_loop": after,
                    "peak": _status_mb("VmHWM"),
                    "loop_s": loop,
                    "flush_s": 0.0,
                    "after_flush": after,
                }
            )
        )
        return
    import syvain_metrics as sm

    with tempfile.TemporaryDirectory() as spool:
        session = sm.Session(key, host=url, spool_dir=spool)
        exp = sm.Experiment.create(f"flood-{os.getpid()}", session=session)
        exp.log("warm-up", 1.0, step=0)
        exp.flush(timeout=60)
        gc.collect()
        before = _status_mb("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        for step in range(calls):
            exp.log("loss", 1.0, step=step)
        loop = time.perf_counter() - started
        after_loop = _status_mb("VmRSS")
        queued = session.logs.sender.backlog().queued
        started = time.perf_counter()
        exp.flush(timeout=None)
        flush = time.perf_counter() - started
        after_flush = _status_mb("VmRSS")
        peak = _status_mb("VmHWM")
        session.close()
        print(
            json.dumps(
                {
                    "before": before,
                    "after_loop": after_loop,
                    "peak": peak,
                    "loop_s": loop,
                    "flush_s": flush,
                    "after_flush": after_flush,
                    "queued_after_loop": queued,
                    "experiment": exp.id,
                }
            )
        )


def _run_worker(kind: str, url: str, key: str, calls: int, tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            kind,
            "--url",
            url,
            "--key",
            key,
            "--calls",
            str(calls),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2_000_000)
    parser.add_argument("--baseline-ref", help="also run the SDK of this git ref")
    parser.add_argument("--worker", choices=["ours", "list"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.url, args.key, args.calls)
        return

    sys.path.insert(0, str(REPO))  # the server and the reads: this tree's code
    import syvain_metrics as sm
    from syvain_metrics.testing import LocalServer

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalServer(threads=16) as server,
        baseline_tree(REPO, args.baseline_ref, Path(tmp)) as baseline,
    ):
        trees = {"ours": REPO}
        if baseline is not None:
            trees[f"baseline {args.baseline_ref}"] = baseline
        rows = {"plain list": _run_worker("list", server.url, server.api_key, args.calls, REPO)}
        for label, tree in trees.items():
            rows[label] = _run_worker("ours", server.url, server.api_key, args.calls, tree)
            with sm.Session(server.api_key, host=server.url, spool_dir=None) as reader:
                experiment = sm.Experiment.get(str(rows[label]["experiment"]), session=reader)
                stored = len(experiment.metrics("loss"))
            rows[label]["stored"] = stored
    print(f"{args.calls:,} calls; MB of RSS (peak: VmHWM during the loop and the flush)")
    print(
        f"{'':22} {'before':>7} {'+loop':>7} {'+peak':>7} {'+flush':>7} "
        f"{'loop s':>7} {'flush s':>8} {'queued':>8} {'stored':>10}"
    )
    for label, row in rows.items():
        base = row["before"]
        print(
            f"{label:22} {base:7.0f} {row['after_loop'] - base:+7.0f} "
            f"{row['peak'] - base:+7.0f} {row['after_flush'] - base:+7.0f} "
            f"{row['loop_s']:7.2f} {row['flush_s']:8.2f} "
            f"{int(row.get('queued_after_loop', 0)):8,} {int(row.get('stored', 0)):10,}"
        )
    ours = rows["ours"]
    print(
        f"target: peak <= +100 MB: {ours['peak'] - ours['before']:+.0f} MB "
        f"({'met' if ours['peak'] - ours['before'] <= 100 else 'MISSED'}); "
        f"stored {int(ours['stored']):,} of {args.calls:,}; "
        f"loop {ours['loop_s'] / max(rows['plain list']['loop_s'], 1e-9):.1f}x the plain list's"
    )


if __name__ == "__main__":
    main()
