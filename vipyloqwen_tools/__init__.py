"""Developer tooling for the viPyloQwen Hub package: tokenizer and checkpoint building, export, demo.

Nothing in here ships to the Hub; the Hub files are the *_vipyloqwen.py modules at the repo root.
"""
