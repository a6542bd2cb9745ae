"""Stopping the server and worker processes the benchmarks start.

Example::

    stop_process(server, grace=15)
    kill_process(worker)
"""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM (a server closes its store cleanly), then wait up to ``grace`` seconds; kill
    it if it hangs. Its stdout pipe is closed either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def kill_process(process: subprocess.Popen[str]) -> None:
    """End a worker that is still running, at once, and reap it."""
    if process.poll() is None:
        process.kill()
        process.wait()
