"""Evaluation tooling for viPyloQwen: MTEB / VN-MTEB runs, JSONL evaluation, comparisons, README tables."""
