"""The bench harness: what every script in ``bench/`` shares to measure and to write what it measured.

- **machine**: :func:`machine_info` (CPU, cores, memory, load, library versions) and :func:`results_header`
  (``benchmark``, ``created``, ``machine``: the first keys of every results JSON);
- **timing**: :class:`Stopwatch` (a block), :func:`timed` (one call), :func:`interleaved` (every runner once per
  round, in a rotated order, so machine noise hits all alike), :func:`median` and :func:`median_ratio` (per-round
  ratio to a reference);
- **memory**: :func:`rss_bytes`, :func:`release_memory`, :class:`PeakRSS` (peak RSS of a block in this process,
  sampled by a thread), :func:`peak_rss_bytes` (``VmHWM``: the high-water mark of this process image);
- **output**: :func:`write_json` (the results file, optionally atomic) and :func:`print_targets` (the
  ``[MET   ]`` / ``[MISSED]`` / ``[info  ]`` lines).

Peak memory (:class:`PeakRSS`) is the peak resident set size (read from ``/proc/self/statm`` every 2 ms) above the
RSS just before the measured call, after ``malloc_trim(0)`` returns freed heap to the OS. It counts every
allocation of the process (torch tensors, PIL images, tokenizer buffers), unlike ``tracemalloc``, which does not
see torch's allocator. :func:`peak_rss_bytes` reads ``VmHWM`` rather than ``getrusage(RUSAGE_SELF).ru_maxrss``:
Linux carries ru_maxrss over fork and exec from the parent, so a measured child would report its driver's peak.

Example::

    >>> from bench.harness import interleaved, median_ratio
    >>> times = interleaved({"a": lambda: sum(range(1000)), "b": lambda: sum(range(2000))}, repeats=3)
    >>> sorted(times), len(times["a"])
    (['a', 'b'], 3)
    >>> median_ratio(times["b"], times["b"])
    1.0

Imports are light (torch only inside the functions that need it), so a measured child process can import this
module without raising its own peak.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

THREADS_HELP = (
    "torch threads (default 1: on a shared CPU, OpenMP threads spin-waiting on busy cores made 2-thread timings "
    "10-40x slower and erratic; 0 = torch's default)"
)


# ---------------------------------------------------------------------------------------------- machine
def utc_now() -> str:
    """The current UTC time, to the second (ISO 8601), as results record it."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, memory, torch threads and library versions of this machine."""
    import sentence_transformers
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "device": "cpu",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": memory_gb,
        "load_average_1min_at_start": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "platform": platform.platform(),
    }


def results_header(benchmark: str) -> dict[str, Any]:
    """The first keys of a results JSON: ``benchmark`` (what ``bench/report.py`` dispatches on), ``created`` and
    ``machine``."""
    return {"benchmark": benchmark, "created": utc_now(), "machine": machine_info()}


def memory_method(before: str = "call") -> str:
    """How :class:`PeakRSS` measured, in the words results record (``before``: what the baseline precedes)."""
    return f"peak RSS above the pre-{before} RSS (/proc/self/statm sampled every 2 ms; malloc_trim first)"


def set_threads(threads: int) -> int:
    """``torch.set_num_threads(threads)`` unless ``threads`` is 0 (torch's default); returns the threads in use."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------- arguments
def bench_parser(doc: str | None, example: str | None = None) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of a script's docstring, with its example as epilog."""
    return argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        epilog=f"example: {example}" if example else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model``: ``tiny`` | ``2b-shaped`` | a checkpoint path (see ``bench/common.py``)."""
    parser.add_argument("--model", default="tiny", help="tiny | 2b-shaped | PATH to a checkpoint (default: tiny)")


def add_size_arguments(
    parser: argparse.ArgumentParser, sizes: Mapping[str, Any], what: str, repeats: tuple[int, int]
) -> None:
    """``--quick``, ``--size`` (a key of ``sizes``) and ``--repeats``; :func:`resolve_size` reads them back.

    ``what``: what the sizes set (e.g. "workloads"); ``repeats``: the default rounds with and without ``--quick``.
    """
    quick, full = repeats
    parser.add_argument("--quick", action="store_true", help=f"small {what} and {quick} repeats (minutes on a CPU)")
    parser.add_argument("--size", choices=sorted(sizes), help=f"{what} size (default: quick with --quick, else full)")
    parser.add_argument("--repeats", type=int, help=f"timed rounds (default: {quick} quick, {full} full)")


def resolve_size(args: argparse.Namespace, repeats: tuple[int, int]) -> tuple[str, int]:
    """(size, repeats) from :func:`add_size_arguments`' flags: ``--size`` / ``--repeats`` win over ``--quick``."""
    size = args.size or ("quick" if args.quick else "full")
    return size, args.repeats or (repeats[0] if args.quick else repeats[1])


def parse_run_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``argv`` parsed after adding the flags every run takes: ``--threads`` (default 1) and ``--out`` (the JSON)."""
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- timing
class Stopwatch:
    """Context manager: wall seconds of the block (``perf_counter``), in ``seconds`` once it has ended.

    Example::

        >>> with Stopwatch() as clock:
        ...     total = sum(range(1000))
        >>> clock.seconds >= 0
        True
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def timed(run: Callable[[], Any]) -> float:
    """Wall seconds of one call of ``run``."""
    with Stopwatch() as clock:
        run()
    return clock.seconds


def interleaved(
    runners: Mapping[str, Callable[[], Any]],
    repeats: int,
    *,
    before: Callable[[str], None] | None = None,
    after: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds of every runner in each of ``repeats`` rounds; round ``r`` starts at runner ``r mod n``.

    The rotation spreads a slow stretch of a shared machine over all runners instead of one. ``before(name)`` and
    ``after(name)`` run just outside each timed call (e.g. reset and read a token counter).
    """
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            if before is not None:
                before(name)
            times[name].append(timed(runners[name]))
            if after is not None:
                after(name)
    return times


def median(values: Iterable[float]) -> float:
    """The median, ``nan`` for no values."""
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def median_ratio(values: Iterable[float], reference: Iterable[float]) -> float:
    """Median over rounds of ``value / reference`` of the same round (same length required)."""
    return median(v / r for v, r in zip(values, reference, strict=True))


# ---------------------------------------------------------------------------------------------- memory
_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * _PAGE


def status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmHWM``: peak RSS, ``VmRSS``: current) in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_bytes() -> int:
    """This process image's own peak RSS (``VmHWM``; fresh after exec). Without ``/proc``: ``ru_maxrss``, an upper
    bound (Linux starts it at the parent's RSS at fork)."""
    try:
        return status_bytes("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS deltas start from a clean floor."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class PeakRSS:
    """Context manager: peak RSS above the RSS at entry, sampled every ``interval`` seconds by a thread.

    Example::

        >>> import torch
        >>> with PeakRSS() as peak:
        ...     x = torch.ones(10_000_000)
        >>> peak.delta_mb > 30
        True
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        release_memory()
        self.baseline = self.peak = rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


# ---------------------------------------------------------------------------------------------- output
def write_json(
    path: Path, data: Any, *, indent: int = 2, atomic: bool = False, log: bool = True, default: Any = None
) -> Path:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept as is) with a final newline, creating the folder.

    ``atomic``: write a ``.tmp`` sibling and rename it over ``path``, so a reader or a killed run never sees half a
    file. ``log``: print ``wrote <path>``. ``default``: as :func:`json.dumps` (e.g. ``str`` for odd objects).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=default) + "\n"
    target = path.with_name(path.name + ".tmp") if atomic else path
    target.write_text(text, encoding="utf-8")
    if atomic:
        target.replace(path)
    if log:
        print(f"wrote {path}")
    return path


def format_target(check: Mapping[str, Any]) -> str:
    """One target line: ``[MET   ] <target>: <value> (<limit>)`` (``MISSED`` / ``info`` when not met / no limit)."""
    status = {True: "MET", False: "MISSED", None: "info"}[check["met"]]
    return f"[{status:6}] {check['target']}: {check['value']:.3f} ({check['limit']})"


def print_targets(checks: Iterable[Mapping[str, Any]]) -> None:
    """Print :func:`format_target` of every check."""
    for check in checks:
        print(format_target(check))


def target(name: str, value: float, limit: str, met: bool | None) -> dict[str, Any]:
    """One checked target as results record it; ``met`` is None for a number that is reported, not checked."""
    return {"target": name, "value": value, "limit": limit, "met": met}


def finish(results: dict[str, Any], out: Path | None, *, show_targets: bool = True) -> dict[str, Any]:
    """The end of a bench run: print its targets (unless shown already), write ``out`` if given; returns ``results``."""
    if show_targets:
        print_targets(results.get("targets", []))
    if out:
        write_json(out, results)
    return results
