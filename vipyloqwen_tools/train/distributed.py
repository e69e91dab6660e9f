"""What each process does in a multi-process training run (torchrun / accelerate launch, gloo or NCCL).

- :func:`prepare_data_once`: the main process validates the train file and builds its validate-once cache (report +
  Arrow datasets) first; the other processes then load that cache entry (no second validation pass).
- :func:`check_task_grouping`: every training dataset must fill at least one task-grouped step (``world_size``
  batches of one task), else a :class:`~vipyloqwen_tools.data.DataError` naming the dataset and what would work.
- :func:`check_launch`: the trainer really runs in the mode the launcher asked for (world size, FSDP, DeepSpeed).
- :func:`full_state_dict`: a model's full (unsharded) state dict on the main process under FSDP2 (for the export).

Example::

    >>> args = SentenceTransformerTrainingArguments(output_dir="runs/x", use_cpu=not torch.cuda.is_available())
    >>> datasets = prepare_data_once(config, args)       # torchrun --nproc_per_node 2 train_st.py ...
    >>> check_task_grouping(datasets, config.per_device_train_batch_size, args.world_size)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sized
from typing import Any

import torch

from vipyloqwen_tools.data import DataError

logger = logging.getLogger("vipyloqwen.train")


def launched_world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE`` of torchrun / accelerate; 1 otherwise)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)


def prepare_data_once(config, args, prepare: Callable[..., tuple[Any, Any]]) -> tuple[Any, Any]:
    """Per-task datasets and their validation report, prepared by the main process first and reused by the others.

    The main process runs ``prepare`` (:func:`vipyloqwen_tools.train.prepare.prepare_data`, passed in so that this
    module stays below the training run: validation, rejects file, the validate-once cache of report + Arrow
    datasets) while the others wait; then they run it too and load the main process's cache
    entry (nothing is validated or built twice, and only the main process writes the rejects file). An error on the
    main process (bad rows, unreadable file) is raised on every process, so none is left waiting. The others wait
    in a group with a long timeout (:func:`~vipyloqwen_tools.train.process_group.patient_group`): a first validation
    of millions of rows is no stuck rank, whatever ``--ddp-timeout`` says.
    """
    if args.world_size == 1:
        return prepare(config, is_main=True)
    import torch.distributed as dist

    from vipyloqwen_tools.train.process_group import patient_group

    group = patient_group()
    box: list[Any] = [None]
    if args.process_index == 0:
        try:
            datasets, report = prepare(config, is_main=True)
        except Exception as error:  # hand it to the others before raising it here
            box[0] = error
            dist.broadcast_object_list(box, src=0, group=group)
            raise
    dist.broadcast_object_list(box, src=0, group=group)
    if args.process_index != 0:
        if isinstance(box[0], BaseException):
            raise box[0]
        datasets, report = prepare(config, is_main=False)
    return datasets, report


def check_task_grouping(datasets: Mapping[str, Sized], per_device_batch: int, world_size: int) -> None:
    """Refuse a dataset that cannot fill one task-grouped step: ``world_size`` batches of ``per_device_batch`` rows.

    Such a dataset would never be trained (its rows silently dropped). The error names the dataset, its row count
    and the settings that would work.
    """
    need = per_device_batch * world_size
    problems = []
    for name, dataset in datasets.items():
        rows = len(dataset)
        if rows >= need:
            continue
        fixes = []
        if rows // world_size >= 2:
            fixes.append(f"per_device_train_batch_size <= {rows // world_size} with {world_size} process(es)")
        if world_size > 1 and rows // per_device_batch >= 1:
            fixes.append(
                f"at most {rows // per_device_batch} process(es) at per_device_train_batch_size {per_device_batch}"
            )
        fixes.append(f"at least {need} {name} rows, or no {name} rows at all")
        problems.append(
            f"dataset {name!r} has {rows} rows, but one task-grouped step needs world_size {world_size} x "
            f"per_device_train_batch_size {per_device_batch} = {need} rows of it; what would work: " + "; ".join(fixes)
        )
    if problems:
        raise DataError("the task grouping cannot use every dataset:\n  " + "\n  ".join(problems))


def check_launch(trainer) -> None:
    """Refuse a run whose trainer does not run in the mode the launcher asked for (instead of training wrongly)."""
    args = trainer.args
    launched = launched_world_size()
    if args.world_size != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes but the trainer sees world size {args.world_size} "
            f"(distributed type {trainer.accelerator.distributed_type}); every process would train alone"
        )
    flag = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if flag and not trainer.is_fsdp_enabled:
        raise RuntimeError(
            "FSDP was requested (accelerate config distributed_type: FSDP) but the trainer runs "
            f"{trainer.accelerator.distributed_type}: accelerate enables FSDP only on GPUs/accelerators (on CPU its "
            "AcceleratorState keeps MULTI_CPU and would wrap the model in DDP). On CPU use "
            "configs/accelerate/cpu-2proc.yaml; FSDP needs CUDA."
        )
    flag = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if flag and not trainer.is_deepspeed_enabled:
        raise RuntimeError(
            "DeepSpeed was requested but the trainer runs "
            f"{trainer.accelerator.distributed_type}: DeepSpeed needs CUDA (pip install deepspeed)."
        )
    logger.info(
        "distributed: %s, world size %d, process %d",
        trainer.accelerator.distributed_type,
        args.world_size,
        args.process_index,
    )


def embed_columns_once(model: torch.nn.Module, features_list: list[dict[str, Any]]) -> list[torch.Tensor]:
    """sentence-transformers' ``embed_columns`` with one DistributedDataParallel forward per backward.

    ``embed_columns`` runs the anchor column and the candidate columns in separate forward passes. DDP with
    ``find_unused_parameters`` (needed: text-only tasks leave the vision tower without gradients) recomputes the
    unused parameters at every forward from that forward's outputs, so when an image column comes first and a text
    column last, the vision tower is declared unused and then receives gradients: "Expected to mark a variable ready
    only once". Here every column but one runs through the wrapped module, and the column whose graph reaches every
    parameter any column uses (the first one with images, else the anchor) runs through DDP, last. Same embeddings
    (the columns are independent forward passes); outside DDP this is ``embed_columns``.
    """
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel) or not model.find_unused_parameters or len(features_list) < 2:
        return embed_columns(model, features_list)
    last = next((i for i, features in enumerate(features_list) if "pixel_values" in features), 0)
    others = [i for i in range(len(features_list)) if i != last]
    # Keep embed_columns' grouping: the anchor alone, the candidates merged when they can be.
    embedded = embed_columns(model.module, [features_list[i] for i in others], separate_first=last != 0)
    out: list[torch.Tensor | None] = [None] * len(features_list)
    for index, embedding in zip(others, embedded, strict=True):
        out[index] = embedding
    out[last] = model(features_list[last])["sentence_embedding"]
    return out


def full_state_dict(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor] | None:
    """The module's full (unsharded) state dict for ``save_pretrained``, or ``None`` when it is not sharded.

    Under FSDP2 the parameters are DTensor shards: torch's ``get_model_state_dict(full_state_dict=True,
    cpu_offload=True)`` (what accelerate's ``get_state_dict`` calls) gathers them into CPU tensors on the main process
    (a collective: call it on every process; the others get an empty dict). Only keys under ``prefix`` are kept, with
    the prefix removed (``"0.model."``: the ViPyloQwenModel inside a SentenceTransformer). Without sharding ``None``
    means "save the module's own tensors".
    """
    from torch.distributed.tensor import DTensor

    if not any(isinstance(param, DTensor) for param in module.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return strip_prefix(state, prefix)


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` under ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


__all__ = [
    "check_launch",
    "embed_columns_once",
    "check_task_grouping",
    "full_state_dict",
    "launched_world_size",
    "prepare_data_once",
    "strip_prefix",
]
