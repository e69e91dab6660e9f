"""The Hub release: ``scripts/release.py assemble | verify | push``.

- :mod:`.assemble`: the release folder (weights, code, ST files, the model card with its evaluation section and
  the files it links), its verification in a clean process, the push.
- :mod:`.verify_child`: the clean process (``python -I``, offline, empty modules cache) that loads the folder as a
  Hub user would.
- :mod:`.readme`: the README's generated blocks (tasks table, MTEB prompts) from the task registry.
- :mod:`.results`: MTEB result folders (the public results repository's layout) read into tables; ``eval/``'s
  scripts (``run_mteb``, ``compare``, ``make_readme_table``) use it too.

May import: everything below it (:mod:`vipyloqwen_tools.checkpoint`, the Hub files).
"""
