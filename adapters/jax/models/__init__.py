"""One module per model family, named after the Hugging Face ``model_type`` it
implements (see ``..registry`` for the types that share a family).

Each family module provides:

- ``Config``: a frozen dataclass with ``from_hf_config(dict)``;
- ``Model(cfg, dtype=...)``: the ``nnx.Module``;
- ``weight_rules(cfg)``: checkpoint tensors -> parameters (``..weights.Rule``),
  ``IGNORED`` (checkpoint names that are buffers) and ``PREFIXES`` (name prefixes
  some checkpoints carry);
- ``KIND``: ``"decoder"`` (with ``cache_shape(cfg)``; the model maps tokens,
  positions, a KV cache and an attention span to hidden states and the cache, and
  ``logits(hidden)``) or ``"encoder"`` (the model maps tokens and a padding mask to
  hidden states).
"""
