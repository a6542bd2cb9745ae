"""Which process of a distributed job this is, read from the launcher's environment, and
what the session does about it.

Every rank of a job started by ``torchrun``, SLURM's ``srun`` or ``mpirun`` runs the same
script. :func:`detect` tells them apart from the variables the launcher sets (nothing is
imported, nothing is asked of the network); :func:`rank_mode` reads the session's choice:

- ``"zero"`` (the default): only rank 0 writes. On other ranks ``Experiment.create()``
  returns a stand-in whose writing calls (``log``, ``ingest``, ``annotate``, status
  changes, ``run()``, ``flush``) cost nothing and send nothing: no thread, no spool.
- ``"all"``: every rank writes into one experiment; each event carries the rank in its
  metadata (``{"rank": 3}``) and only rank 0 changes the run's status.

Example:
    >>> detect({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"})
    RankInfo(rank=3, local_rank=1, world_size=8, launcher='torchrun')
    >>> detect({})
    RankInfo(rank=0, local_rank=0, world_size=1, launcher=None)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from syvain_metrics.errors import MetricsValidationError

RANK_MODES = ("zero", "all")
"""What ``Session(ranks=...)`` and ``$SYVAIN_METRICS_RANKS`` take."""

RANKS_ENV = "SYVAIN_METRICS_RANKS"

# (launcher, rank, local rank, world size), first match wins. torchrun first: under
# `srun torchrun ...` the SLURM variables describe the srun task (one per node), not the rank.
_LAUNCHERS = (
    ("torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"),
    ("pmi", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE"),
)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a distributed job: ``rank`` (0 to ``world_size - 1``),
    ``local_rank`` (on its node) and the launcher it was read from (``None``: not
    started by a known launcher, a job of one process).

    Example:
        >>> RankInfo(rank=0, local_rank=0, world_size=1, launcher=None).is_zero
        True
    """

    rank: int
    local_rank: int
    world_size: int
    launcher: str | None

    @property
    def is_zero(self) -> bool:
        """Whether this is rank 0 (the process that creates and ends runs)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the job has more than one process."""
        return self.world_size > 1


def _whole(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def detect(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Rank, local rank and world size from the launcher's variables (``os.environ`` by
    default): torchrun (``RANK``/``LOCAL_RANK``/``WORLD_SIZE``), Open MPI
    (``OMPI_COMM_WORLD_*``), SLURM (``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS``),
    then MPICH/Intel MPI (``PMI_RANK``/``PMI_SIZE``). A launcher whose variables are
    missing, not whole numbers or inconsistent (rank ≥ size) is passed over; with none,
    a job of one process.

    Example:
        >>> detect({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16"})
        RankInfo(rank=5, local_rank=1, world_size=16, launcher='slurm')
        >>> detect({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4"}).local_rank
        2
    """
    env = os.environ if environ is None else environ
    for launcher, rank_key, local_key, size_key in _LAUNCHERS:
        rank = _whole(env.get(rank_key))
        size = _whole(env.get(size_key))
        if rank is None or size is None or size < 1 or rank >= size:
            continue
        local = _whole(env.get(local_key))
        # Without a local rank, one process per node is the safe guess for device choice.
        return RankInfo(rank, rank if local is None else local, size, launcher)
    return RankInfo(0, 0, 1, None)


def rank_mode(ranks: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The session's rank mode: ``ranks`` if given, else ``$SYVAIN_METRICS_RANKS``, else
    ``"zero"``; anything else is a :class:`~syvain_metrics.MetricsValidationError`.

    Example:
        >>> rank_mode(None, {}), rank_mode(None, {"SYVAIN_METRICS_RANKS": "ALL"})
        ('zero', 'all')
        >>> rank_mode("every")
        Traceback (most recent call last):
        ...
        syvain_metrics.errors.MetricsValidationError: Invalid input: ranks: Must be "zero" or "all".
    """
    env = os.environ if environ is None else environ
    source, value = ("ranks", ranks) if ranks is not None else (RANKS_ENV, env.get(RANKS_ENV))
    if value is None or (source == RANKS_ENV and not value.strip()):
        return "zero"
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in RANK_MODES:
        raise MetricsValidationError({source: ['Must be "zero" or "all".']})
    return str(mode)


def rank_info() -> RankInfo:
    """This process's rank, read from the launcher's environment now (see :func:`detect`).

    Example:
        >>> import syvain_metrics as sm
        >>> sm.rank_info().world_size >= 1
        True
    """
    return detect()
