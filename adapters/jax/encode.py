"""Sentence embeddings from an encoder, as sentence-transformers computes them.

The pooling comes from ``modules.json`` and its Pooling module's ``config.json``
(CLS, mean, max, mean/sqrt(length); several are concatenated in
sentence-transformers' order), and the vectors are L2-normalized when
``modules.json`` lists a Normalize module. A folder without ``modules.json`` gets
mean pooling and normalization (as Ollama returns embeddings).

A batch is sorted by length and cut into calls of about ``TOKENS_PER_CALL`` tokens:
each call's texts have similar lengths, padded to the next of ``WIDTHS`` (steps of
at most 1.5x), and its row count is a power of two, so no row is padding and the
compiled shapes stay few. The padding is masked out of attention and pooling.
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

from .decode import Structure

POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
WIDTHS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)  # padded lengths
TOKENS_PER_CALL = 4096  # rows x width of one call, at most (a longer text goes alone)


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
        calls = plan([len(t) for t in batch], self.max_length)
        results = [self._call(batch, rows, width) for rows, width in calls]  # all dispatched, then read
        parts = [np.asarray(r) for r in results]
        out = np.empty((len(batch), parts[0].shape[1]), np.float32)
        for (rows, _), part in zip(calls, parts):
            out[rows] = part
        return out

    def _call(self, batch: Sequence[Sequence[int]], rows: Sequence[int], width: int) -> jax.Array:
        tokens = np.zeros((len(rows), width), np.int32)
        valid = np.zeros((len(rows), width), bool)
        for i, row in enumerate(rows):
            ids = batch[row]
            tokens[i, : len(ids)], valid[i, : len(ids)] = ids, True
        return embed_jit(self.state, tokens, valid, graph=self.graph, modes=self.modes, normalize=self.normalize)


def plan(lengths: Sequence[int], limit: int) -> list[tuple[list[int], int]]:
    """The calls that embed texts of these token ``lengths``: (the texts' indices,
    padded width) each. Longest first; a call takes the largest power of two of the
    texts left that fits ``TOKENS_PER_CALL`` at the width of its longest."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    calls, start = [], 0
    while start < len(order):
        width = padded_width(lengths[order[start]], limit)
        fit = min(max(1, TOKENS_PER_CALL // width), len(order) - start)
        rows = 1 << (fit.bit_length() - 1)
        calls.append((order[start : start + rows], width))
        start += rows
    return calls


def padded_width(n: int, limit: int) -> int:
    """The first of ``WIDTHS`` that holds n tokens (``limit`` past the last), at most ``limit``."""
    return min(next((w for w in WIDTHS if w >= n), limit), limit)


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
