"""What every entry point (index, eval, train, release) says when the user points it at the wrong thing.

- :func:`check_model_source`: a ``--model`` that is neither a checkpoint folder nor a usable Hub id fails in one
  line that names it and the fix, before anything heavy runs (instead of transformers' 45-line traceback about
  repo ids).
- :func:`report`: an entry point prints such an error once, as ``error: ...``, from the first process only under
  ``torchrun`` / ``accelerate launch`` / ``mpiexec`` (every process stops, one says why).

Example::

    >>> check_model_source("build/tinyy", "--model")
    ModelSourceError: --model build/tinyy: no such folder, and not a Hub model in the local cache (HF_HUB_OFFLINE=1) ...
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# A Hub repo id: "name" or "org/name" (letters, digits, "-", "_", "."; no "--" or ".." and no leading "."/"/").
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
MAKE_ONE = "python scripts/build_model.py --tiny --out build/tiny makes one offline"
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


class ModelSourceError(ValueError):
    """A model path / Hub id that cannot be a viPyloQwen checkpoint; the message is one line with the fix."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_model_source(source: str | os.PathLike, what: str = "--model", local: bool = False) -> str:
    """``source`` as a string if it is a checkpoint folder (holds ``config.json``) or, unless ``local``, a Hub id
    that can be loaded (offline: one in the local cache); else :class:`ModelSourceError` naming ``what``,
    ``source`` and the fix."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if local and not path.exists():
        raise ModelSourceError(
            f"{what} {text}: no such folder; give a checkpoint folder written by scripts/build_model.py or "
            f"train_st.py (<output_dir>/final)"
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(
                f"{what} {text}: not a checkpoint (no config.json in the folder); give a folder written by "
                f"scripts/build_model.py or train_st.py (its final/), or a Hub id such as erax-ai/viPyloQwen"
            )
        return text
    if path.exists():
        raise ModelSourceError(f"{what} {text}: a file, not a checkpoint folder; give the folder with config.json")
    looks_like_id = HUB_ID.match(text) and "--" not in text and ".." not in text
    if not looks_like_id:
        raise ModelSourceError(f"{what} {text}: no such folder (and not a Hub id org/name); {MAKE_ONE}")
    if _offline() and not _cached(text):
        raise ModelSourceError(
            f"{what} {text}: no such folder, and not a Hub model in the local cache (HF_HUB_OFFLINE=1); give a "
            f"checkpoint folder ({MAKE_ONE}) or download the model first"
        )
    return text


def launch_rank() -> int:
    """This process's rank under torchrun / accelerate launch / mpiexec (0 when not launched)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def report(error: BaseException | str, code: int = 2) -> int:
    """Print ``error: <message>`` to stderr on the first process only; return the exit code for every process."""
    if launch_rank() == 0:
        print(f"error: {error}", file=sys.stderr, flush=True)
    return code
