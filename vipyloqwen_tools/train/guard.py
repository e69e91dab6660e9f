"""The non-finite guard: a NaN / inf loss or gradient norm never reaches the weights, and a diverging run stops.

At every optimizer step, after the gradients are reduced and clipped and before the optimizer runs, the trainer
checks the step's loss (every micro-batch, on every process) and the gradient norm. All processes agree on the
decision (one all-reduce of a flag). A non-finite step is, by ``nonfinite_policy``:

- ``skip`` (default): no optimizer update (the gradients are dropped, so AdamW leaves every weight and its moments
  as they were; the learning-rate schedule moves on), logged as a warning and a ``log_history`` entry with the
  step, the task, the rows of the batch as ``file:line`` of the train file (per process; the record also keeps
  their row ids, positions in the task's dataset) and the loss terms;
  counted as ``skipped_steps`` in the next log line. When ``max_nonfinite_steps`` steps within the last
  ``nonfinite_window`` steps were non-finite, the run stops with :class:`NonFiniteTrainingError`.
- ``stop``: the first non-finite step stops the run.

The error names the step, the task and the last good checkpoint: the newest complete one saved before the first
non-finite step of the window. Checkpoint rotation (``save_total_limit``) never deletes that one while the window
holds a non-finite step (:meth:`NonFiniteGuardMixin.protected_checkpoints`); when there is none the error says why
(checkpoints and the export refuse non-finite weights, see :mod:`vipyloqwen_tools.checkpoint.finite`).
``train_st.py`` exits 3 with it.

Example::

    >>> train(TrainConfig.from_yaml("configs/tiny-cpu.yaml", learning_rate=1e3, max_steps=20))
    NonFiniteTrainingError: step 5: non-finite loss (nan) ... stopped ...
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import torch

from vipyloqwen_tools.train.checkpoints import any_rank, complete_checkpoints

logger = logging.getLogger("vipyloqwen.train")
POLICIES = ("skip", "stop")


class NonFiniteTrainingError(RuntimeError):
    """The run met too many non-finite steps and stopped (its last complete checkpoint is kept)."""


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _number(value: Any) -> float | None:
    return None if value is None else float(value.item() if hasattr(value, "item") else value)


def _describe_batch(batch: dict[str, Any]) -> str:
    rank = f"rank {batch['rank']} " if "rank" in batch else ""
    rows = "[" + ", ".join(batch["lines"]) + "]" if batch.get("lines") else batch["rows"]
    return f"{rank}rows {rows} loss {batch['loss']} terms {batch['terms']}"


class NonFiniteGuardMixin:
    """Trainer mixin implementing the guard of the module docstring. The trainer sets ``_last_terms`` (the loss
    terms of the micro-batch) and ``_last_rows`` (its row ids) while computing the loss."""

    nonfinite_policy = "skip"
    max_nonfinite_steps = 3
    nonfinite_window = 100

    def configure_guard(self, policy: str, max_steps: int, window: int) -> None:
        if policy not in POLICIES:
            raise ValueError(f"nonfinite_policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.nonfinite_policy, self.max_nonfinite_steps, self.nonfinite_window = policy, int(max_steps), int(window)

    def _guard_state(self) -> dict[str, Any]:
        return self.__dict__.setdefault("_guard", {"batches": [], "recent": deque(), "total": 0, "since_log": 0})

    def training_step(self, model, inputs, num_items_in_batch=None):
        task = inputs.get("dataset_name")
        state = self._guard_state()
        state.setdefault("start_step", self.state.global_step)  # 0, or the step a --resume started from
        if not state["batches"] and hasattr(self, "_tr_loss"):  # the step's first micro-batch
            state["tr_loss_before"] = self._tr_loss.detach().clone()
        self._last_terms, self._last_rows = {}, None
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Tensors as they are: read back once per optimizer step (one device sync), in full only for a bad step.
        terms = {key: value.detach() for key, value in (self._last_terms or {}).items()}
        self._guard_state()["batches"].append(
            {"task": task, "rows": self._last_rows, "loss": loss.detach(), "terms": terms}
        )
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm)
        state = self._guard_state()
        batches, state["batches"] = state["batches"], []
        values = [torch.as_tensor(grad_norm if grad_norm is not None else 0.0, dtype=torch.float32).reshape(1).cpu()]
        values += [torch.stack([b["loss"].float(), *(t.float() for t in b["terms"].values())]).cpu() for b in batches]
        local_bad = not bool(torch.isfinite(torch.cat(values)).all())
        if any_rank(local_bad, self.args.device):
            readable = []
            for b in batches:
                rows = [int(r) for r in b["rows"].tolist()] if b["rows"] is not None else None
                readable.append(
                    {
                        "task": b["task"],
                        "rows": rows,
                        "lines": self._row_lines(b["task"], rows),
                        "loss": float(b["loss"]),
                        "terms": {key: float(value) for key, value in b["terms"].items()},
                    }
                )
            self._skip_step(model, readable, _number(grad_norm))
        return grad_norm

    def _row_lines(self, dataset: str | None, rows: list[int] | None) -> list[str] | None:
        """``file:line`` of a batch's rows in the train file (``None`` without the bad-row guard or row ids)."""
        guard = getattr(self, "row_guard", None)
        if guard is None or rows is None or dataset is None:
            return None
        try:
            return guard.locate(dataset, rows)
        except (OSError, IndexError, ValueError) as error:  # the message must not fail: row ids instead
            logger.warning("cannot locate rows %s of %s in the train file: %s", rows, dataset, error)
            return None

    def _window(self) -> list[int]:
        """The non-finite steps within the last ``nonfinite_window`` steps, oldest first."""
        recent = self._guard_state()["recent"]
        return [step for step in recent if step > self.state.global_step - self.nonfinite_window]

    def protected_checkpoints(self, complete: list[tuple[int, Any]]) -> set:
        """What checkpoint rotation must keep beyond ``save_total_limit``: the newest complete checkpoint saved
        before the first non-finite step of the window, while the window holds one (the one to go on from)."""
        keep = set(super().protected_checkpoints(complete))
        window = self._window()
        before = [path for number, path in complete if window and number < window[0]]
        if before:
            keep.add(before[-1])
        return keep

    def _skip_step(self, model, batches: list[dict[str, Any]], norm: float | None) -> None:
        # No update: AdamW skips parameters without a gradient (weights, moments and its step count stay).
        self.optimizer.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        step = self.state.global_step + 1
        state = self._guard_state()
        if "tr_loss_before" in state and not torch.isfinite(self._tr_loss).all():
            # A NaN in the trainer's running loss sum would stay in every later log line: taken out, and this log
            # line's loss is reported as NaN instead (see log()).
            self._tr_loss.copy_(state["tr_loss_before"])
            state["nonfinite_loss"] = True
        state["total"] += 1
        state["since_log"] += 1
        recent = state["recent"]
        recent.append(step)
        while recent and recent[0] <= step - self.nonfinite_window:
            recent.popleft()
        record = {"task": batches[0]["task"] if batches else None, "grad_norm": norm, "batches": batches}
        if _distributed():
            everyone: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(everyone, batches)
            record["batches"] = [dict(b, rank=rank) for rank, part in enumerate(everyone) for b in part]
        self.state.log_history.append({"step": step, "skipped_step": record})
        rows = "; ".join(_describe_batch(b) for b in record["batches"])
        what = [f"gradient norm {norm}"] if norm is not None and not math.isfinite(norm) else []
        what += [
            ("rank {} ".format(b["rank"]) if "rank" in b else "") + f"loss {b['loss']}"
            for b in record["batches"]
            if not all(math.isfinite(v) for v in (b["loss"], *b["terms"].values()))
        ]
        summary = f"step {step}: non-finite {' and '.join(what)} in task {record['task']}: {rows}"
        stop = self.nonfinite_policy == "stop" or len(recent) >= self.max_nonfinite_steps
        if not stop:
            if self.is_world_process_zero():
                logger.warning(
                    "%s; optimizer step skipped (%d non-finite step(s) in the last %d; the run stops at %d)",
                    summary,
                    len(recent),
                    self.nonfinite_window,
                    self.max_nonfinite_steps,
                )
            return
        why = (
            "nonfinite_policy is stop"
            if self.nonfinite_policy == "stop"
            else f"{len(recent)} non-finite steps ({', '.join(map(str, recent))}) within {self.nonfinite_window} "
            f"steps reached max_nonfinite_steps={self.max_nonfinite_steps}"
        )
        window = self._window()
        keep = self._good_checkpoint_advice(first_bad=window[0] if window else step)
        raise NonFiniteTrainingError(f"training diverged at {summary}; stopped: {why}. Nothing was exported; {keep}.")

    def _good_checkpoint_advice(self, first_bad: int) -> str:
        """Which checkpoint to go on from: the newest complete one saved before the first non-finite step of the
        window (one saved after it holds weights the diverging steps led to, though finite); or why there is none."""
        checkpoints = complete_checkpoints(self.args.output_dir)
        before = [(number, path) for number, path in checkpoints if number < first_bad]
        after = [path.name for number, path in checkpoints if number >= first_bad]
        if not before:
            return self._no_good_checkpoint(first_bad)
        number, path = before[-1]
        flag = "--resume" if not after else f"--resume-from {path.name}"
        advice = (
            f"the last good checkpoint is {path} (step {number}, before the first non-finite step {first_bad}); "
            f"resume from it with {flag} (e.g. with a lower learning rate: --learning-rate <lr> --accept-changes "
            "learning_rate)"
        )
        if after:
            advice += f"; saved after the first non-finite step, not advised: {', '.join(after)}"
        return advice

    def _no_good_checkpoint(self, first_bad: int) -> str:
        """Why no complete checkpoint from before ``first_bad`` is in the output folder, as far as this run knows."""
        start = self._guard_state().get("start_step", 0)
        saved = [step for step in getattr(self, "saved_steps", []) if step < first_bad]
        where = self.args.output_dir
        if saved:
            names = ", ".join(f"checkpoint-{step}" for step in saved)
            return (
                f"no complete checkpoint from before the first non-finite step {first_bad} is left in {where}: this "
                f"run saved {names}, which were deleted or damaged by something other than this run"
            )
        if start:
            return (
                f"no complete checkpoint from before the first non-finite step {first_bad} is left in {where}: this "
                f"run resumed at step {start} and saved none before step {first_bad} (save_steps="
                f"{self.args.save_steps}), and the checkpoint it resumed from is no longer complete there"
            )
        return (
            f"no checkpoint was saved before the first non-finite step {first_bad} (this run started at step 0; "
            f"save_steps={self.args.save_steps}): nothing to resume from; start again, e.g. with a lower learning rate"
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """A log line over skipped steps has ``skipped_steps``; its ``loss`` is NaN if one of its steps had a
        non-finite loss, and the loss terms of a skipped task show their NaN / inf values."""
        state = self._guard_state()
        if "loss" in logs and state["since_log"]:
            logs = {**logs, "skipped_steps": state["since_log"]}
            if state.pop("nonfinite_loss", False):
                logs["loss"] = float("nan")
            state["since_log"] = 0
        return super().log(logs, start_time)


__all__ = ["NonFiniteGuardMixin", "NonFiniteTrainingError", "POLICIES"]
