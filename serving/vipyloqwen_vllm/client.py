"""Start a viPyloQwen vLLM server from another Python (tests, benchmarks) and call ``/v1/embeddings``.

Standard library only: it runs in the project's ``.venv`` (no vLLM there) and starts the server with
``.venv-serve``'s ``vipyloqwen-serve``.

Example::

    >>> with running_server("build/tiny", serve_venv=".venv-serve") as url:
    ...     status, answer = post_embeddings(url, {"input": ["Xin chào"]})
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(
    checkpoint: str | Path,
    serve_venv: str | Path,
    args: list[str] | None = None,
    timeout_s: float = 900.0,
    log: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``vipyloqwen-serve checkpoint`` on a free port until the block ends; yields the base URL.

    Waits for ``/health``; raises RuntimeError with the log's tail if the server exits or is not up in
    ``timeout_s``. The server's process group is terminated (then killed after 60 s) on exit.
    """
    port = free_port()
    log = Path(log) if log else Path(tempfile.mkstemp(prefix="vipyloqwen-serve-", suffix=".log")[1])
    command = [str(Path(serve_venv) / "bin" / "vipyloqwen-serve"), str(checkpoint), "--port", str(port), *(args or [])]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}); {log}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {timeout_s:.0f} s; {log}:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def post_embeddings(url: str, body: dict | bytes, timeout_s: float = 600.0) -> tuple[int, dict]:
    """POST ``body`` (a dict, or JSON bytes) to ``url/v1/embeddings``; returns (HTTP status, JSON answer)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(f"{url}/v1/embeddings", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


__all__ = ["running_server", "post_embeddings", "free_port"]
