"""The decoder's compiled programs over a cache whose rows are the engine's slots.

The model is split once into its graph and its state. The state's arrays are the
argument (weights are never baked into a program); the graph and the state's tree
structure are static, their hash computed once (:class:`Structure`).

Three kinds of program, each compiled once per shape and kept (:class:`Programs`):

- **prefill into a row**: a chunk of one slot's prompt is written into its row of the
  cache from a start position, the other rows untouched. The row and the start are
  traced; the chunk is padded to a power of two (padding is written nowhere), and the
  attention span (how much of the row it reads) is a power of two too.
- **decode**: one token for every row at once, each at its own position; a row that
  sits the step out is given a position past the cache, so nothing of it is written.
- **sample** (:mod:`.sampling`): the next token of every row from the logits the two
  others leave in a (rows, vocabulary) buffer; in the steps that need them, a token
  mask applied to that buffer first, and log-probabilities after.

The KV cache, the token history (for the repeat penalty) and the logits buffer stay
on the device and are donated to every call that changes them. :meth:`Decoder.warm`
compiles every program a step can ask for, so that requests coming and going never
compile anything.

On a mesh (tensor parallelism, :mod:`.sharding`) the same programs run over every
device: the weights carry their shardings, the cache is split by KV heads, and the
token history, the logits buffer and every host input are replicated; the programs'
outputs are given those same shardings, so a donated buffer comes back as it went.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import os
import threading
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import sharding
from .kvcache import KVCache
from .sampling import LOGPROB_TOP, SampleMode, apply_mask, log_probabilities, sample_rows

MIN_BUCKET = 16
MIN_SPAN = 256


def bucket(n: int, limit: int, minimum: int = MIN_BUCKET) -> int:
    """The smallest power of two >= n (at least ``minimum``), capped at ``limit``."""
    size = max(minimum, 1 << max(0, n - 1).bit_length())
    return min(size, limit)


def buckets(limit: int, minimum: int, top: int | None = None) -> list[int]:
    """Every value :func:`bucket` gives for n in 1..top (default: ``limit``)."""
    top = top or limit
    powers = [1 << i for i in range(top.bit_length())]  # 1, 2, 4, .. <= top
    return sorted({bucket(n, limit, minimum) for n in [*powers, top]})


def prefill_span(n: int, limit: int) -> int:
    """The attention span of a prompt chunk reaching position n: a power of four
    times MIN_SPAN (coarser than decode's, so that chunk widths times spans stay a
    small set of programs), capped at ``limit``."""
    span = MIN_SPAN
    while span < n:
        span *= 4
    return min(span, limit)


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
        return self is other or (
            isinstance(other, Structure)
            and self._hash == other._hash
            and self.graph == other.graph
            and self.treedef == other.treedef
        )


# -- the programs ------------------------------------------------------------------------


def _prefill(state, cache: KVCache, history, logits, tokens, row, start, count, *, graph: Structure, span: int):
    """tokens (1, T): a chunk of row ``row``'s prompt, its first ``count`` real, at
    positions start.. of that row. Writes their keys, values and ids; the row's
    logits become those after the chunk's last real token."""
    model = graph.merge(state)
    offsets = jnp.arange(tokens.shape[1], dtype=jnp.int32)
    positions = jnp.where(offsets < count, start + offsets, cache.length)[None, :]  # padding: dropped
    hidden, cache = model(tokens, positions, cache, span, row)
    last = jax.lax.dynamic_index_in_dim(hidden[0], count - 1, keepdims=True)  # (1, D)
    logits = jax.lax.dynamic_update_slice_in_dim(logits, model.logits(last), row, axis=0)
    history = history.at[row, positions[0]].set(tokens[0], mode="drop")
    return cache, history, logits


def _decode(state, cache: KVCache, history, tokens, positions, *, graph: Structure, span: int):
    """tokens, positions (B,): every row's fed token and where it goes (a position
    past the cache: the row sits out) -> logits (B, V) of every row."""
    model = graph.merge(state)
    hidden, cache = model(tokens[:, None], positions[:, None], cache, span)
    history = history.at[jnp.arange(tokens.shape[0]), positions].set(tokens, mode="drop")
    return cache, history, model.logits(hidden[:, 0])


def _forward(state, cache: KVCache, tokens, *, graph: Structure):
    """Logits (B, T, V) of whole prompts (no padding), through the cache path."""
    model = graph.merge(state)
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    hidden, _ = model(tokens, positions, cache, t)
    return model.logits(hidden)


prefill_jit = jax.jit(_prefill, static_argnames=("graph", "span"), donate_argnames=("cache", "history", "logits"))
decode_jit = jax.jit(_decode, static_argnames=("graph", "span"), donate_argnames=("cache", "history"))
sample_jit = jax.jit(sample_rows, static_argnames=("mode",))
mask_jit = jax.jit(apply_mask, donate_argnames=("logits",))
logprobs_jit = jax.jit(log_probabilities)
forward_jit = jax.jit(_forward, static_argnames=("graph",))


@functools.lru_cache(maxsize=16)
def _mesh_jits(cache: Any, rows: Any) -> dict[str, Any]:
    """The programs of a mesh: the same functions, their outputs kept where their
    inputs were (``cache``: the KVCache's shardings, ``rows``: replicated)."""
    state_out = (cache, rows, rows)
    return {
        "prefill": jax.jit(
            _prefill,
            static_argnames=("graph", "span"),
            donate_argnames=("cache", "history", "logits"),
            out_shardings=state_out,
        ),
        "decode": jax.jit(
            _decode, static_argnames=("graph", "span"), donate_argnames=("cache", "history"), out_shardings=state_out
        ),
        "sample": jax.jit(sample_rows, static_argnames=("mode",), out_shardings=rows),
        "mask": jax.jit(apply_mask, donate_argnames=("logits",), out_shardings=rows),
        "logprobs": jax.jit(log_probabilities, out_shardings=rows),
    }


_SINGLE = {
    "prefill": prefill_jit,
    "decode": decode_jit,
    "sample": sample_jit,
    "mask": mask_jit,
    "logprobs": logprobs_jit,
}


class Programs:
    """Compiled programs by key, shared by every Decoder of a process: a model
    loaded again compiles nothing again. The least recently used are dropped past
    ``limit`` (a server that loads many models)."""

    limit = 1024
    _lock = threading.Lock()
    _compiled: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()

    @classmethod
    def get(cls, key: tuple, lower: Callable[[], Any]) -> Any:
        with cls._lock:
            program = cls._compiled.get(key)
            if program is not None:
                cls._compiled.move_to_end(key)
                return program
        program = lower().compile()
        with cls._lock:
            program = cls._compiled.setdefault(key, program)
            while len(cls._compiled) > cls.limit:
                cls._compiled.popitem(last=False)
        return program


class Decoder:
    """A decoder model on one device, or on a ``mesh`` (its weights already placed
    there, see :func:`.weights.load_model`), with a preallocated cache of ``batch``
    rows of ``length`` positions, the rows' token histories and their last logits."""

    def __init__(
        self,
        model: nnx.Module,
        cache_dims: tuple[int, int, int],
        *,
        length: int,
        batch: int = 1,
        device: Any = None,
        mesh: Any = None,
    ) -> None:
        self.graph = Structure(model)
        self.state = self.graph.leaves  # the weights: a tuple of arrays
        self.vocab_size = model.cfg.vocab_size
        self.length, self.batch, self.device, self.mesh = length, batch, device, mesh
        self.cache_dims = cache_dims
        self.dtype = _compute_dtype(self.state)
        layers, kv_heads, head_dim = cache_dims
        if mesh is not None:
            self._rows = sharding.replicated(mesh)  # where history, logits and host inputs go
            self._cache_at = sharding.named(mesh, sharding.CACHE_AXES, (batch, length, kv_heads, head_dim))
            self._jits = _mesh_jits(KVCache(k=(self._cache_at,) * layers, v=(self._cache_at,) * layers), self._rows)
            self._where: Any = mesh
        else:
            self._rows = self._cache_at = device
            self._jits, self._where = _SINGLE, device
        self.cache = KVCache.zeros(layers, batch, length, kv_heads, head_dim, self.dtype, self._cache_at)
        self.history = jnp.zeros((batch, length), jnp.int32, device=self._rows)
        self.logits = jnp.zeros((batch, self.vocab_size), jnp.float32, device=self._rows)
        self._key_shape = tuple(jax.random.key_data(jax.random.key(0)).shape)
        self._global = mesh is not None and not self.history.is_fully_addressable  # several processes

    def _abstract(self, shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
        """An argument of a program compiled ahead of time, on the decoder's device
        (replicated on a mesh)."""
        if self.mesh is not None:
            return jax.ShapeDtypeStruct(shape, dtype, sharding=self._rows)
        sharding_ = jax.sharding.SingleDeviceSharding(self.device) if self.device is not None else None
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding_)

    def _in(self, value: np.ndarray) -> Any:
        """A host input of a program: as it is, or, over several processes, a global
        array that each process builds from the same value."""
        return sharding.place(np.asarray(value), self._rows) if self._global else value

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes + self.history.nbytes + self.logits.nbytes

    @property
    def bytes_per_device(self) -> int:
        """The most that one device holds of the weights, cache and buffers."""
        return sharding.bytes_per_device(jax.tree_util.tree_leaves((self.state, self.cache, self.history, self.logits)))

    def release(self) -> None:
        for leaf in jax.tree_util.tree_leaves((self.state, self.cache, self.history, self.logits)):
            if isinstance(leaf, jax.Array) and not leaf.is_deleted():
                leaf.delete()

    # -- shapes and their programs -------------------------------------------------------

    def chunk_buckets(self, chunk_tokens: int) -> list[int]:
        return buckets(self.length, MIN_BUCKET, min(chunk_tokens, self.length))

    def spans(self) -> list[int]:
        """The decode step's attention spans."""
        return buckets(self.length, MIN_SPAN)

    def prefill_spans(self) -> list[int]:
        return sorted({prefill_span(n, self.length) for n in self.spans()})

    def _prefill_program(self, width: int, span: int) -> Any:
        key = ("prefill", self.graph, self.batch, self.length, str(self.dtype), width, span, self._where)
        tokens, scalar = self._abstract((1, width), jnp.int32), self._abstract((), jnp.int32)
        return Programs.get(
            key,
            lambda: self._jits["prefill"].lower(
                self.state,
                self.cache,
                self.history,
                self.logits,
                tokens,
                scalar,
                scalar,
                scalar,
                graph=self.graph,
                span=span,
            ),
        )

    def _decode_program(self, span: int) -> Any:
        key = ("decode", self.graph, self.batch, self.length, str(self.dtype), span, self._where)
        rows = self._abstract((self.batch,), jnp.int32)
        return Programs.get(
            key,
            lambda: self._jits["decode"].lower(
                self.state, self.cache, self.history, rows, rows, graph=self.graph, span=span
            ),
        )

    def _sample_program(self, mode: SampleMode) -> Any:
        key = ("sample", self.batch, self.length, self.vocab_size, mode, self._where)
        return Programs.get(key, lambda: self._jits["sample"].lower(*self._sampling_args(), mode=mode))

    def _sampling_args(self) -> tuple:
        b, arg = self.batch, self._abstract
        return (
            self.logits,
            self.history,
            arg((b,), jnp.int32),
            arg((b, 4), jnp.float32),
            arg((b, 4), jnp.int32),
            arg((b, *self._key_shape), jnp.uint32),
        )

    def _mask_program(self) -> Any:
        key = ("mask", self.batch, self.vocab_size, self._where)
        mask = self._abstract((self.batch, self.vocab_size), jnp.bool_)
        return Programs.get(key, lambda: self._jits["mask"].lower(self.logits, mask))

    def _logprobs_program(self) -> Any:
        key = ("logprobs", self.batch, self.length, self.vocab_size, self._where)
        args = self._sampling_args()[:5] + (self._abstract((self.batch,), jnp.int32),)
        return Programs.get(key, lambda: self._jits["logprobs"].lower(*args))

    def warm(self, chunk_tokens: int) -> int:
        """Compile every program a step can ask for (a few at a time: XLA compiles
        outside Python's lock); returns how many there are."""
        programs = [functools.partial(self._decode_program, s) for s in self.spans()]
        for width, span in itertools.product(self.chunk_buckets(chunk_tokens), self.prefill_spans()):
            if width <= span:
                programs.append(functools.partial(self._prefill_program, width, span))
        programs += [functools.partial(self._sample_program, m) for m in SampleMode.all()]
        programs += [self._mask_program, self._logprobs_program]
        with concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            for done in [pool.submit(compile_one) for compile_one in programs]:
                done.result()
        return len(programs)

    # -- running them --------------------------------------------------------------------

    def prefill(self, row: int, tokens: Sequence[int], start: int, widest: int) -> None:
        """Write ``tokens`` into ``row`` from ``start``, in pieces of at most
        ``widest`` (a bucket); the row's logits are those after the last one."""
        for offset in range(0, len(tokens), widest):
            piece = tokens[offset : offset + widest]
            at = start + offset
            width = bucket(len(piece), self.length)
            span = prefill_span(at + len(piece), self.length)
            padded = np.zeros((1, width), np.int32)
            padded[0, : len(piece)] = piece
            program = self._prefill_program(width, span)
            self.cache, self.history, self.logits = program(
                self.state,
                self.cache,
                self.history,
                self.logits,
                self._in(padded),
                self._in(np.int32(row)),
                self._in(np.int32(at)),
                self._in(np.int32(len(piece))),
            )

    def decode(self, tokens: np.ndarray, positions: np.ndarray, reach: int) -> None:
        """One token for every row (``positions`` >= length: the row sits out);
        ``reach`` bounds the positions written."""
        program = self._decode_program(bucket(reach, self.length, MIN_SPAN))
        self.cache, self.history, self.logits = program(
            self.state, self.cache, self.history, self._in(tokens), self._in(positions)
        )

    def sample(
        self,
        lengths: np.ndarray,
        floats: np.ndarray,
        ints: np.ndarray,
        keys: np.ndarray,
        mask: np.ndarray | None,
        mode: SampleMode,
        logprobs: bool,
    ) -> tuple[np.ndarray, ...]:
        """The next token of every row from the logits buffer (see
        :func:`.sampling.sample_rows`), after ``mask`` (B, V) when given; with
        ``logprobs`` also their log-probabilities and the most likely tokens (see
        :func:`.sampling.log_probabilities`). Host arrays."""
        if mask is not None:
            self.logits = self._mask_program()(self.logits, self._in(mask))
        lengths, floats, ints = self._in(lengths), self._in(floats), self._in(ints)
        tokens = self._sample_program(mode)(self.logits, self.history, lengths, floats, ints, self._in(keys))
        if not logprobs:
            return (sharding.fetch(tokens),)
        out = self._logprobs_program()(self.logits, self.history, lengths, floats, ints, tokens)
        return (sharding.fetch(tokens), *(sharding.fetch(x) for x in out))

    def key_data(self, seed: int) -> np.ndarray:
        """The raw PRNG key of ``seed`` (what :meth:`sample` takes per row)."""
        return np.asarray(jax.random.key_data(jax.random.key(seed % 2**32)), np.uint32)

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        """Logits (B, T, V) float32 of equal-length prompts, each from position 0, in
        a cache of their own (for checks against other implementations)."""
        b, t = tokens.shape
        at = self.device
        if self.mesh is not None:
            at = sharding.named(self.mesh, sharding.CACHE_AXES, (b, t, *self.cache_dims[1:]))
        cache = KVCache.zeros(self.cache_dims[0], b, t, *self.cache_dims[1:], self.dtype, at)
        tokens = self._in(np.asarray(tokens, np.int32)) if self.mesh is not None else jnp.asarray(tokens, jnp.int32)
        return sharding.fetch(forward_jit(self.state, cache, tokens, graph=self.graph))


def _compute_dtype(state: Any) -> Any:
    leaves = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else jnp.float32


__all__ = ["Decoder", "LOGPROB_TOP", "MIN_BUCKET", "MIN_SPAN", "SampleMode", "Structure", "bucket"]
