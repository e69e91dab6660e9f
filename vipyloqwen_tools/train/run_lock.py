"""One run per output folder: an exclusive lock on ``<output_dir>/.run.lock`` for the whole run.

Two runs on one ``--output-dir`` (the same command started twice, a resume while the first run still lives) delete
each other's saves in progress and replace each other's checkpoints, and both can exit 0. So the main process of a
run takes an exclusive ``fcntl.flock`` on ``<output_dir>/.run.lock`` before anything is written there and holds it
until the run ends:

- the file records the holder: pid, host, start time, command, number of processes; a second run that finds the
  lock held exits at once (``train_st.py``: exit 2) naming that holder;
- the kernel releases a ``flock`` when its process dies, however it dies (kill -9 included), so a lock is never
  left held by a dead process. A run that ended without releasing (killed) leaves its record in the file; the next
  run takes the lock over and says so, naming the pid it took it from and whether that process still runs;
- a run that ends normally (or raises) releases the lock and empties the file; the file itself stays (unlinking it
  could let two runs lock two different files of the same name);
- under torchrun / accelerate launch only the main process (rank 0) takes the lock, one for the run; every process
  learns the outcome from one all-reduce and all of them stop together when it is held
  (:func:`vipyloqwen_tools.train.arguments.open_run`).

``flock`` locks are per host on most network file systems (NFS client locks may be emulated with ``fcntl`` and work
across hosts; Lustre needs ``-o flock``): runs started on two hosts against one shared folder are caught only where
the file system forwards the lock.

Example::

    >>> lock = RunLock("runs/tiny")
    >>> lock.acquire()            # OutputDirLockedError if another run holds it
    >>> lock.release()
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("vipyloqwen.train")
LOCK_FILE = ".run.lock"


class OutputDirLockedError(RuntimeError):
    """Another run holds the output folder's lock."""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_holder(record: dict[str, Any]) -> str:
    """``pid 123 on host, started ..., command ...`` of a lock record."""
    parts = [f"pid {record.get('pid')} on {record.get('host')}"]
    if record.get("started"):
        parts.append(f"started {record['started']}")
    if record.get("world_size", 1) > 1:
        parts.append(f"{record['world_size']} processes")
    if record.get("command"):
        parts.append(f"command: {record['command']}")
    return ", ".join(parts)


class RunLock:
    """The lock of one output folder (see the module docstring)."""

    def __init__(self, output_dir: str | os.PathLike, world_size: int = 1) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self.world_size = int(world_size)
        self.fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    def _read(self, fd: int) -> dict[str, Any] | None:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 1 << 16).decode("utf-8", errors="replace").strip()
        if not text:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            return {"pid": None, "host": None, "raw": text[:200]}
        return record if isinstance(record, dict) else None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputDirLockedError` naming its holder; never waits."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd) or {}
            os.close(fd)
            raise OutputDirLockedError(
                f"output folder {self.output_dir} is in use by another run ({describe_holder(holder)}; lock file "
                f"{self.path}). Two runs on one folder overwrite each other's checkpoints: wait for that run to end "
                "or stop it (SIGTERM saves a checkpoint first), or give this run another --output-dir."
            ) from None
        previous = self._read(fd)
        if previous and previous.get("pid") is not None:
            self.took_over = previous
            here = previous.get("host") == socket.gethostname()
            alive = here and isinstance(previous.get("pid"), int) and _running(previous["pid"])
            state = (
                "that process no longer runs"
                if here and not alive
                else "a process of that pid runs but does not hold the lock"
                if here
                else "on another host"
            )
            logger.warning(
                "output folder %s: taking over the lock of a run that ended without releasing it (%s; %s)",
                self.output_dir, describe_holder(previous), state,
            )  # fmt: skip
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
            "world_size": self.world_size,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        """Empty the record and release the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


__all__ = ["LOCK_FILE", "OutputDirLockedError", "RunLock", "describe_holder"]
