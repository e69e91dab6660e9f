"""Embeddings of the miner's queries and documents: windowed, sharded over ranks, resumable, as training computes them.

A list of sides (``{"text", "images"}``) is cut into windows of ``window`` items in order; a window is batched exactly
as the model's own ``encode`` batches a call (by length: ``processor.item_lengths`` / ``length_batches``, each batch
``processor.batch_inputs``), and rank ``r`` embeds the batches ``r, r + N, ...`` of it (so every item is embedded in
the same batch whatever the number of processes, and 1 and N processes give identical vectors). Each rank writes its
part of the window (atomic rename); after a barrier rank 0 merges the parts into ``<folder>/w<window>.npy`` and
removes them. A window whose ``.npy`` exists is done: a killed run resumes at the first missing window and embeds
nothing twice.

Queries carry their task prefix (``task=``), documents the training document prompt (``prompt=``,
:func:`vipyloqwen_tools.train.evaluation.document_prefix`): the inputs training embeds.

Example::

    >>> vectors = embed_sides(model, sides, Path("work/emb/documents-ocr"), group, prompt=None)
    >>> vectors.shape                                        # (len(sides), embed_dim), memory-mapped
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_WINDOW = 4096


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # never matched by the window patterns
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _inputs(processor: Any, sides: Sequence[dict], task: str | None, prompt: str | None) -> list[list[dict]]:
    return processor.build_messages(
        text=[side.get("text") or "" for side in sides],
        images=[list(side.get("images") or []) or None for side in sides],
        task=task,
        prompt=prompt,
    )


def embed_sides(
    model: Any,
    sides: Sequence[dict],
    folder: Path,
    group: Any,
    task: str | None = None,
    prompt: str | None = None,
    batch_size: int = 16,
    window: int = DEFAULT_WINDOW,
    max_image_tokens: int | None = None,
    max_length: int | None = None,
    num_workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """The unit embeddings ``[len(sides), embed_dim]`` (float32, memory-mapped from ``folder``), computed where missing.

    ``group``: the ranks (``.rank``, ``.world``, ``.barrier()``); every rank calls this with the same arguments.
    """
    from prefetch_vipyloqwen import prefetch, resolve_num_workers
    from processing_vipyloqwen import length_batches

    folder.mkdir(parents=True, exist_ok=True)
    processor = model.processor
    device = next(model.parameters()).device
    starts = list(range(0, len(sides), window))
    for number, start in enumerate(starts):
        done = folder / f"w{number:06d}.npy"
        if done.is_file():
            continue
        part = folder / f"w{number:06d}-r{group.rank}.npz"
        chunk_sides = sides[start : start + window]
        messages = _inputs(processor, chunk_sides, task, prompt)
        chunks = length_batches(processor.item_lengths(messages, max_image_tokens, max_length), batch_size)
        mine = chunks[group.rank :: group.world]

        def prepare(chunk: list[int], messages: list = messages) -> dict[str, torch.Tensor]:
            return processor.batch_inputs([messages[i] for i in chunk], chunk, max_image_tokens, max_length)

        has_images = any(side.get("images") for side in chunk_sides)
        workers = resolve_num_workers(num_workers, len(mine), has_images)
        positions: list[int] = []
        vectors: list[torch.Tensor] = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
            for chunk, batch in zip(mine, prefetch(prepare, mine, workers, "auto", device=device), strict=True):
                vectors.append(model.embed_batch(batch).float().cpu())
                positions.extend(chunk)
        dim = int(model.config.embed_dim)
        matrix = torch.cat(vectors).numpy() if vectors else np.zeros((0, dim), np.float32)
        tmp = part.with_name(f".tmp-{os.getpid()}-{part.name}")
        np.savez(tmp, positions=np.asarray(positions, dtype=np.int64), vectors=matrix.astype(np.float32))
        os.replace(tmp, part)
        group.barrier()  # every rank's part of the window is written
        if group.rank == 0:
            merged = np.zeros((len(chunk_sides), dim), dtype=np.float32)
            filled = np.zeros(len(chunk_sides), dtype=bool)
            for path in sorted(folder.glob(f"w{number:06d}-r*.npz")):
                with np.load(path) as data:
                    merged[data["positions"]] = data["vectors"]
                    filled[data["positions"]] = True
            if not filled.all():
                raise RuntimeError(f"{folder}: window {number} is missing {int((~filled).sum())} embeddings")
            _atomic_save(done, merged)
            for path in folder.glob(f"w{number:06d}-r*.npz"):
                path.unlink()
            if log is not None:
                log(f"[mine] embedded {folder.name}: {start + len(chunk_sides)} of {len(sides)}")
        group.barrier()  # the merged window exists before anyone moves on
    if not sides:
        return np.zeros((0, int(model.config.embed_dim)), dtype=np.float32)
    parts = [np.load(folder / f"w{number:06d}.npy", mmap_mode="r") for number in range(len(starts))]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


__all__ = ["DEFAULT_WINDOW", "embed_sides"]
