"""Running a training job in a child process, as a launcher would (``RANK=1``...), and
checking that it sent nothing: shared by the integrations' tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer

ROOT = Path(__file__).resolve().parents[2]

RANK_ONE = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
"""What a launcher (torchrun, accelerate, SLURM) sets for the second process of two."""


def run_job(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a child Python with this repository importable."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
        cwd=ROOT,
    )


def assert_nothing_sent(server: LocalServer, spool: Path | None = None) -> None:
    """The server holds no experiment, and nothing waits in ``spool`` either."""
    with server.session(spool_dir=None) as reader:
        assert sm.Experiment.list(session=reader) == []
    if spool is not None:
        assert list(spool.iterdir()) == []
