"""Benchmarks: ``encode_bench`` (encode paths vs the bare forward), ``train_bench`` (loss step time and memory),
``report`` (the performance section of the docs, generated from the JSON)."""
