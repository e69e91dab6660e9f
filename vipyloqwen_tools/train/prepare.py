"""The training data of a run and the prompts it is trained with.

- :func:`prepare_data`: validate the train file once (rejects file with ``--skip-bad-rows``), build or reuse its
  validate-once cache, and return the per-task datasets (rows trained = good rows, checked).
- :func:`training_prompts`: the Sentence-Transformers prompts per dataset and column (the anchor gets its task
  prefix from the registry; documents per :func:`~vipyloqwen_tools.train.evaluation.document_prefix`).

Example::

    >>> training_prompts(["ocr"], prefix_documents=False)["ocr"]["anchor"]
    '<ocr>'
"""

from __future__ import annotations

import logging
from pathlib import Path

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.data import DataError, image_folder, prepare_task_datasets, write_rejects
from vipyloqwen_tools.data.arrow import negative_column
from vipyloqwen_tools.data.schema import MAX_NEGATIVES
from vipyloqwen_tools.train.evaluation import document_prefix
from vipyloqwen_tools.train.losses import task_of_dataset

logger = logging.getLogger("vipyloqwen.train")
REJECTS_FILE = "rejects-train.jsonl"  # in the output folder, with --skip-bad-rows


def prepare_data(config, is_main: bool = True):
    """Validate the train file (refuse bad rows, or write rejects with --skip-bad-rows) and load per-task datasets.

    ``config``: a :class:`~vipyloqwen_tools.train.config.TrainConfig` (its train_file, image_root, output_dir,
    data_cache_dir, data_num_proc and skip_bad_rows are read).

    Validation and the Arrow build run once per file over ``data_num_proc`` workers and are cached under the
    file's fingerprint in ``data_cache_dir``; a resumed or repeated run (or another process) reuses them. The
    invariant lines read = good + bad + blank is asserted and logged, and rows trained = good rows exactly.
    """
    cache_dir = config.data_cache_dir or Path(config.output_dir) / ".data-cache"
    datasets, report = prepare_task_datasets(
        config.train_file, cache_dir, num_proc=config.data_num_proc, image_root=config.image_root
    )
    logger.info("%s", report.summary(max_bad=0))
    logger.info("images: relative paths read from %s", image_folder(config.train_file, config.image_root))
    logger.info("data invariant: %s", report.check_invariant())
    if report.bad:
        if not config.skip_bad_rows:
            raise DataError(
                f"{config.train_file} has {len(report.bad)} bad line(s); fix them or pass --skip-bad-rows "
                f"(they are then written to a rejects file):\n{report.summary(max_bad=50)}"
            )
        rejects = Path(config.output_dir) / REJECTS_FILE
        if is_main:
            write_rejects(report, rejects)
        logger.warning("skipping %d bad line(s) of %s; written to %s", len(report.bad), config.train_file, rejects)
    rows = sum(len(dataset) for dataset in datasets.values())
    # Rows found unreadable after validation (learned by the cache) stay in the datasets; dropped at batch time.
    if rows != report.good + len(report.late_bad):
        raise DataError(
            f"{config.train_file}: {rows} rows in the datasets != {report.good} good rows + "
            f"{len(report.late_bad)} learned bad"
        )
    logger.info("rows trained: %d = good rows", report.good)
    # A dataset too small for one task-grouped step is refused by distributed.check_task_grouping (train()).
    return datasets, report


def training_prompts(dataset_names, prefix_documents: bool) -> dict[str, dict[str, str]]:
    """ST prompts keyed by dataset name and column: the anchor gets the task prefix; documents per document_prefix."""
    prompts = {}
    for name in dataset_names:
        task = task_of_dataset(name)
        columns = {"anchor": TASKS[task].prefix}
        if (doc := document_prefix(task, prefix_documents)) is not None:
            # every explicit negative column a batch may have (negative, negative2, ...: data.arrow.st_transform)
            columns.update({"positive": doc, **{negative_column(k): doc for k in range(MAX_NEGATIVES)}})
        prompts[name] = columns
    return prompts
