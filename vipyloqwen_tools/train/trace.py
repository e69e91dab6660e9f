"""Per-rank training trace: what each process trained on and what its parameters were after every optimizer step.

Set ``trace_dir`` in the training config (``--trace-dir runs/x/trace``) and every process appends one JSON line
per optimizer step to ``<trace_dir>/rank<r>.jsonl``::

    {"step": 1, "rank": 0, "world_size": 2,
     "micro_batches": [{"dataset": "instr", "rows": [4, 17, ...], "loss": 4.81, "terms": {"instr/infonce": ...},
                        "candidates": {"documents": 16, "anchors": 16}}],
     "param_norm": 123.4, "param_sums": [...], "writes": ["mkdir checkpoint-2", "open checkpoint-2/config.json"]}

- ``rows``: the batch's row indices in its task dataset (``load_task_datasets(train_file)[dataset]``).
- ``loss`` / ``terms``: this process's loss of that micro-batch, before the update.
- ``candidates``: how many documents / anchors the InfoNCE compared each row with (after the all-gather:
  world_size x batch when every process contributes its batch once).
- ``param_norm`` / ``param_sums``: L2 norm of all trainable parameters and the sum of each parameter tensor (float64),
  after the optimizer step: equal on every rank when gradients are synchronised.
- ``writes``: ``"<event> <path>"`` for every file this process opened for writing (``open``), folder it created
  (``mkdir``, also an ``exist_ok`` one), or path it renamed / removed under ``output_dir`` since the previous line,
  seen through a Python audit hook (``sys.addaudithook``). Writes done outside Python (the
  safetensors and torch.save writers) are not seen; compare the output folder's listing for those.

Cost: one pass over the parameters per optimizer step (an all-gather per tensor under FSDP) and one audit-hook call
per file event. Leave ``trace_dir`` unset for production runs.

Example::

    >>> from vipyloqwen_tools.train.trace import read_trace
    >>> steps = read_trace("runs/x/trace")   # {rank: [record, ...]}
    >>> steps[0][0]["micro_batches"][0]["dataset"]
    'instr'
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from vipyloqwen_tools.train.collators import TensorColumnCollator

# The dataset column that carries row indices to the trace (added only while tracing; popped before tokenising).
ROW_COLUMN = "_trace_row"

_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.copyfile"}


def add_row_ids(datasets):
    """Each dataset with a :data:`ROW_COLUMN` holding its row indices (the trace reads it from the batches)."""
    for name in list(datasets):
        dataset = datasets[name]
        transform = dataset._format_kwargs.get("transform")
        # Without the transform while the column is added (flattening the row selection must copy stored values).
        dataset = dataset.with_format(None).add_column(ROW_COLUMN, list(range(len(dataset))))
        if transform is not None:
            dataset.set_transform(transform)
        datasets[name] = dataset
    return datasets


class RowIdCollator(TensorColumnCollator):
    """Carries :data:`ROW_COLUMN` past the tokenising collator as a ``[B]`` tensor (so the trainer's
    ``compute_loss`` can hand it to the trace)."""

    column = ROW_COLUMN


class TrainingTrace(TrainerCallback):
    """The ``trace_dir`` callback; see the module docstring for the record layout."""

    def __init__(self, trace_dir: str | os.PathLike, rank: int, world_size: int, watch_dir: str | os.PathLike) -> None:
        self.dir = Path(trace_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.path = self.dir / f"rank{self.rank}.jsonl"
        self.path.write_text("", encoding="utf-8")
        self.watch = str(Path(watch_dir).resolve())
        self._pending: list[dict[str, Any]] = []
        self._writes: list[str] = []
        sys.addaudithook(self._audit)  # cannot be removed: it stops recording when the trace is closed
        self._open = True

    # ------------------------------------------------------------------ file events
    def _audit(self, event: str, args: tuple) -> None:
        if not self._open:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if not writing:
                return
            paths = [path]
        elif event in _WRITE_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        else:
            return
        for path in paths:
            if isinstance(path, int):
                continue
            full = os.path.abspath(os.fsdecode(path))
            if full.startswith(self.watch + os.sep):
                self._writes.append(f"{event.rsplit('.', 1)[-1]} {os.path.relpath(full, self.watch)}")

    # ------------------------------------------------------------------ records
    def note_batch(self, dataset: str | None, rows, terms: dict[str, torch.Tensor], candidates) -> None:
        """Called by the trainer for every training micro-batch, before the backward pass."""
        values = {key: float(value.detach()) for key, value in terms.items()}
        self._pending.append(
            {
                "dataset": dataset,
                "rows": [int(r) for r in rows.tolist()] if rows is not None else None,
                "loss": sum(values.values()),
                "terms": values,
                "candidates": dict(candidates) if candidates else None,
            }
        )

    @staticmethod
    def parameter_checksum(model: torch.nn.Module) -> tuple[float, list[float]]:
        total = torch.zeros((), dtype=torch.float64)
        sums = []
        for param in model.parameters():
            if not param.requires_grad:
                continue
            data = param.detach()
            if hasattr(data, "full_tensor"):  # an FSDP2 DTensor shard: gather it (collective, every rank)
                data = data.full_tensor()
            data = data.double().cpu()
            total += data.pow(2).sum()
            sums.append(float(data.sum()))
        return float(total.sqrt()), sums

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        norm, sums = self.parameter_checksum(model)
        writes, self._writes = self._writes, []
        micro, self._pending = self._pending, []
        self._open = False  # the trace's own file is not a training write
        self._append(
            {
                "step": state.global_step,
                "rank": self.rank,
                "world_size": self.world_size,
                "micro_batches": micro,
                "param_norm": norm,
                "param_sums": sums,
                "writes": writes,
            }
        )
        self._open = True

    def flush_writes(self) -> None:
        """Append a final ``{"step": "end", "writes": [...]}`` line (writes after the last step) and stop recording."""
        writes, self._writes = self._writes, []
        self._open = False
        self._append({"step": "end", "rank": self.rank, "world_size": self.world_size, "writes": writes})


def read_trace(trace_dir: str | os.PathLike) -> dict[int, list[dict[str, Any]]]:
    """``{rank: [record, ...]}`` from the ``rank<r>.jsonl`` files of a trace folder."""
    out = {}
    for path in sorted(Path(trace_dir).glob("rank*.jsonl")):
        rank = int(path.stem.removeprefix("rank"))
        out[rank] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return out


def summarize(trace_dir: str | os.PathLike) -> dict[str, Any]:
    """What the ranks did, step by step: same task, disjoint rows, candidate counts, parameter agreement.

    Returns ``{"ranks", "steps", "tasks", "same_task_every_step", "rows_disjoint_every_step", "candidates",
    "max_rel_param_norm_diff", "max_rel_param_sums_diff", "writes_by_rank"}``.
    """
    trace = read_trace(trace_dir)
    ranks = sorted(trace)
    steps = {rank: [r for r in trace[rank] if r["step"] != "end"] for rank in ranks}
    count = min(len(records) for records in steps.values())
    same_task = disjoint = True
    norm_diff = sums_diff = 0.0
    candidates, tasks = set(), []
    for index in range(count):
        records = [steps[rank][index] for rank in ranks]
        for position in range(len(records[0]["micro_batches"])):
            batches = [record["micro_batches"][position] for record in records]
            same_task &= len({batch["dataset"] for batch in batches}) == 1
            rows = [set(batch["rows"] or []) for batch in batches]
            disjoint &= sum(len(r) for r in rows) == len(set().union(*rows))
            candidates |= {json.dumps(batch["candidates"], sort_keys=True) for batch in batches}
        tasks.append(records[0]["micro_batches"][0]["dataset"] if records[0]["micro_batches"] else None)
        base_sums = torch.tensor(records[0]["param_sums"], dtype=torch.float64)
        for record in records[1:]:
            norm_diff = max(norm_diff, abs(record["param_norm"] - records[0]["param_norm"]) / records[0]["param_norm"])
            sums = torch.tensor(record["param_sums"], dtype=torch.float64)
            sums_diff = max(sums_diff, float((sums - base_sums).norm() / base_sums.norm()))
    return {
        "ranks": len(ranks),
        "steps": count,
        "tasks": tasks,
        "same_task_every_step": same_task,
        "rows_disjoint_every_step": disjoint,
        "candidates": sorted(json.loads(c) for c in candidates if c != "null"),
        "max_rel_param_norm_diff": norm_diff,
        "max_rel_param_sums_diff": sums_diff,
        "writes_by_rank": {rank: sorted({w for r in trace[rank] for w in r["writes"]}) for rank in ranks},
    }


def reference_loss(
    trace_dir: str | os.PathLike,
    train_file: str | os.PathLike,
    model_dir: str | os.PathLike,
    max_length: int,
    max_image_tokens: int | None = None,
) -> dict[str, float]:
    """The first step's loss recomputed in one process on the concatenated global batch (all ranks' rows).

    ``model_dir`` must hold the weights the run started from (``<output_dir>/init-tiny`` for ``model: tiny``);
    ``max_length`` / ``max_image_tokens`` as in the run's config.
    Returns ``{"distributed": mean of the ranks' first-step losses, "single": the one-process loss, "rel_diff"}``;
    the mean is what DDP optimises (it averages the ranks' gradients). Equal rows per rank: each term is a mean.
    """
    import tempfile

    from sentence_transformers import SentenceTransformer

    from vipyloqwen_tools.data import load_task_datasets
    from vipyloqwen_tools.data.arrow import KEYS_COLUMN, negative_column
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss
    from vipyloqwen_tools.train.prepare import training_prompts

    trace = read_trace(trace_dir)
    first = [trace[rank][0]["micro_batches"][0] for rank in sorted(trace)]
    name = first[0]["dataset"]
    rows = [row for batch in first for row in batch["rows"]]
    with tempfile.TemporaryDirectory() as cache:
        batch = load_task_datasets(train_file, cache_dir=cache)[name][rows]
    prompts = training_prompts([name], prefix_documents=False)[name]
    processor_kwargs = {"max_image_tokens": max_image_tokens} if max_image_tokens else {}
    model = SentenceTransformer(str(model_dir), trust_remote_code=True, device="cpu", processor_kwargs=processor_kwargs)
    model.max_seq_length = max_length
    columns = ["anchor", "positive"] + [negative_column(k) for k in range(len(batch[KEYS_COLUMN][0]) - 2)]
    with torch.no_grad():
        embeddings = [
            model.encode(batch[c], prompt=prompts.get(c), convert_to_tensor=True, batch_size=len(rows)) for c in columns
        ]
        labels = torch.tensor(batch["score"]) if "score" in batch else None
        keys = torch.tensor(batch[KEYS_COLUMN])  # the false-negative masks, as the training run had them
        terms = ViPyloQwenRouterLoss(model).compute_loss_from_embeddings(name, embeddings, labels, keys)
    single = sum(float(value) for value in terms.values())
    distributed = sum(batch["loss"] for batch in first) / len(first)
    return {"task": name, "distributed": distributed, "single": single, "rel_diff": abs(distributed - single) / single}


def main(argv: list[str] | None = None) -> int:
    """``python -m vipyloqwen_tools.train.trace TRACE_DIR [--train-file F --model-dir M ...]``: a JSON summary."""
    import argparse

    parser = argparse.ArgumentParser(description="Summarise a training trace (trace_dir) of a multi-process run.")
    parser.add_argument("trace_dir", type=Path)
    parser.add_argument("--train-file", type=Path, help="with --model-dir: recompute the first step's loss")
    parser.add_argument("--model-dir", type=Path, help="the weights the run started from (<output_dir>/init-tiny)")
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--max-image-tokens", type=int, default=None)
    args = parser.parse_args(argv)
    out = summarize(args.trace_dir)
    out.pop("writes_by_rank")
    if args.train_file and args.model_dir:
        out["first_step_loss"] = reference_loss(
            args.trace_dir, args.train_file, args.model_dir, args.max_length, args.max_image_tokens
        )
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ROW_COLUMN", "RowIdCollator", "TrainingTrace", "add_row_ids", "read_trace", "reference_loss", "summarize"]
