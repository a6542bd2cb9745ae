"""What importing the SDK costs, side by side with the published client, in one run.

Each figure is the median wall time of a fresh interpreter running one statement, minus
the median of the same interpreter running ``pass`` (its own start-up), so the two
packages are compared on what importing them adds. The published client runs in its own
venv (``benchmarks/.venv-published``, made by ``peer_env.ensure_peer_env``).

Rows:

- ``import``: ``import syvain_metrics`` against ``import syvain_metrics_api_client``.
- ``ready to call``: the SDK with its session and resources loaded
  (``syvain_metrics.Experiment; syvain_metrics.Session``) against the published client
  with its client class (``SyvainMetricsApiClient``).
- ``pytest plugin``: ``import syvain_metrics.testing``, which pytest loads in every
  project that has the SDK installed (the published client has no plugin: no ratio).

Target: ``import`` at most 0.8x the published client's.

Run::

    python benchmarks/import_time.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from peer_env import ensure_peer_env  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.8


def median_seconds(python: str, statement: str, runs: int) -> float:
    """The median wall time of ``python -c statement`` over ``runs`` fresh interpreters."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([python, "-c", statement], check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def added(python: str, statement: str, runs: int) -> float:
    """What ``statement`` adds to the interpreter's own start-up, in seconds."""
    return median_seconds(python, statement, runs) - median_seconds(python, "pass", runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="interpreters per figure")
    args = parser.parse_args()
    peer = str(
        ensure_peer_env(ROOT / "benchmarks/.venv-published", "syvain-metrics-api-client", "0.0.71")
    )
    ours = sys.executable
    rows = [
        (
            "import",
            added(ours, "import syvain_metrics", args.runs),
            added(peer, "import syvain_metrics_api_client", args.runs),
        ),
        (
            "ready to call",
            added(ours, "import syvain_metrics as s; s.Experiment; s.Session", args.runs),
            added(
                peer,
                "from syvain_metrics_api_client import SyvainMetricsApiClient",
                args.runs,
            ),
        ),
    ]
    print(f"{'':16}{'SDK ms':>9}{'peer ms':>9}{'ratio':>8}")
    for name, mine, theirs in rows:
        print(f"{name:16}{mine * 1e3:9.1f}{theirs * 1e3:9.1f}{mine / theirs:8.2f}x")
    plugin = added(ours, "import syvain_metrics.testing", args.runs)
    print(f"{'pytest plugin':16}{plugin * 1e3:9.1f}{'-':>9}{'-':>8}")
    ratio = rows[0][1] / rows[0][2]
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(f"import: {ratio:.2f}x the published client's (target <= {TARGET}x) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
