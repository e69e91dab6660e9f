"""The torchrun process group of the offline jobs (``scripts/index.py``; ``scripts/mine.py`` too), or one process.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the job joins torchrun's ``env://`` rendezvous with a gloo group: CPU
tensors only (counts and barriers), whatever device the model runs on; the timeout is long because one rank may
embed a whole window while the others wait at a barrier. Without a launcher it is a one-process stand-in whose
``barrier`` does nothing.

Example::

    group = LauncherGroup()
    try:
        if group.rank == 0:
            ...  # work only the first process does
        group.barrier()
    finally:
        group.close()
"""

from __future__ import annotations

import datetime as dt
import os

import torch

BARRIER_TIMEOUT = dt.timedelta(hours=6)


class LauncherGroup:
    """``world``, ``rank``, ``local_rank`` from torchrun's environment; ``started``: this object started the group
    (and :meth:`close` destroys it)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started = False
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
            self.started = True

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.started:
            torch.distributed.destroy_process_group()


__all__ = ["BARRIER_TIMEOUT", "LauncherGroup"]
