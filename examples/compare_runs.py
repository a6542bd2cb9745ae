"""Comparing runs: bulk-ingest three runs, then compare one metric across them.

Run it with ``python examples/compare_runs.py`` (a local server is started when no
``SYVAIN_METRICS_API_KEY`` is set). With pandas installed it also prints a pivot table.
"""

from __future__ import annotations

import math
import time

from _connect import session_for_example

import syvain_metrics as sm

STEPS = 500


def main() -> None:
    with session_for_example() as session:
        tag = time.strftime("%Y%m%d-%H%M%S")
        runs = []
        for width in (256, 512, 1024):
            exp = sm.Experiment.create(
                f"width-{width}-{tag}", metadata={"width": width}, session=session
            )
            points = [
                sm.MetricPoint("accuracy", 1 - math.exp(-step * width / 200_000), step=step)
                for step in range(STEPS)
            ]
            result = exp.ingest(points, sync=True)
            print(f"{exp.slug}: sent {result.count} points in {result.requests} request(s)")
            runs.append(exp)

        rows = sm.compare([exp.series("accuracy") for exp in runs], from_step=100, to_step=499)
        print(f"compare returned {len(rows)} rows for steps 100-499")
        final: dict[str, float] = {}
        for metric in rows:
            if metric.step == STEPS - 1:
                final[metric.experiment_slug] = metric.value
        for slug, value in sorted(final.items(), key=lambda item: -item[1]):
            print(f"  {slug}: accuracy at step {STEPS - 1} = {value:.4f}")

        try:
            frame = rows.to_pandas()
        except sm.MetricsApiError:
            print("(install the 'pandas' extra for a DataFrame view)")
        else:
            print(
                frame.pivot_table(index="step", columns="experiment_slug", values="value").tail(3)
            )


if __name__ == "__main__":
    main()
