"""Prepare the next batches while the model runs: preprocessing off the critical path of ``encode``.

:func:`prefetch` maps a batch-preparing function over a list of jobs in worker processes (a
``torch.utils.data.DataLoader`` over the jobs, forked workers, tensors handed back through shared memory) or
in threads, and yields the results **in job order**, so the caller runs exactly the forwards it would run
without workers: the embeddings are bit-identical to ``num_workers=0``.

An exception raised while preparing a job is re-raised in the caller as the original exception object,
at the position of that job, as it would be without workers (the DataLoader would otherwise wrap it).

Example::

    >>> from prefetch_vipyloqwen import prefetch
    >>> list(prefetch(lambda n: n * n, [1, 2, 3], num_workers=2))
    [1, 4, 9]
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")
WORKER_TYPES = ("auto", "process", "thread")
# Jobs in flight per worker: enough to hide one slow batch, few enough to bound memory.
PREFETCH_PER_WORKER = 2
# Upper bound of the automatic worker count (each prepared batch is held in memory until the model takes it).
MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_num_workers(num_workers: int | None, jobs: int, has_images: bool = True) -> int:
    """``num_workers`` as given (validated), or the default for ``jobs`` batches when ``None``.

    The default is one worker per available core (at most ``MAX_AUTO_WORKERS``) when the items carry images:
    opening and resizing a page costs tens of milliseconds of one core, a forward on a GPU a few, so it takes
    several cores to keep a GPU fed. It is 0 for a single batch and for text-only items, whose tokenisation
    (microseconds per text) costs less than handing batches between processes (measured: bench/index_bench.py).
    """
    if num_workers is None:
        return 0 if jobs <= 1 or not has_images else min(MAX_AUTO_WORKERS, available_cores())
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer or None (automatic), got {num_workers!r}")
    return num_workers


def resolve_worker_type(worker_type: str, device: torch.device | str | None = None) -> str:
    """``"process"`` or ``"thread"``: ``worker_type`` as given (validated), or for ``"auto"`` the one for ``device``.

    ``"auto"`` is processes when the model runs on an accelerator and threads when it runs on the CPU. On a GPU the
    main process only launches kernels, so preprocessing may use every other core, and only processes scale past
    the GIL. On the CPU the forward itself needs the cores: handing batches over from forked processes (fork, shared
    memory, page faults) cost more than it saved, while threads overlap the GIL-free parts (PIL resize, numpy,
    tokenizers). Measured on 2 cores, tiny model, 96 A4 pages: 2 threads 1.65x the items/s of ``num_workers=0``,
    2 processes 1.33x (``bench/encode_bench.py``, docs/performance.md).
    """
    if worker_type not in WORKER_TYPES:
        raise ValueError(f"worker_type must be one of {WORKER_TYPES}, got {worker_type!r}")
    if worker_type != "auto":
        return worker_type
    kind = torch.device(device).type if device is not None else "cpu"
    return "thread" if kind == "cpu" else "process"


def _identity(value: Any) -> Any:
    return value


class _Jobs(torch.utils.data.Dataset):
    """Map-style dataset over the jobs; ``__getitem__`` runs ``fn`` and captures its exception."""

    def __init__(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> None:
        self.fn = fn
        self.jobs = jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> tuple[bool, Any]:
        return _call(self.fn, self.jobs[index])


def _call(fn: Callable[[Any], Any], job: Any) -> tuple[bool, Any]:
    try:
        return True, fn(job)
    except Exception as error:  # handed to the caller, which re-raises it in job order
        return False, error


def _unwrap(result: tuple[bool, Any]) -> Any:
    ok, value = result
    if not ok:
        raise value
    return value


def _processes(fn: Callable[[Any], T], jobs: Sequence[Any], num_workers: int, pin_memory: bool) -> Iterator[T]:
    loader = torch.utils.data.DataLoader(
        _Jobs(fn, jobs),
        batch_size=None,  # each job is already a batch
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,  # hand back exactly what fn returned
        prefetch_factor=PREFETCH_PER_WORKER,
        pin_memory=pin_memory,
        # fork: the workers inherit fn and the jobs (closures, model-side objects) without pickling them.
        multiprocessing_context=multiprocessing.get_context("fork"),
    )
    for result in loader:
        yield _unwrap(result)


def _threads(fn: Callable[[Any], T], jobs: Sequence[Any], num_workers: int) -> Iterator[T]:
    with ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="vipyloqwen-prefetch") as pool:
        pending: deque = deque()
        next_job = 0
        try:
            while next_job < len(jobs) or pending:
                while next_job < len(jobs) and len(pending) < num_workers * PREFETCH_PER_WORKER:
                    pending.append(pool.submit(_call, fn, jobs[next_job]))
                    next_job += 1
                yield _unwrap(pending.popleft().result())
        finally:
            for future in pending:  # the caller stopped early: drop the work not yet started
                future.cancel()


def prefetch(
    fn: Callable[[Any], T],
    jobs: Sequence[Any],
    num_workers: int = 0,
    worker_type: str = "process",
    pin_memory: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[T]:
    """Yield ``fn(job)`` for every job, in order, computed up to ``2 x num_workers`` jobs ahead.

    Args:
        fn: prepares one job (e.g. one batch of items -> model inputs). With ``worker_type="process"`` it runs
            in forked worker processes (one torch thread each); it may be a closure.
        jobs: the jobs, in the order their results are wanted.
        num_workers: 0 runs ``fn`` lazily in the caller, one job at a time (no overlap).
        worker_type: ``"process"`` (DataLoader workers; where the platform cannot fork, threads are used),
            ``"thread"`` (a thread pool: cheaper to start, but only the parts of ``fn`` that release the GIL
            run in parallel) or ``"auto"`` (:func:`resolve_worker_type` for ``device``).
        pin_memory: pin the returned tensors (processes only), for asynchronous copies to a GPU.
        device: where the results will be used; only read by ``worker_type="auto"``.
    """
    worker_type = resolve_worker_type(worker_type, device)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0 or not jobs:
        return (fn(job) for job in jobs)
    if worker_type == "process" and "fork" in multiprocessing.get_all_start_methods():
        return _processes(fn, jobs, num_workers, pin_memory)
    return _threads(fn, jobs, num_workers)


__all__ = ["prefetch", "resolve_num_workers", "resolve_worker_type", "available_cores", "WORKER_TYPES"]
