"""Checkpoints: everything that writes a viPyloQwen model folder.

- :mod:`.tokenizer`: the real Qwen2-VL tokenizer, built offline from the ``quicktok-v1`` ranks.
- :mod:`.export`: the tiny random model (tests, demo) and :func:`~.export.save_checkpoint` (training exports).
- :mod:`.base`: a pretrained Qwen2-VL checkpoint streamed shard by shard into our layout (``build_model --base``).
- :mod:`.files`: the files every checkpoint carries besides its weights (task tokens, processor, Hub
  code, Sentence-Transformers files, model card).
- :mod:`.safetensors_stream`: reading and writing safetensors files tensor by tensor.
- :mod:`.architectures`: the published Qwen2-VL-2B-Instruct config and its widths (one source for the planner,
  benches and fakes); :mod:`.fake_base`: a stand-in of the real base layout at reduced depth, for tests.
- :mod:`.finite`: the check every save makes first (no NaN / inf weights are ever written).

May import: the Hub files (``*_vipyloqwen.py``), transformers, torch. Nothing else of this package.
"""
