"""The virtual environment a benchmark's published peer runs in.

The published Syvain packages cannot share an environment with this SDK's dependencies,
so each benchmark installs its peer, at a pinned version, into a venv of its own and runs
its half there as a subprocess.

Example::

    python = ensure_peer_env(Path("benchmarks/.venv-published"), "syvain-metrics-api-client", "0.0.71")
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def ensure_peer_env(venv: Path, package: str, version: str) -> Path:
    """Create (or reuse) ``venv`` holding exactly ``package==version``; return its python."""
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print(f"creating {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / ".gitignore").write_text("*\n")  # what `python -m venv` writes from 3.13 on
    probe = f"import importlib.metadata as m; print(m.version({package!r}))"
    installed = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=False
    )
    if installed.returncode != 0 or installed.stdout.strip() != version:
        print(f"installing {package}=={version} into {venv} ...", file=sys.stderr, flush=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"{package}=={version}"], check=True)
    return python
