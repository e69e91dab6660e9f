"""Hard-negative mining for training files (``scripts/mine.py``): positive-aware, no correct answer returned.

- :mod:`.rows`: the training file's rows (the validator's rules; rejects with line numbers), their identity keys,
  the distinct queries and documents per task, the candidate pool (the file's documents, or ``--corpus`` items).
- :mod:`.embed`: queries and documents embedded as training embeds them, windowed, sharded over torchrun ranks,
  resumable.
- :mod:`.search`: exact scores for small pools, the LanceDB ANN for large ones, a ``scripts/index.py`` db.
- :mod:`.select`: Sentence-Transformers' ``mine_hard_negatives`` rules (``num_negatives``, ``range_min``,
  ``range_max``, ``relative_margin``, ``absolute_margin``, ``max_score``, ``min_score``, ``sampling_strategy``)
  on candidates from which every correct answer is excluded by identity.
- :mod:`.run`: :func:`~.run.mine`, the run (resumable after a kill; N processes give the file 1 process gives).

Example::

    >>> from vipyloqwen_tools.mine import MineOptions, mine
    >>> mine("runs/2b/final", "train.jsonl", "train.mined.jsonl", MineOptions(num_negatives=4, relative_margin=0.05))

May import: the Hub files, :mod:`vipyloqwen_tools.data` (rows, identity), :mod:`vipyloqwen_tools.index` (the model
loader, items files, LanceDB settings, a db), :mod:`vipyloqwen_tools.train.evaluation` (the document prompt).
"""

from vipyloqwen_tools.mine.run import MineError, MineStats, mine
from vipyloqwen_tools.mine.select import MineOptions

__all__ = ["MineError", "MineOptions", "MineStats", "mine"]
