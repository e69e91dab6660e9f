"""The end of a run: the final held-out evaluation, the export of ``final/`` and the run's records.

:func:`finish_run` is the last step of :func:`vipyloqwen_tools.train.run.train`. Every process takes part (the
evaluation's encode calls and the weight gathering under FSDP2 / DeepSpeed ZeRO-3 are collectives); only the main
process writes ``log_history.json`` and ``train_config.json`` (the settings used, the inference limits exported and
the training limits, rows per dataset, the evaluation source; first: small, and the record of the run even when the
export then fails), ``training_curves.png`` and ``final/`` (a Hub-layout checkpoint written atomically,
:func:`~.final_export.export_final`: it exists only when whole; a full disk is an exit-3 error saying so).

Example::

    >>> from vipyloqwen_tools.train.finish import finish_run
    >>> result = finish_run(config, run, trainer, model, data)  # after trainer.train()
    >>> result["final_dir"]
    'runs/tiny/final'
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sentence_transformers import SentenceTransformer

from vipyloqwen_tools.train import distributed, resume_check
from vipyloqwen_tools.train.arguments import RunSetup
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.curves import plot_history
from vipyloqwen_tools.train.final_export import export_final
from vipyloqwen_tools.train.model import ST_BACKBONE_PREFIX, limits_record
from vipyloqwen_tools.train.run_data import RunData
from vipyloqwen_tools.train.trainer import ViPyloQwenTrainer, export_limits

logger = logging.getLogger("vipyloqwen.train")


def final_metrics(trainer: ViPyloQwenTrainer, model: SentenceTransformer) -> dict[str, float] | None:
    """The evaluator's metrics on the final weights (appended to the log history), or ``None`` without one.

    As the trainer does: the main process evaluates and the others serve its encode calls (DDP); under FSDP /
    DeepSpeed every process runs the evaluator (its forward passes are collective)."""
    if trainer.evaluator is None:
        return None
    from sentence_transformers.util.distributed import distributed_evaluation

    with distributed_evaluation(
        model, enabled=not trainer.is_fsdp_enabled and not trainer.is_deepspeed_enabled
    ) as run_evaluator:
        if not run_evaluator:
            return None
        metrics = trainer.evaluator(model)
        trainer.state.log_history.append(
            {"step": trainer.state.global_step, **{f"eval_{k}": v for k, v in metrics.items()}}
        )
        return metrics


def finish_run(
    config: TrainConfig, run: RunSetup, trainer: ViPyloQwenTrainer, model: SentenceTransformer, data: RunData
) -> dict[str, Any]:
    """Evaluate, gather and export; returns ``train()``'s result (see :func:`vipyloqwen_tools.train.run.train`)."""
    result: dict[str, Any] = {"global_step": trainer.state.global_step, "log_history": trainer.state.log_history}
    trainer.accelerator.wait_for_everyone()  # every rank's batch-time rejects are recorded
    result["rows"] = data.row_guard.log_totals() if run.is_main else data.row_guard.totals()
    metrics = final_metrics(trainer, model)
    if metrics is not None:
        result["metrics"] = metrics
    # The full weights for the export: gathered (a collective) under FSDP2 / DeepSpeed ZeRO-3; None = the module's own.
    if trainer.is_deepspeed_enabled:
        state_dict = distributed.strip_prefix(trainer.accelerator.get_state_dict(trainer.deepspeed), ST_BACKBONE_PREFIX)
    else:
        state_dict = distributed.full_state_dict(model, prefix=ST_BACKBONE_PREFIX)
    if trainer.is_world_process_zero():
        output_dir = run.output_dir
        with open(output_dir / "log_history.json", "w", encoding="utf-8") as handle:
            json.dump(trainer.state.log_history, handle, indent=1)
        used = resume_check.used_config(
            config, run.precision, getattr(model, "vipyloqwen_attention", None), trainer, data.settings
        )
        # What a model card reports: the limits exported and trained at, the rows per dataset, the eval source.
        used["limits"] = limits_record(config, model)
        used["rows"] = {"per_dataset": data.settings["settings"]["task_mix"], **result["rows"]}
        used["evaluation"] = data.evaluation.record(config)
        used["global_step"] = trainer.state.global_step
        with open(output_dir / "train_config.json", "w", encoding="utf-8") as handle:
            json.dump(used, handle, indent=1)
        result["plot"] = str(plot_history(trainer.state.log_history, output_dir / "training_curves.png"))
        with export_limits(model):  # the base's inference limits, whatever the run trained at
            final_dir = export_final(
                model[0].model, model[0].processor, output_dir, state_dict=state_dict, step=trainer.state.global_step
            )
        result["final_dir"] = str(final_dir)
        logger.info("exported %s; curves %s", final_dir, result["plot"])
    if run.trace is not None:
        trainer.accelerator.wait_for_everyone()  # the main process's final writes are in its last trace line
        run.trace.flush_writes()
    return result


__all__ = ["final_metrics", "finish_run"]
