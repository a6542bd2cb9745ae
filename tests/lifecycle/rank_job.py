"""One rank of a distributed job, as torchrun would start it: run in a process of its own
(``multiprocessing`` spawn) by ``test_ranks.py``. Kept apart from the test module so that
each rank imports only the SDK."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import syvain_metrics as sm

EVENTS = 50
"""``log()`` events each rank makes."""


def rank_job(
    rank: int,
    world: int,
    mode: str,
    url: str,
    api_key: str,
    spool_root: str,
    slug: str,
    start: Any,
    rank_zero_done: Any,
    report: Any,
) -> None:
    """Create ``slug`` at the same moment as every other rank, log :data:`EVENTS` events in
    ``run()``; once rank 0's run is over, try to change the status (``run()`` again, then
    ``fail()``). Puts ``(rank, id or None, threads started, spool made, repr)`` on ``report``."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    spool = Path(spool_root) / f"rank-{rank}"
    session = sm.Session(api_key, host=url, spool_dir=spool, ranks=mode)
    threads = threading.active_count()
    start.wait()
    exp = sm.Experiment.create(slug, metadata={"world": world}, session=session)
    if rank == 0:
        with exp.run():
            for step in range(EVENTS):
                exp.log("loss", float(step), step=step)
        rank_zero_done.wait()
    else:
        rank_zero_done.wait()  # rank 0's run is done: a status change now would show
        with exp.run():
            for step in range(EVENTS):
                exp.log("loss", float(step), step=step, metadata={"split": "train"})
        exp.fail("not rank 0")
        exp.flush(timeout=60)
    started = threading.active_count() - threads
    writes = session.writes
    session.close()
    report.put((rank, exp.id if writes else None, started, spool.exists(), repr(exp)))
