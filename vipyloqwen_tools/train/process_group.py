"""The process group's timeout: ``--ddp-timeout`` bounds how long a rank waits for a stuck one, on CPU as on GPU.

transformers 5 hands ``TrainingArguments.ddp_timeout`` to accelerate's ``PartialState`` (which passes it to
``torch.distributed.init_process_group``) on GPUs only: with ``use_cpu`` it leaves the timeout out, so a CPU (gloo)
group gets torch's default of 30 minutes and a stopped rank holds the others in an all-reduce that long.
:func:`init_process_group` creates the group first, through the same ``PartialState`` with the timeout; transformers
then finds it initialised and uses it. On a timeout every waiting rank raises (gloo: ``Timed out waiting ... for
recv``; NCCL's watchdog aborts the process) and the launcher ends the launch.

Waits that are not a stuck rank must not hit a short timeout: the other ranks wait for the main process while it
validates the data the first time (minutes on millions of rows), and while it builds or loads the model first
(:func:`main_process_first`). :func:`patient_group` is a second (gloo) group for such waits, with a timeout of
:data:`PATIENT_TIMEOUT_S`. Waits inside training are collectives of the default group: ``--ddp-timeout`` must exceed
the longest legitimate one (the main process saving a checkpoint while the others wait in the next all-reduce).

Example::

    >>> init_process_group(60)       # before SentenceTransformerTrainingArguments(...) under torchrun on CPU
    >>> group_timeout()              # the default group's timeout in seconds
    60.0
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

import torch

logger = logging.getLogger("vipyloqwen.train")
PATIENT_TIMEOUT_S = 24 * 3600
_PATIENT: list = []


def init_process_group(timeout_s: int) -> bool:
    """Create the default process group with ``timeout_s`` when launched with several processes on CPU.

    Returns True when it created the group here; False when there is nothing to do (one process, CUDA, where
    transformers passes the timeout itself, or a group that already exists).
    """
    import torch.distributed as dist
    from accelerate import PartialState
    from accelerate.utils import get_int_from_env

    # The launcher's world size (torchrun, or mpirun under accelerate launch's MULTI_CPU).
    world = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)
    if world < 2 or torch.cuda.is_available() or dist.is_initialized():
        return False
    PartialState(cpu=True, timeout=timedelta(seconds=timeout_s))
    logger.info("process group: gloo, timeout %s s (--ddp-timeout)", group_timeout())
    return True


def group_timeout(group=None) -> float | None:
    """The timeout in seconds of a process group's CPU backend (the default group when None), if it tells."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return None
    group = group or dist.group.WORLD
    try:
        backend = group._get_backend(torch.device("cpu"))
        return backend.options._timeout.total_seconds()
    except (AttributeError, RuntimeError):  # another backend without options: nothing to report
        return None


def patient_group():
    """A gloo group of every process with a timeout of :data:`PATIENT_TIMEOUT_S`, for waits that are long by design
    (created on first use: every process must call this at the same point)."""
    import torch.distributed as dist

    if not _PATIENT:
        _PATIENT.append(dist.new_group(backend="gloo", timeout=timedelta(seconds=PATIENT_TIMEOUT_S)))
    return _PATIENT[0]


@contextlib.contextmanager
def main_process_first(args):
    """transformers' ``args.main_process_first(local=False)``, waiting in :func:`patient_group` (a model build or
    load on the main process is no stuck rank)."""
    if args.world_size == 1:
        yield
        return
    import torch.distributed as dist

    group = patient_group()
    if args.process_index != 0:
        dist.barrier(group=group)
    yield
    if args.process_index == 0:
        dist.barrier(group=group)


__all__ = ["PATIENT_TIMEOUT_S", "group_timeout", "init_process_group", "main_process_first", "patient_group"]
