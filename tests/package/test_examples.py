"""The examples run end to end as a user would start them: a subprocess, no credentials,
so each starts its own local server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("waitress", reason="the examples' local server needs the 'local' extra")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYVAIN_METRICS_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith(
        "No SYVAIN_METRICS_API_KEY set: using a local server at http://127.0.0.1:"
    )
    return done.stdout


def test_quickstart_logs_reads_back_and_compares() -> None:
    out = run_example("quickstart.py")
    assert re.search(r"lr0\.01: done, 200 train and 20 valid points", out)
    assert "last train loss" in out
    assert "at step 199" in out
    assert "annotations: ['Checkpoint saved']" in out
    assert "compared 40 valid points across 2 runs:" in out
    assert "holds 2 experiments" in out
    # The last lines: a one-time login link to the first run's page, and why it stops.
    assert re.search(
        r"dashboard: http://127\.0\.0\.1:\d+/dashboard/login\?token=[\w-]+"
        r"&next=/dashboard/experiments/[0-9a-f-]{36}\n",
        out,
    )
    assert "the local server stops with this script" in out


def test_organize_renames_moves_and_lists() -> None:
    out = run_example("organize.py")
    assert re.search(r"renamed to projects-[\d-]+/computer-vision", out)
    assert re.search(r"moved resnet-[\d-]+ to projects-[\d-]+/nlp", out)
    assert "moved nlp to the root: nlp" in out
    assert re.search(r"nlp: folders=\[\] experiments=\['resnet-[\d-]+'\]", out)
    assert re.search(r"projects-[\d-]+: folders=\['computer-vision'\] experiments=\[\]", out)


def test_compare_runs_ingests_and_compares() -> None:
    out = run_example("compare_runs.py")
    assert out.count("sent 500 points in 1 request(s)") == 3
    assert "compare returned 1200 rows for steps 100-499" in out
    widths = re.findall(r"width-(\d+)-[\d-]+: accuracy at step 499", out)
    assert widths == ["1024", "512", "256"]  # a wider run learns faster in this example
