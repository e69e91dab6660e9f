"""The memory planner: peak memory per device of a training config, before a run (``train_st.py plan``).

- :mod:`.planner`: the model of static (weights, gradients, optimizer) and activation memory, calibrated on
  measured points, and the check ``train()`` runs before it loads a model.
- :mod:`.cli`: the ``plan`` sub-command.

May import: the Hub files, :mod:`vipyloqwen_tools.checkpoint` (the 2B architecture, the tokenizer),
:mod:`vipyloqwen_tools.data` (to profile a train file); :mod:`.cli` also reads
:class:`vipyloqwen_tools.train.run.TrainConfig` (the planner itself never imports the training run).
"""
