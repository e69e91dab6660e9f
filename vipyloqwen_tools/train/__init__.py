"""The training run behind ``train_st.py``.

- :mod:`.run`: :class:`~.run.TrainConfig` (YAML + flags) and :func:`~.run.train` (Sentence-Transformers' trainer).
- :mod:`.prepare`: the run's data (validated once, per-task datasets) and its prompts.
- :mod:`.losses`: the router loss, one recipe per task prefix (InfoNCE, GradCache, Matryoshka).
- :mod:`.distributed`: what each process does under torchrun / accelerate (data once, grouping, FSDP state).
- :mod:`.trace`: the per-step trace (row ids, loss terms per rank) and its reference loss.
- :mod:`.evaluation`: the retrieval evaluator run during and after training; :mod:`.correlation`: Pearson /
  Spearman without scipy.
- Faults (docs/training.md "Faults"): :mod:`.guard` (a non-finite step is skipped, a diverging run stops),
  :mod:`.checkpoints` (atomic checkpoints with a completion marker; ``--resume`` takes the newest complete one; a
  full disk says so), :mod:`.resume_check` (a resume with changed run-defining settings is refused).

May import: the Hub files, :mod:`vipyloqwen_tools.checkpoint`, :mod:`vipyloqwen_tools.data`,
:mod:`vipyloqwen_tools.plan` (the memory check before a run).
"""
