"""The data of a run, ready for the trainer: per-task datasets (validated once, prepared by the main process
first), the bad-row guard, the evaluation data (an eval file, a held-out split or none), the prompts, the
run-defining settings a checkpoint records, row ids on every row.

Example::

    >>> from vipyloqwen_tools.train.run_data import prepare_run_data
    >>> data = prepare_run_data(config, run)  # a TrainConfig and the RunSetup of train.arguments.open_run
    >>> sorted(data.datasets.keys())
    ['instr', 'ocr', 'text_pair', 'vqa_multi', 'vqa_single']
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vipyloqwen_tools.data import ValidationReport
from vipyloqwen_tools.data.arrow import negatives_per_row
from vipyloqwen_tools.train import distributed, resume_check
from vipyloqwen_tools.train.arguments import RunSetup
from vipyloqwen_tools.train.bad_rows import BadRowGuard
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.eval_data import EvalData, choose_eval_data
from vipyloqwen_tools.train.prepare import REJECTS_FILE, prepare_data, training_prompts
from vipyloqwen_tools.train.trace import add_row_ids


@dataclasses.dataclass
class RunData:
    """``datasets``: a DatasetDict, one dataset per task (with row ids); ``report``: the train file's validation
    report; ``row_guard``: rows unreadable at batch time; ``settings``: what every checkpoint records
    (:func:`vipyloqwen_tools.train.resume_check.run_settings`); ``evaluation``: the eval rows and where they come
    from (:mod:`.eval_data`); ``negatives``: the explicit negative columns of the widest dataset, at least 1 (what
    the memory plan counts)."""

    datasets: Any
    report: ValidationReport
    row_guard: BadRowGuard
    settings: dict[str, Any]
    evaluation: EvalData = dataclasses.field(default_factory=lambda: EvalData(None, "none"))
    negatives: int = 1


def prepare_run_data(config: TrainConfig, run: RunSetup) -> RunData:
    """Validate and load the train file once (the main process first; the others reuse its Arrow cache), refuse a
    dataset too small for one task-grouped step, set the trainer's prompts, and add row ids (the guards and the trace
    name the rows of a batch)."""
    datasets, report = distributed.prepare_data_once(config, run.args, prepare_data)
    row_guard = BadRowGuard(report, config.train_file, run.output_dir / REJECTS_FILE, skip=config.skip_bad_rows)
    # Row ids first: they stay the rows' indices in the file's datasets when --eval-split takes rows out.
    datasets, evaluation = choose_eval_data(config, add_row_ids(datasets))
    row_guard.held_out = sum(evaluation.held_out.values())
    distributed.check_task_grouping(datasets, config.per_device_train_batch_size, run.args.world_size)
    run.args.prompts = training_prompts(datasets.keys(), config.prefix_documents)
    settings = resume_check.run_settings(config, datasets, run.args.world_size, run.precision)
    negatives = max([1, *(negatives_per_row(dataset) for dataset in datasets.values())])
    return RunData(datasets, report, row_guard, settings, evaluation, negatives)


__all__ = ["RunData", "prepare_run_data"]
