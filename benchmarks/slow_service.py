"""How long a session takes to drain ``log()`` events when the service takes 2 s a request.

The local server (in this process, 16 threads) holds every ingest answer ``--hold``
seconds (its ``delay`` fault) after storing it. A worker process (a fresh interpreter)
logs ``--steps`` steps of 3 metrics (20,000 x 3 = 60,000 events, 60 requests) in a tight
loop, then ``flush()`` waits for every event: the *drain* time is from the end of the loop
to the end of the flush. Every event is then read back (each stored once).

``--baseline-ref REF`` (e.g. ``main``) runs the same worker on the SDK of that git ref (a
temporary ``git worktree add --detach``, removed at the end; checked: the worker imports
from there) and prints the ratio of the drain times.

Run (from the repository root)::

    python benchmarks/slow_service.py --baseline-ref main
    python benchmarks/slow_service.py --steps 5000 --hold 1

Target: drain at least 4x faster than one request at a time (the baseline). The exit
status is 0 whether the target passes or misses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline_tree import baseline_tree  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
NAMES = ("loss", "accuracy", "lr")


def worker(url: str, key: str, steps: int) -> None:
    """One run in this process; prints one JSON line."""
    import syvain_metrics as sm

    with tempfile.TemporaryDirectory() as spool:
        session = sm.Session(key, host=url, spool_dir=spool)
        exp = sm.Experiment.create(f"slow-{os.getpid()}", session=session)
        started = time.perf_counter()
        for step in range(steps):
            for name in NAMES:
                exp.log(name, 0.5, step=step)
        loop = time.perf_counter() - started
        started = time.perf_counter()
        counted = exp.flush(timeout=None)
        drain = time.perf_counter() - started
        session.close()
        print(
            json.dumps(
                {
                    "loop_s": loop,
                    "drain_s": drain,
                    "counted": counted,
                    "experiment": exp.id,
                    "module": sm.__file__,
                }
            )
        )


def _run_worker(url: str, key: str, steps: int, tree: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--worker", "--url", url, "--key", key]
    done = subprocess.run(
        [*command, "--steps", str(steps)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"the worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    where = Path(str(result["module"])).resolve()
    if tree.resolve() not in where.parents:
        raise SystemExit(f"the worker imported {where}, not the SDK in {tree}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds per ingest answer")
    parser.add_argument("--baseline-ref", help="also run the SDK of this git ref")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.url, args.key, args.steps)
        return

    sys.path.insert(0, str(REPO))  # the server and the reads: this tree's code
    import syvain_metrics as sm
    from syvain_metrics.testing import LocalServer

    events = args.steps * len(NAMES)
    rows: dict[str, dict[str, object]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalServer(threads=16) as server,
        baseline_tree(REPO, args.baseline_ref, Path(tmp)) as baseline,
    ):
        server.faults.delay("ingest_metrics", seconds=args.hold, times=10**9)
        trees = {"ours": REPO}
        if baseline is not None:
            trees[f"baseline {args.baseline_ref}"] = baseline
        for label, tree in trees.items():
            print(f"{label}: logging {events:,} events ...", flush=True)
            rows[label] = row = _run_worker(server.url, server.api_key, args.steps, tree)
            with sm.Session(server.api_key, host=server.url, spool_dir=None) as reader:
                exp = sm.Experiment.get(str(row["experiment"]), session=reader)
                seen = [(r.name, r.step) for r in exp.metrics()]
            row["stored"] = len(seen)
            row["once"] = len(seen) == len(set(seen)) == events
    print(f"{events:,} events, each ingest answer held {args.hold:g} s")
    print(f"{'':16} {'loop s':>7} {'drain s':>8} {'events/s':>9} {'stored':>8} {'each once':>10}")
    for label, row in rows.items():
        drain = float(str(row["drain_s"]))
        print(
            f"{label:16} {float(str(row['loop_s'])):7.2f} {drain:8.2f} "
            f"{events / max(drain, 1e-9):9,.0f} {int(str(row['stored'])):8,} "
            f"{'yes' if row['once'] else 'NO':>10}"
        )
    if args.baseline_ref:
        ours = float(str(rows["ours"]["drain_s"]))
        base = float(str(rows[f"baseline {args.baseline_ref}"]["drain_s"]))
        ratio = base / max(ours, 1e-9)
        verdict = "met" if ratio >= 4 else "MISSED"
        print(f"drain: {ratio:.1f}x faster than {args.baseline_ref} (target >= 4x: {verdict})")


if __name__ == "__main__":
    main()
