"""Sentence embeddings from an encoder, as sentence-transformers computes them.

The pooling comes from ``modules.json`` and its Pooling module's ``config.json``
(CLS, mean, max, mean/sqrt(length); several are concatenated in
sentence-transformers' order), and the vectors are L2-normalized when
``modules.json`` lists a Normalize module. A folder without ``modules.json`` gets
mean pooling and normalization (as Ollama returns embeddings). Batches are padded
to power-of-two shapes and the padding is masked out of attention and pooling.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from modelport.domain import ModelLoadError

from .decode import Structure, bucket

POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
MAX_BATCH = 32


def sentence_transformers_setup(folder: str) -> tuple[tuple[str, ...], bool, int | None]:
    """(pooling modes, normalize, max_seq_length) for a folder."""
    modules_path = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_path):
        return ("mean_tokens",), True, None
    modules = _json(modules_path)
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    pooling = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    modes: tuple[str, ...] = ("mean_tokens",)
    if pooling is not None:
        config = _json(os.path.join(folder, pooling.get("path", ""), "config.json"))
        unsupported = [
            k
            for k, v in config.items()
            if k.startswith("pooling_mode_") and v and k.removeprefix("pooling_mode_") not in POOLING_MODES
        ]
        if unsupported:
            raise ModelLoadError(f"pooling {', '.join(unsupported)} is not supported")
        modes = tuple(m for m in POOLING_MODES if config.get(f"pooling_mode_{m}"))
        if not modes:
            raise ModelLoadError(f"{folder}: the Pooling module enables no pooling mode")
    normalize = any(t.endswith(".Normalize") for t in types)
    settings_path = os.path.join(folder, "sentence_bert_config.json")
    max_length = _json(settings_path).get("max_seq_length") if os.path.isfile(settings_path) else None
    return modes, normalize, int(max_length) if max_length else None


class Encoder:
    """An encoder model on a device, with its pooling."""

    def __init__(self, model: nnx.Module, folder: str, *, device: Any = None) -> None:
        self.graph = Structure(model)
        self.state = self.graph.leaves
        self.modes, self.normalize, max_length = sentence_transformers_setup(folder)
        self.max_length = min(max_length or model.cfg.max_position_embeddings, model.cfg.max_position_embeddings)
        self.device = device

    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Token lists (each at most ``max_length``) -> vectors (N, D') float32."""
        vectors = [self._chunk(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)]
        return np.concatenate(vectors, axis=0)

    def _chunk(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        rows = bucket(len(batch), MAX_BATCH, minimum=1)
        width = bucket(max(len(t) for t in batch), self.max_length)
        tokens = np.zeros((rows, width), np.int32)
        valid = np.zeros((rows, width), bool)
        for i, ids in enumerate(batch):
            tokens[i, : len(ids)], valid[i, : len(ids)] = ids, True
        valid[len(batch) :, 0] = True  # padding rows: one visible token keeps the math finite
        out = embed_jit(self.state, tokens, valid, graph=self.graph, modes=self.modes, normalize=self.normalize)
        return np.asarray(out)[: len(batch)]


def _embed(state, tokens, valid, *, graph: Structure, modes: tuple[str, ...], normalize: bool):
    """tokens, valid (B, T) -> pooled (B, D * len(modes)) float32."""
    hidden = graph.merge(state)(tokens, valid).astype(jnp.float32)  # (B, T, D)
    return pool(hidden, valid, modes, normalize)


embed_jit = jax.jit(_embed, static_argnames=("graph", "modes", "normalize"))


def pool(hidden: jax.Array, valid: jax.Array, modes: Sequence[str], normalize: bool) -> jax.Array:
    mask = valid[:, :, None].astype(hidden.dtype)  # (B, T, 1)
    count = jnp.maximum(mask.sum(axis=1), 1e-9)  # (B, 1)
    parts = []
    for mode in modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(jnp.max(jnp.where(mask > 0, hidden, -1e9), axis=1))
        elif mode == "mean_tokens":
            parts.append((hidden * mask).sum(axis=1) / count)
        else:  # mean_sqrt_len_tokens
            parts.append((hidden * mask).sum(axis=1) / jnp.sqrt(count))
    vectors = jnp.concatenate(parts, axis=-1)
    if normalize:
        vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return vectors


def _json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
