"""The memory planner: peak memory per device of a training config, before a run (``train_st.py plan``).

- :mod:`.planner`: the model of static (weights, gradients, optimizer) and activation memory, calibrated on
  measured points, and the check ``train()`` runs before it loads a model.

The ``plan`` sub-command that reads a training config is :mod:`vipyloqwen_tools.train.plan_command` (the training
room imports the planner, never the other way round).

May import: the Hub files, :mod:`vipyloqwen_tools.checkpoint` (the 2B architecture, the tokenizer),
:mod:`vipyloqwen_tools.data` (to profile a train file). Never :mod:`vipyloqwen_tools.train`.
"""
