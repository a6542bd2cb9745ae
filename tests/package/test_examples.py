"""The examples run end to end as a user would start them: a subprocess, no credentials,
so each starts its own local server on the per-user data file (under this test's
``SYVAIN_METRICS_HOME``), and runs again on the data the first run left."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer

pytest.importorskip("waitress", reason="the examples' local server needs the 'local' extra")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str) -> str:
    # No credentials; the data file's directory stays the test's own (tests/conftest.py).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SYVAIN_METRICS_") or k == "SYVAIN_METRICS_HOME"
    }
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


def test_the_quickstart_runs_again_on_the_data_it_kept(
    local_data_home: Path,
) -> None:
    first = run_example("quickstart.py")
    data = local_data_home / "local.sqlite"
    assert f"Its data stays in {data}." in first
    second = run_example("quickstart.py")  # the same file, the same kept API key
    assert "compared 40 valid points across 2 runs:" in second
    with LocalServer.open() as server, server.session(spool_dir=None) as session:
        folders = sm.Folder.list(session=session)
        assert len(folders) == 2
        assert all(f.name.startswith("quickstart-") for f in folders)
        runs = sm.Experiment.list(session=session)
        assert len(runs) == 4
        assert {r.status for r in runs} == {"done"}
        key = server.api_key
    assert key not in first + second


def test_organize_renames_moves_and_lists() -> None:
    out = run_example("organize.py")
    assert re.search(r"renamed to projects-[\w-]+/computer-vision", out)
    assert re.search(r"moved resnet-[\w-]+ to projects-[\w-]+/nlp-[\w-]+", out)
    assert re.search(r"moved (nlp-[\w-]+) to the root: \1\n", out)
    assert re.search(r"nlp-[\w-]+: folders=\[\] experiments=\['resnet-[\w-]+'\]", out)
    assert re.search(r"projects-[\w-]+: folders=\['computer-vision'\] experiments=\[\]", out)


def test_organize_runs_again_on_the_data_it_kept() -> None:
    run_example("organize.py")
    out = run_example("organize.py")  # its folder moved to the root has a name of its own
    assert re.search(r"moved (nlp-[\w-]+) to the root: \1\n", out)


def test_compare_runs_ingests_and_compares() -> None:
    out = run_example("compare_runs.py")
    assert out.count("sent 500 points in 1 request(s)") == 3
    assert "compare returned 1200 rows for steps 100-499" in out
    widths = re.findall(r"width-(\d+)-[\d-]+: accuracy at step 499", out)
    assert widths == ["1024", "512", "256"]  # a wider run learns faster in this example
