"""The JAX sampler on small hand-made distributions: each filter keeps what it
should, the repeat penalty matches llama.cpp's arithmetic, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.domain import SamplingPolicy

DRAWS = 256
# probabilities 0.5, 0.3, 0.15, 0.05 over the first four tokens; the rest impossible
LOGITS = np.log(np.asarray([0.5, 0.3, 0.15, 0.05, 1e-12, 1e-12], np.float64)).astype(np.float32)


def draw(policy: SamplingPolicy, logits: np.ndarray = LOGITS, *, seeds=range(DRAWS), history=None,
         length=None) -> np.ndarray:
    """One draw per seed (each seed is a row of the batch)."""
    import jax
    import jax.numpy as jnp

    from modelport.adapters.jax.sampling import SamplerParams, SamplerSpec, sample

    seeds = list(seeds)
    rows = len(seeds)
    spec = SamplerSpec.of([policy], logits.shape[-1])
    params = SamplerParams.of([policy] * rows, seeds)
    history = np.zeros((rows, 8), np.int32) if history is None else np.tile(history, (rows, 1))
    length = np.zeros((rows,), np.int32) if length is None else np.full((rows,), length, np.int32)
    batch = np.tile(logits, (rows, 1))
    fn = jax.jit(sample, static_argnames=("spec",))
    return np.asarray(fn(jnp.asarray(batch), history, length, params, spec=spec, step=jnp.int32(0)))


def test_greedy_takes_the_most_likely_token() -> None:
    assert set(draw(SamplingPolicy.greedy(), seeds=range(4))) == {0}


def test_plain_sampling_follows_the_distribution() -> None:
    tokens = draw(SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0))
    counts = np.bincount(tokens, minlength=6) / DRAWS
    assert set(tokens) <= {0, 1, 2, 3} and len(set(tokens)) >= 3
    assert abs(counts[0] - 0.5) < 0.1 and abs(counts[1] - 0.3) < 0.1


@pytest.mark.parametrize("policy, allowed", [
    (SamplingPolicy(temperature=1.0, top_k=2, top_p=1.0), {0, 1}),
    (SamplingPolicy(temperature=1.0, top_k=0, top_p=0.75), {0, 1}),
    (SamplingPolicy(temperature=1.0, top_k=0, top_p=0.9), {0, 1, 2}),
    (SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0, min_p=0.5), {0, 1}),
    (SamplingPolicy(temperature=1.0, top_k=3, top_p=1.0, min_p=0.2), {0, 1, 2}),
], ids=["top-k", "top-p", "top-p-wider", "min-p", "top-k-and-min-p"])
def test_filters_keep_exactly_the_allowed_tokens(policy, allowed) -> None:
    assert set(draw(policy)) == allowed


def test_a_low_temperature_sharpens_the_distribution() -> None:
    hot = draw(SamplingPolicy(temperature=2.0, top_k=0, top_p=1.0))
    cold = draw(SamplingPolicy(temperature=0.2, top_k=0, top_p=1.0))
    assert (cold == 0).mean() > 0.9 > (hot == 0).mean()


def test_the_same_seed_draws_the_same_token() -> None:
    policy = SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0)
    first, again = draw(policy, seeds=range(64)), draw(policy, seeds=range(64))
    assert (first == again).all() and len(set(first)) > 1


def test_the_repeat_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    import jax.numpy as jnp

    from modelport.adapters.jax.sampling import repeat_penalty

    logits = np.asarray([[2.0, -1.0, 0.5, 3.0]], np.float32)
    history = np.asarray([[0, 1, 3, 3]], np.int32)  # token 3 only after the window start
    out = repeat_penalty(jnp.asarray(logits), history, jnp.asarray([3]), jnp.asarray([2.0]), jnp.asarray([2]))
    np.testing.assert_allclose(np.asarray(out), [[2.0, -2.0, 0.5, 1.5]])
    whole = repeat_penalty(jnp.asarray(logits), history, jnp.asarray([4]), jnp.asarray([2.0]), jnp.asarray([-1]))
    np.testing.assert_allclose(np.asarray(whole), [[1.0, -2.0, 0.5, 1.5]])


def test_the_penalty_can_change_the_greedy_choice() -> None:
    history = np.asarray([0, 0, 0, 0, 0, 0, 0, 0], np.int32)
    policy = SamplingPolicy.greedy(repeat_penalty=1.5, repeat_last_n=4)
    logits = np.asarray([1.0, 0.9, 0.1, 0.0, -1.0, -1.0], np.float32)
    assert set(draw(policy, logits, seeds=range(2), history=history, length=4)) == {1}
    assert set(draw(SamplingPolicy.greedy(), logits, seeds=range(2), history=history, length=4)) == {0}
