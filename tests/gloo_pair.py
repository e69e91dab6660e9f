"""One pair of gloo processes per session for the tests that call collectives directly (InfoNCE gathers, the data
error broadcast, the FSDP2 state dict): every such test's worker runs in the same two spawned processes, one after
the other, with the process group set up once. Starting a pair (two interpreters importing torch and transformers)
costs far more than any of the workers.

A test module takes part by defining ``gloo_prepare(folder)`` (writes its inputs, in the pytest process) and
``gloo_worker(rank, folder)`` (runs in both processes; writes its results into ``folder``), and by using the
conftest fixture ``gloo_pair``, which runs the workers of the modules collected in this session.
"""

from __future__ import annotations

import importlib
import os
from datetime import timedelta

WORLD = 2
TIMEOUT = timedelta(minutes=5)  # a collective a worker never reaches fails the pair in 5 min, not torch's 30


def _pair_main(rank: int, port: int, jobs: list[tuple[str, str]]) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=TIMEOUT)
    try:
        for module, folder in jobs:
            importlib.import_module(module).gloo_worker(rank, folder)
            dist.barrier()  # the next worker starts on both ranks together
    finally:
        dist.destroy_process_group()


def run_pair(jobs: list[tuple[str, str]]) -> None:
    """Run ``(module, folder)`` jobs in one pair of spawned gloo processes; a worker's error fails the pair (the
    other process is stopped) with that worker's traceback."""
    import torch.multiprocessing as mp
    from conftest import free_port

    mp.start_processes(_pair_main, args=(free_port(), jobs), nprocs=WORLD, start_method="spawn")
