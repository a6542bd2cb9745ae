"""Running a training job in a child process, as a launcher would (``RANK=1``...), and
checking that it sent nothing: shared by the integrations' tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.conftest import service_setting as _service_setting

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


def run_file(script: Path, env: dict[str, str], *launcher: str) -> subprocess.CompletedProcess[str]:
    """Run a script file, with ``python`` or through a launcher (``torchrun ...``)."""
    return subprocess.run(
        [*launcher, str(script)] if launcher else [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def subprocess_env(server: LocalServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A child's environment: ``server`` as its service, a spool under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not _service_setting(k)}
    env.update(
        SYVAIN_METRICS_API_KEY=server.api_key,
        SYVAIN_METRICS_HOST=server.url,
        SYVAIN_METRICS_SPOOL_DIR=str(tmp_path / "spool"),
        SYVAIN_METRICS_CAPTURE_ENV="0",
        PYTHONPATH=str(ROOT),
        MASTER_ADDR="127.0.0.1",
    )
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback port nobody listens on, for a launcher's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def by_slug(slug: str, session: sm.Session | None = None) -> sm.Experiment:
    """The one experiment called ``slug``."""
    (exp,) = sm.Experiment.list(slug=slug, session=session)
    return exp


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (a bound against a hang, not a measure)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the condition was never met"
        time.sleep(0.02)


def torchrun_two() -> list[str]:
    """The launcher of a two-process job on this machine, on a free loopback port."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
    ]
