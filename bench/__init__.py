"""Benchmarks. ``harness`` (machine facts, timing, peak RSS, the results JSON and its targets) and ``common``
(the models and generated workloads) serve every script: ``encode_bench`` (encode paths vs the bare forward),
``index_bench``, ``train_bench`` (loss step time and memory), ``data_bench``, ``build_bench``, ``images_bench``,
``planner_calibrate``, ``rehearsal``, ``gpu_check``; ``report`` writes the performance section of the docs from the
JSON in ``bench/results/``."""
