"""Rank, local rank and world size from the variables launchers set (torchrun, SLURM, MPI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

_RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")
_WORLD_SIZE_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
LAUNCHER_VARS = frozenset(_RANK_VARS + _LOCAL_RANK_VARS + _WORLD_SIZE_VARS)
"""Every variable rank, local rank and world size are read from."""


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_int(env: Mapping[str, str], names: tuple[str, ...], default: int, minimum: int) -> int:
    """The first variable holding a plain decimal number >= minimum; junk falls through."""
    for name in names:
        raw = (env.get(name) or "").strip()
        if raw.isascii() and raw.isdecimal() and int(raw) >= minimum:
            return int(raw)
    return default


def rank_info(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Read the rank triple; a process started without a launcher is rank 0 of 1."""
    env = os.environ if environ is None else environ
    return RankInfo(
        rank=_first_int(env, _RANK_VARS, 0, minimum=0),
        local_rank=_first_int(env, _LOCAL_RANK_VARS, 0, minimum=0),
        world_size=_first_int(env, _WORLD_SIZE_VARS, 1, minimum=1),
    )
