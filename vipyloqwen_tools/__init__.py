"""Developer tooling for the viPyloQwen Hub package. Nothing in here ships to the Hub.

The Hub files are the ``*_vipyloqwen.py`` modules at the repository root; this package is what builds, trains,
plans, indexes and releases them. One room per concept:

==============  ==========================================================================================
``checkpoint``  checkpoints: the offline tokenizer, the tiny model, the 2B base streamed into our layout,
                the files every checkpoint carries, the published 2B architecture, a fake base for tests
``data``        training data: JSONL schema, lossless line reading, parallel validation, Arrow datasets,
                the validate-once cache, reports and rejects
``train``       the training run: config, data preparation and prompts, the router loss, distributed
                helpers, the per-step trace, the retrieval evaluator
``plan``        the memory planner (``train_st.py plan``)
``index``       the vector index of ``scripts/index.py``: items, build, store, search
``mine``        hard-negative mining of ``scripts/mine.py``: rows, embeddings, search, selection rules
``release``     the Hub release: assemble the folder, verify it in a clean process, README generation
==============  ==========================================================================================

Dependency direction (one way; ``tests/test_imports.py`` fails on any import circle):
Hub files <- ``checkpoint``, ``data`` <- ``train``, ``plan``, ``index`` <- ``mine`` (index, train's document prompt)
<- ``release``, ``scripts/``, ``bench/``, ``eval/``.
"""

from vipyloqwen_tools import moved as _moved

_moved.install()  # old import paths (vipyloqwen_tools.build.*) keep working for one release, with a warning
