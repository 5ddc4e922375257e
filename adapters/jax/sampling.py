"""Choosing the next token, in JAX, for every row of a batch.

A :class:`~modelport.domain.SamplingPolicy` becomes a static :class:`SamplerSpec`
(what changes the compiled program: greedy or not, top-k, whether top-p/min-p
filtering or the repeat penalty run at all) and traced :class:`SamplerParams` (the
numbers, one per row, and the PRNG keys). The order follows llama.cpp: repeat
penalty, top-k, top-p, min-p, temperature, then a draw. Step ``n`` of a row draws
with ``fold_in(key, n)``, so the same seed gives the same tokens whether the
tokens are streamed one by one or generated in one loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from modelport.domain import SamplingPolicy


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    greedy: bool = True
    top_k: int = 0  # 0: no top-k filter
    filtered: bool = False  # top_p < 1 or min_p > 0 for some row
    penalize: bool = False  # repeat_penalty != 1 for some row

    @classmethod
    def of(cls, policies: Sequence[SamplingPolicy], vocab_size: int) -> "SamplerSpec":
        greedy = all(p.is_greedy for p in policies)
        top_k = max(p.top_k for p in policies)
        top_k = 0 if greedy or top_k >= vocab_size or any(p.top_k == 0 for p in policies) else top_k
        return cls(
            greedy=greedy,
            top_k=top_k,
            filtered=not greedy and any(p.top_p < 1 or p.min_p > 0 for p in policies),
            penalize=any(p.repeat_penalty != 1 for p in policies),
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplerParams:
    temperature: jax.Array  # (B,) float32
    top_k: jax.Array  # (B,) int32, 0: all
    top_p: jax.Array  # (B,) float32
    min_p: jax.Array  # (B,) float32
    repeat_penalty: jax.Array  # (B,) float32
    repeat_last_n: jax.Array  # (B,) int32, -1: the whole context
    keys: jax.Array  # (B,) PRNG keys

    @classmethod
    def of(cls, policies: Sequence[SamplingPolicy], seeds: Sequence[int], device: Any = None) -> "SamplerParams":
        f32 = lambda xs: jnp.asarray(xs, jnp.float32)  # noqa: E731
        i32 = lambda xs: jnp.asarray(xs, jnp.int32)  # noqa: E731
        params = cls(
            temperature=f32([max(p.temperature, 1e-6) for p in policies]),
            top_k=i32([p.top_k for p in policies]),
            top_p=f32([p.top_p for p in policies]),
            min_p=f32([p.min_p for p in policies]),
            repeat_penalty=f32([p.repeat_penalty for p in policies]),
            repeat_last_n=i32([p.repeat_last_n for p in policies]),
            keys=jnp.stack([jax.random.key(seed) for seed in seeds]),
        )
        return jax.device_put(params, device) if device is not None else params


def sample(logits: jax.Array, history: jax.Array, length: jax.Array, params: SamplerParams,
           spec: SamplerSpec, step: jax.Array) -> jax.Array:
    """logits (B, V) float32; history (B, S) the tokens so far, ``length`` (B,) of
    them valid -> next tokens (B,) int32."""
    if spec.penalize:
        logits = repeat_penalty(logits, history, length, params.repeat_penalty, params.repeat_last_n)
    if spec.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if spec.top_k:
        values, ids = jax.lax.top_k(logits, spec.top_k)  # (B, k), sorted
        rank = jnp.arange(spec.top_k)[None, :]
        values = jnp.where((params.top_k[:, None] == 0) | (rank < params.top_k[:, None]), values, -jnp.inf)
    elif spec.filtered:
        ids = jnp.argsort(-logits, axis=-1)  # (B, V)
        values = jnp.take_along_axis(logits, ids, axis=-1)
    else:
        values, ids = logits, None
    if spec.filtered:
        values = nucleus_and_min_p(values, params.top_p, params.min_p)
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(params.keys, step)
    choice = jax.vmap(jax.random.categorical)(keys, values / params.temperature[:, None])  # (B,)
    if ids is None:
        return choice.astype(jnp.int32)
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def nucleus_and_min_p(values: jax.Array, top_p: jax.Array, min_p: jax.Array) -> jax.Array:
    """values (B, N) sorted descending: keep the smallest prefix holding ``top_p`` of
    the probability, and tokens at least ``min_p`` times the most likely one."""
    probs = jax.nn.softmax(values, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability of the better tokens
    keep = (before < top_p[:, None]) & (probs >= min_p[:, None] * probs[:, :1])
    keep = keep.at[:, 0].set(True)
    return jnp.where(keep, values, -jnp.inf)


def repeat_penalty(logits: jax.Array, history: jax.Array, length: jax.Array, penalty: jax.Array,
                   last_n: jax.Array) -> jax.Array:
    """Divide positive (multiply negative) logits of the tokens among the last
    ``last_n`` of ``history`` by ``penalty``, as llama.cpp does."""
    b, s = history.shape
    position = jnp.arange(s)[None, :]
    start = jnp.where(last_n < 0, 0, length - last_n)[:, None]
    recent = ((position >= start) & (position < length[:, None])).astype(jnp.int32)  # (B, S)
    rows = jnp.arange(b)[:, None]
    seen = jnp.zeros(logits.shape, jnp.int32).at[rows, history].max(recent) > 0
    p = penalty[:, None]
    return jnp.where(seen, jnp.where(logits > 0, logits / p, logits * p), logits)
