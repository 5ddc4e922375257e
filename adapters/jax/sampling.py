"""Choosing the next token of every row of a batch, in one program, each row with
its own sampling parameters.

A row's parameters are numbers (traced), so that greedy and sampled rows, and rows
with different filters, share one compiled program: packed per row as ``floats``
(temperature, top_p, min_p, repeat_penalty) and ``ints`` (greedy, top_k,
repeat_last_n, the draw's number). What is static is only which work the batch
needs at all (:class:`SampleMode`): whether any row draws, and whether any draws
from more than a few candidates. A row's token never depends on the mode beyond its
own needs, so it does not depend on the other rows. A token mask
(:func:`apply_mask`) and log-probabilities (:func:`log_probabilities`) are programs
of their own, run only in the steps that need them.

The order follows llama.cpp: repeat penalty, the token mask, top-k, top-p, min-p,
temperature, then a draw. Draw ``n`` of a row uses ``fold_in(key(seed), n)``: a
seeded request gives the same tokens whatever runs beside it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from modelport.domain import SamplingPolicy

CANDIDATES = 64  # a row with 1 <= top_k <= this draws among the candidates of one small lax.top_k
WIDE_CANDIDATES = 1024  # a larger top_k, or top-p without top-k, draws among this many (sorted)
LOGPROB_TOP = 20  # the most likely alternatives reported per token (OpenAI's top_logprobs maximum)

# columns of the packed parameters
TEMPERATURE, TOP_P, MIN_P, PENALTY = range(4)
GREEDY, TOP_K, LAST_N, DRAW = range(4)


@dataclasses.dataclass(frozen=True)
class SampleMode:
    """What the rows of one step need (the static part of the sampling program)."""

    sampled: bool = False  # some row draws (else every row takes its most likely token)
    wide: bool = False  # some drawing row has no top-k or one over CANDIDATES

    @classmethod
    def all(cls) -> list["SampleMode"]:
        """Every mode (the programs warmed at load)."""
        return [cls(), cls(sampled=True), cls(sampled=True, wide=True)]


def is_wide(policy: SamplingPolicy, vocab_size: int) -> bool:
    """Whether a row of this policy draws from more than the CANDIDATES most likely
    tokens (see :func:`sample_rows`)."""
    return not policy.is_greedy and not 1 <= policy.top_k <= min(CANDIDATES, vocab_size)


def pack(policy: SamplingPolicy) -> tuple[list[float], list[int]]:
    """One row's (floats, ints), its draw number 0."""
    floats = [policy.temperature, policy.top_p, policy.min_p, policy.repeat_penalty]
    ints = [int(policy.is_greedy), policy.top_k, policy.repeat_last_n, 0]
    return floats, ints


def sample_rows(
    logits: jax.Array,
    history: jax.Array,
    lengths: jax.Array,
    floats: jax.Array,
    ints: jax.Array,
    keys: jax.Array,
    *,
    mode: SampleMode,
) -> jax.Array:
    """logits (B, V) float32 (a mask already applied); history (B, S) each row's
    tokens, ``lengths`` (B,) of them valid; floats (B, 4), ints (B, 4) the packed
    parameters; keys (B, ...) raw PRNG keys -> the next token of every row (B,).

    A drawing row with 1 <= top_k <= CANDIDATES draws among its top-k; with a larger
    top_k (up to WIDE_CANDIDATES), or with top-p and no top-k, among the
    WIDE_CANDIDATES most likely tokens (top-p then keeps at most that many); with
    neither top-k nor top-p, from the whole vocabulary (min-p applied)."""
    temperature, top_p, min_p, _ = (floats[:, i] for i in range(4))
    greedy, top_k, _, draw = (ints[:, i] for i in range(4))
    vocab = logits.shape[-1]
    logits = _penalized(logits, history, lengths, floats, ints)
    if not mode.sampled:
        return jax.lax.top_k(logits, 1)[1][:, 0].astype(jnp.int32)  # the first most likely (argmax is slower)
    scale = jnp.where(temperature > 0, temperature, 1.0)[:, None]
    keys = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(keys), draw)
    count = min(CANDIDATES, vocab)
    values, ids = jax.lax.top_k(logits, count)  # (B, C), sorted
    drawn = _draw(values, ids, top_k, top_p, min_p, scale, keys)
    if mode.wide:
        wide = min(WIDE_CANDIDATES, vocab)
        wide_values, wide_ids = jax.lax.top_k(logits, wide)
        unbounded = (top_k == 0) | (top_k > wide)
        sorted_draw = _draw(wide_values, wide_ids, jnp.where(unbounded, 0, top_k), top_p, min_p, scale, keys)
        whole_draw = _draw_unsorted(logits, min_p, scale, keys)
        drawn = jnp.where(
            (top_k >= 1) & (top_k <= count), drawn, jnp.where(unbounded & (top_p >= 1), whole_draw, sorted_draw)
        )
    return jnp.where(greedy > 0, ids[:, 0], drawn).astype(jnp.int32)


def apply_mask(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """logits (B, V) with the tokens ``mask`` (B, V) does not allow made impossible."""
    return jnp.where(mask, logits, -jnp.inf)


def log_probabilities(
    logits: jax.Array, history: jax.Array, lengths: jax.Array, floats: jax.Array, ints: jax.Array, tokens: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The log-probability (B,) of each row's ``tokens`` and the LOGPROB_TOP most
    likely tokens (B, LOGPROB_TOP) with theirs, under the distribution the row draws
    from after the penalty, the mask and temperature (1 for a greedy row)."""
    temperature = floats[:, TEMPERATURE]
    scale = jnp.where(temperature > 0, temperature, 1.0)[:, None]
    logprobs = jax.nn.log_softmax(_penalized(logits, history, lengths, floats, ints) / scale, axis=-1)
    chosen = jnp.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
    best, best_ids = jax.lax.top_k(logprobs, min(LOGPROB_TOP, logits.shape[-1]))
    return chosen, best_ids.astype(jnp.int32), best


def _penalized(logits, history, lengths, floats, ints) -> jax.Array:
    """The repeat penalty applied (a penalty of 1 changes nothing)."""
    return repeat_penalty(logits, history, lengths, floats[:, PENALTY], ints[:, LAST_N])


def _draw(values, ids, top_k, top_p, min_p, scale, keys) -> jax.Array:
    """values (B, N) sorted descending with their token ``ids``: keep the first
    ``top_k`` (0: all), then top-p and min-p, and draw at temperature ``scale`` by
    inverting the distribution's cumulative sum at one uniform number per row."""
    rank = jnp.arange(values.shape[-1])[None, :]
    values = jnp.where((top_k[:, None] == 0) | (rank < top_k[:, None]), values, -jnp.inf)
    values = nucleus_and_min_p(values, top_p, min_p)
    choice = _invert(jax.nn.softmax(values / scale, axis=-1), keys)
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def _draw_unsorted(logits, min_p, scale, keys) -> jax.Array:
    """A draw from the whole vocabulary at temperature ``scale``, min-p applied."""
    probs = jax.nn.softmax(logits / scale, axis=-1)
    probs = jnp.where(probs >= min_p[:, None] * jnp.max(probs, axis=-1, keepdims=True), probs, 0.0)
    return _invert(probs, keys).astype(jnp.int32)


def _invert(probs, keys) -> jax.Array:
    """probs (B, N), each row's weights (not necessarily summing to 1) -> the index
    where the row's cumulative sum passes a uniform draw (a zero weight never)."""
    cumulative = jnp.cumsum(probs, axis=-1)
    u = jax.vmap(jax.random.uniform)(keys) * cumulative[:, -1]  # (B,)
    choice = jnp.minimum(jnp.sum(cumulative <= u[:, None], axis=-1), probs.shape[-1] - 1)
    return jnp.where(
        jnp.take_along_axis(probs, choice[:, None], axis=-1)[:, 0] > 0, choice, jnp.argmax(probs > 0, axis=-1)
    )


def nucleus_and_min_p(values: jax.Array, top_p: jax.Array, min_p: jax.Array) -> jax.Array:
    """values (B, N) sorted descending: keep the smallest prefix holding ``top_p`` of
    the probability, and tokens at least ``min_p`` times the most likely one."""
    probs = jax.nn.softmax(values, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability of the better tokens
    keep = (before < top_p[:, None]) & (probs >= min_p[:, None] * probs[:, :1])
    keep = keep.at[:, 0].set(True)
    return jnp.where(keep, values, -jnp.inf)


def repeat_penalty(
    logits: jax.Array, history: jax.Array, length: jax.Array, penalty: jax.Array, last_n: jax.Array
) -> jax.Array:
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


def mode_of(policies: Sequence[SamplingPolicy], vocab_size: int) -> SampleMode:
    """The mode for a step whose drawing rows have ``policies``."""
    sampled = any(not p.is_greedy for p in policies)
    return SampleMode(sampled=sampled, wide=any(is_wide(p, vocab_size) for p in policies))


def mask_rows(batch: int, vocab_size: int, allowed: dict[int, Sequence[int]]) -> np.ndarray:
    """(batch, vocab) booleans: row r may draw only ``allowed[r]`` (others: anything).
    Ids outside the vocabulary are ignored; a row left with none raises ValueError."""
    mask = np.ones((batch, vocab_size), np.bool_)
    for row, ids in allowed.items():
        ids = np.asarray(list(ids), np.int64)
        ids = ids[(ids >= 0) & (ids < vocab_size)]
        if ids.size == 0:
            raise ValueError("the token mask allows no token of the vocabulary")
        mask[row] = False
        mask[row, ids] = True
    return mask
