"""The training run behind ``train_st.py``.

- :mod:`.run`: :func:`~.run.train`, the run as a short linear script of the steps below, one module each:
  :mod:`.config` (:class:`~.config.TrainConfig`: YAML + flags) -> :mod:`.arguments` (precision, trainer arguments,
  process group, trace) -> :mod:`.run_data` (the run's datasets, bad-row guard, prompts, settings) -> :mod:`.model`
  (load, model options, memory check) -> :mod:`.trainer` (the trainer subclass and its wiring; batches from
  :mod:`.sampler`) -> :mod:`.resume_check` (the resume point) -> :mod:`.finish` (final evaluation, export, records;
  :mod:`.curves` draws the curves). :mod:`.plan_command` is ``train_st.py plan``.
- :mod:`.prepare`: the train file validated once into per-task datasets, and the prompts.
- :mod:`.losses`: the router loss, one recipe per task prefix (InfoNCE, GradCache, Matryoshka).
- :mod:`.distributed`: what each process does under torchrun / accelerate (data once, grouping, FSDP state).
- :mod:`.trace`: the per-step trace (row ids, loss terms per rank) and its reference loss.
- :mod:`.evaluation`: the held-out retrieval evaluator, run during and after training and by
  ``eval/evaluate_jsonl.py`` (Sentence-Transformers' IR and similarity evaluators, ties counted against the query).
- Faults (docs/faults.md): :mod:`.guard` (a non-finite step is skipped, a diverging run stops),
  :mod:`.checkpoints` (atomic checkpoints with a completion marker; ``--resume`` takes the newest complete one that
  verifies; a full disk says so; rotation keeps the last good one), :mod:`.checksums` (the marker's per-file
  checksums), :mod:`.final_export` (``final/`` atomic too), :mod:`.resume_check` (a resume with changed
  run-defining settings or ``--max-steps`` below its step is refused), :mod:`.bad_rows` (rows unusable at batch
  time), :mod:`.run_lock` (one run per output folder), :mod:`.stop_signal` (SIGTERM / SIGUSR1: save, then stop).

May import: the Hub files, :mod:`vipyloqwen_tools.checkpoint`, :mod:`vipyloqwen_tools.data`,
:mod:`vipyloqwen_tools.plan` (the memory check before a run).
"""
