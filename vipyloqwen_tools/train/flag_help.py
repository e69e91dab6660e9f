"""The help text of every training setting: ``train_st.py --help`` shows it beside each ``--flag``.

One entry per :class:`~vipyloqwen_tools.train.config.TrainConfig` field (a test checks that none is missing: a new
setting needs its line here). The YAML key is the field name; the flag is ``--`` + the name with dashes.

Example::

    >>> from vipyloqwen_tools.train.flag_help import HELP
    >>> HELP["eval_split"][:40]
    'hold out this share of the train file\\'s'
"""

from __future__ import annotations

HELP: dict[str, str] = {
    # data and model
    "model": "checkpoint folder (scripts/build_model.py or a run's final/), Hub id (erax-ai/viPyloQwen, in the "
    "local cache offline), or 'tiny' (a tiny random model built offline into <output-dir>/init-tiny)",
    "train_file": "training JSONL (schema: docs/training.md; check it first with `train_st.py validate FILE`)",
    "eval_file": "held-out JSONL in the training schema, scored during and after training; default 'auto': the "
    "bundled data/sample/eval.jsonl with the bundled sample train file only, else none; '' turns it off",
    "eval_split": "hold out this share of the train file's rows per task (e.g. 0.01) and evaluate on them; they are "
    "never trained (instead of --eval-file)",
    "image_root": "folder that relative image paths in the train and eval files are under (default: each JSONL "
    "file's own folder)",
    "output_dir": "run folder: final/ (the exported checkpoint), checkpoint-<step>/, train_config.json, logs",
    # optimisation
    "learning_rate": "peak learning rate (AdamW)",
    "lr_scheduler_type": "learning-rate schedule after warm-up (transformers' names: cosine, linear, constant, ...)",
    "warmup_ratio": "share of the optimizer steps spent warming the learning rate up from 0",
    "num_train_epochs": "passes over the training data (ignored when --max-steps is set)",
    "max_steps": "stop after this many optimizer steps (-1: run --num-train-epochs epochs)",
    "per_device_train_batch_size": "rows per batch per process (>= 2: the other rows of a batch are the in-batch "
    "negatives); every batch holds one task",
    "gradient_accumulation_steps": "batches per optimizer step (effective batch = this x batch size x processes)",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping norm",
    "max_length": "text tokens per input while training (a memory knob); the exported model keeps the base model's "
    "limit (docs/training.md 'Limits')",
    "max_image_tokens": "image tokens per image while training (default: the model's own budget); the exported "
    "model keeps the base model's",
    "precision": "bf16 | fp16 | fp32 autocast over fp32 weights (no CUDA: fp32)",
    "attn_implementation": "auto | sdpa | eager | flash_attention_2 (auto: flash-attn on CUDA when installed, else "
    "sdpa)",
    "gradient_checkpointing": "recompute activations in the backward pass (less memory, more time)",
    "seed": "seed of the data order, the initialisation and the --eval-split rows",
    # loss
    "temperature": "InfoNCE temperature (every task)",
    "margin": "triplet margin on cosine distance (ocr, vqa_single; vqa_multi unless --vqa-multi-margin)",
    "vqa_multi_margin": "triplet margin for vqa_multi (default: --margin)",
    "score_threshold": "text_pair rows with a score at or above this are InfoNCE positives",
    "loss_weights": 'weights of the loss terms per task, JSON: {"ocr": {"triplet": 0.5}}',
    "matryoshka_dims": "also train these leading widths (JSON list, e.g. [1024, 512, 256]); the checkpoint declares "
    "them",
    "matryoshka_weights": "loss weight per Matryoshka width (JSON list, same length as --matryoshka-dims)",
    "cached_mini_batch_size": "GradCache: embed each batch in mini-batches of this size (same loss, less memory)",
    "gather_across_devices": "InfoNCE candidates from every process's batch (multi-process runs)",
    "prefix_documents": "put the task prefix on the document side too (default: text_pair only)",
    "mask_false_negatives": "never train a candidate that is the same document as a correct answer as a negative "
    "(docs/training.md: Negatives)",
    "false_negative_margin": "also mask in-batch candidates scoring above the row's own pair by this margin "
    "(Qwen3-Embedding's 0.1; null: off)",
    # bookkeeping
    "logging_steps": "a log line (loss terms, learning rate, progress) every this many optimizer steps",
    "eval_steps": "evaluate every this many steps (needs --eval-file or --eval-split); the final weights are always "
    "evaluated",
    "save_steps": "write checkpoint-<step>/ every this many steps",
    "save_total_limit": "keep at most this many checkpoints (oldest deleted first)",
    "eval_batch_size": "batch size of the evaluation's encode calls",
    "dataloader_num_workers": "worker processes that open images and build batches",
    "skip_bad_rows": "train on the good rows of a file with bad ones; the bad rows go to "
    "<output-dir>/rejects-train.jsonl with their line numbers and reasons (default: refuse the file)",
    "resume": "continue from the newest complete checkpoint in --output-dir",
    # data preparation
    "data_num_proc": "worker processes that validate the train file (default: the machine's cores)",
    "data_cache_dir": "validate-once cache of the train file's report and datasets (default: <output-dir>/.data-cache)",
    # distributed runs
    "ddp_timeout": "seconds a process waits for the others in a collective before the run fails",
    "trace_dir": "write a per-step trace (rows, loss terms per process) into this folder",
    # memory plan
    "device_memory_gb": "device memory per process for the memory plan when not on CUDA",
    "ignore_memory_plan": "train even when the memory plan predicts the run does not fit",
    # faults
    "nonfinite_policy": "skip | stop: what a step with a NaN / inf loss or gradient does (docs/training.md 'Faults')",
    "max_nonfinite_steps": "stop when this many steps in --nonfinite-window were skipped",
    "nonfinite_window": "the window (steps) --max-nonfinite-steps counts in",
    "accept_changes": "--resume with these run-defining settings changed (comma-separated names)",
    "resume_from": "resume from this checkpoint folder (or its name in --output-dir) instead of the newest",
}

__all__ = ["HELP"]
