"""Prefill and decode for decoder families, jitted over NNX state.

The model is split once into its graph and its state. The state's arrays are the
jit argument (weights are never baked into the compiled program); the graph and the
state's tree structure are a static argument whose hash is computed once
(:class:`Structure`), so a call costs no more Python than flattening a tuple. Prompts are
padded to power-of-two buckets, the attention span (how much of the preallocated
cache a step reads) is bucketed the same way, and the KV cache is donated to every
call. :meth:`Decoder.step` runs one token for every row (streaming calls it once
per token); :meth:`Decoder.generate` runs the same step inside one
``lax.while_loop`` until every row has ended or the limit is reached.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .kvcache import KVCache
from .sampling import SamplerParams, SamplerSpec, sample

MIN_BUCKET = 16
MIN_SPAN = 256


def bucket(n: int, limit: int, minimum: int = MIN_BUCKET) -> int:
    """The smallest power of two >= n (at least ``minimum``), capped at ``limit``."""
    size = max(minimum, 1 << max(0, n - 1).bit_length())
    return min(size, limit)


class Structure:
    """The static half of a split NNX model: its graph and its state's tree
    structure. jit hashes static arguments on every call, so the hash is kept."""

    def __init__(self, model: nnx.Module) -> None:
        self.graph, state = nnx.split(model)
        leaves, self.treedef = jax.tree_util.tree_flatten(state)
        self.leaves = tuple(leaves)
        self._hash = hash((self.graph, self.treedef))

    def merge(self, leaves: Sequence[jax.Array]) -> nnx.Module:
        return nnx.merge(self.graph, jax.tree_util.tree_unflatten(self.treedef, leaves))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Structure) and self._hash == other._hash
                                 and self.graph == other.graph and self.treedef == other.treedef)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rows:
    """Per-row decoding state: the last token (not yet in the cache), how many
    tokens are in the cache, and every token so far (for the repeat penalty)."""

    token: jax.Array  # (B,) int32
    length: jax.Array  # (B,) int32
    history: jax.Array  # (B, S) int32


def _prefill(state, cache: KVCache, tokens, lengths, params: SamplerParams, *, graph, spec: SamplerSpec, span: int):
    """tokens (B, T) right-padded, lengths (B,) -> the first sampled token per row."""
    model = graph.merge(state)
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    hidden, cache = model(tokens, positions, cache, span)
    last = hidden[jnp.arange(b), lengths - 1]  # (B, D)
    logits = model.logits(last)
    history = jnp.zeros((b, cache.length), jnp.int32).at[:, :t].set(tokens)
    token = sample(logits, history, lengths, params, spec, jnp.int32(0))
    return Rows(token=token, length=lengths, history=history), cache


def _step(state, cache: KVCache, rows: Rows, params: SamplerParams, n, *, graph, spec: SamplerSpec, span: int):
    """Feed every row's last token; sample the next. ``n`` numbers the draw."""
    model = graph.merge(state)
    index = jnp.arange(rows.token.shape[0])
    history = rows.history.at[index, rows.length].set(rows.token, mode="drop")
    hidden, cache = model(rows.token[:, None], rows.length[:, None], cache, span)
    logits = model.logits(hidden[:, 0])
    length = rows.length + 1
    token = sample(logits, history, length, params, spec, n)
    return Rows(token=token, length=length, history=history), cache


def _generate(state, cache: KVCache, rows: Rows, params: SamplerParams, limit, end_ids, *, graph,
              spec: SamplerSpec, span: int, capacity: int):
    """Up to ``limit`` tokens per row (the first one already in ``rows``) in one
    loop. Returns (tokens (B, capacity), count, cache); a row's tokens end at its
    first end id."""
    b = rows.token.shape[0]
    out = jnp.zeros((b, capacity), jnp.int32).at[:, 0].set(rows.token)
    done = jnp.isin(rows.token, end_ids)

    def more(carry):
        n, _, _, done, _ = carry
        return (n < limit) & ~jnp.all(done)

    def body(carry):
        n, rows, out, done, cache = carry
        rows, cache = _step(state, cache, rows, params, n, graph=graph, spec=spec, span=span)
        out = out.at[:, n].set(rows.token)
        return n + 1, rows, out, done | jnp.isin(rows.token, end_ids), cache

    n, _, out, _, cache = jax.lax.while_loop(more, body, (jnp.int32(1), rows, out, done, cache))
    return out, n, cache


def _forward(state, cache: KVCache, tokens, *, graph):
    """Logits (B, T, V) of whole prompts (no padding), through the cache path."""
    model = graph.merge(state)
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    hidden, _ = model(tokens, positions, cache, t)
    return model.logits(hidden)


# One compiled program per graph (model configuration) and shape, shared by every
# Decoder of that model: a model loaded again does not trace again.
_STATIC = ("graph", "spec", "span")
prefill_jit = jax.jit(_prefill, static_argnames=_STATIC, donate_argnames=("cache",))
step_jit = jax.jit(_step, static_argnames=_STATIC, donate_argnames=("cache",))
generate_jit = jax.jit(_generate, static_argnames=(*_STATIC, "capacity"), donate_argnames=("cache",))
forward_jit = jax.jit(_forward, static_argnames=("graph",))


class Decoder:
    """A decoder model on one device with its preallocated cache of ``batch`` rows."""

    def __init__(self, model: nnx.Module, cache_dims: tuple[int, int, int], *, length: int, batch: int = 1,
                 device: Any = None) -> None:
        self.graph = Structure(model)
        self.state = self.graph.leaves  # the weights: a tuple of arrays
        self.vocab_size = model.cfg.vocab_size
        self.length, self.batch, self.device = length, batch, device
        self.cache_dims = cache_dims
        self.dtype = _compute_dtype(self.state)
        self.cache = KVCache.zeros(cache_dims[0], batch, length, *cache_dims[1:], self.dtype, device)

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def prefill(self, prompts: Sequence[Sequence[int]], params: SamplerParams, spec: SamplerSpec) -> Rows:
        """Run the prompts (one per row, each shorter than the cache); the first
        token of each row is sampled. Rows beyond the prompts repeat the last one."""
        prompts = list(prompts) + [prompts[-1]] * (self.batch - len(prompts))
        longest = max(len(p) for p in prompts)
        width = bucket(longest, self.length)
        tokens = np.zeros((self.batch, width), np.int32)
        for i, prompt in enumerate(prompts):
            tokens[i, : len(prompt)] = prompt
        lengths = np.asarray([len(p) for p in prompts], np.int32)
        rows, self.cache = prefill_jit(self.state, self.cache, tokens, lengths, params, graph=self.graph, spec=spec,
                                       span=width)
        return rows

    def step(self, rows: Rows, params: SamplerParams, spec: SamplerSpec, n: int, reach: int) -> Rows:
        """One token for every row; ``reach`` bounds the positions the step reads."""
        span = bucket(reach, self.length, MIN_SPAN)
        rows, self.cache = step_jit(self.state, self.cache, rows, params, jnp.int32(n), graph=self.graph, spec=spec,
                                    span=span)
        return rows

    def generate(self, rows: Rows, params: SamplerParams, spec: SamplerSpec, limit: int,
                 end_ids: Sequence[int], reach: int) -> tuple[np.ndarray, int]:
        """Tokens (B, n) after the first, until every row ended or ``limit`` tokens."""
        span = bucket(reach, self.length, MIN_SPAN)
        capacity = bucket(limit, 1 << 30, MIN_BUCKET)
        ends = jnp.asarray(list(end_ids) or [-1], jnp.int32)
        out, n, self.cache = generate_jit(self.state, self.cache, rows, params, jnp.int32(limit), ends,
                                          graph=self.graph, spec=spec, span=span, capacity=capacity)
        return np.asarray(out)[:, : int(n)], int(n)

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        """Logits (B, T, V) float32 of equal-length prompts, each from position 0, in
        a cache of their own (for checks against other implementations)."""
        b, t = tokens.shape
        cache = KVCache.zeros(self.cache_dims[0], b, t, *self.cache_dims[1:], self.dtype, self.device)
        return np.asarray(forward_jit(self.state, cache, jnp.asarray(tokens, jnp.int32), graph=self.graph))


def _compute_dtype(state: Any) -> Any:
    leaves = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else jnp.float32
