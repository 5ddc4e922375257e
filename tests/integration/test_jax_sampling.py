"""The JAX sampler on small hand-made distributions: each filter keeps what it
should, the repeat penalty matches llama.cpp's arithmetic, seeds reproduce, and a
row's draw does not depend on the rows beside it."""

from __future__ import annotations

import numpy as np
import pytest

from modelport.domain import SamplingPolicy

DRAWS = 256
# probabilities 0.5, 0.3, 0.15, 0.05 over the first four tokens; the rest impossible
LOGITS = np.log(np.asarray([0.5, 0.3, 0.15, 0.05, 1e-12, 1e-12], np.float64)).astype(np.float32)


def draw(
    policy: SamplingPolicy | list[SamplingPolicy],
    logits: np.ndarray = LOGITS,
    *,
    seeds=range(DRAWS),
    history=None,
    length=None,
    mask=None,
    logprobs=False,
    step: int = 0,
) -> np.ndarray:
    """One draw per seed (each seed is a row of the batch), all rows in one call of
    the engine's sampling program; ``policy`` one for all rows or one per row."""
    import jax
    import jax.numpy as jnp

    from modelport.adapters.jax.sampling import DRAW, apply_mask, log_probabilities, mode_of, pack, sample_rows

    seeds = list(seeds)
    rows = len(seeds)
    policies = policy if isinstance(policy, list) else [policy] * rows
    packed = [pack(p) for p in policies]
    floats = np.asarray([f for f, _ in packed], np.float32)
    ints = np.asarray([i for _, i in packed], np.int32)
    ints[:, DRAW] = step
    keys = np.stack([np.asarray(jax.random.key_data(jax.random.key(seed))) for seed in seeds]).astype(np.uint32)
    history = np.zeros((rows, 8), np.int32) if history is None else np.tile(history, (rows, 1))
    length = np.zeros((rows,), np.int32) if length is None else np.full((rows,), length, np.int32)
    batch = np.tile(logits, (rows, 1))
    mode = mode_of(policies, logits.shape[-1])
    batch = jnp.asarray(batch) if mask is None else jax.jit(apply_mask)(jnp.asarray(batch), mask)
    tokens = jax.jit(sample_rows, static_argnames=("mode",))(batch, history, length, floats, ints, keys, mode=mode)
    if not logprobs:
        return np.asarray(tokens)
    out = jax.jit(log_probabilities)(batch, history, length, floats, ints, tokens)
    return (np.asarray(tokens), *(np.asarray(x) for x in out))


def test_greedy_takes_the_most_likely_token() -> None:
    assert set(draw(SamplingPolicy.greedy(), seeds=range(4))) == {0}


def test_plain_sampling_follows_the_distribution() -> None:
    tokens = draw(SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0))
    counts = np.bincount(tokens, minlength=6) / DRAWS
    assert set(tokens) <= {0, 1, 2, 3} and len(set(tokens)) >= 3
    assert abs(counts[0] - 0.5) < 0.1 and abs(counts[1] - 0.3) < 0.1


@pytest.mark.parametrize(
    "policy, allowed",
    [
        (SamplingPolicy(temperature=1.0, top_k=2, top_p=1.0), {0, 1}),
        (SamplingPolicy(temperature=1.0, top_k=0, top_p=0.75), {0, 1}),
        (SamplingPolicy(temperature=1.0, top_k=0, top_p=0.9), {0, 1, 2}),
        (SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0, min_p=0.5), {0, 1}),
        (SamplingPolicy(temperature=1.0, top_k=3, top_p=1.0, min_p=0.2), {0, 1, 2}),
    ],
    ids=["top-k", "top-p", "top-p-wider", "min-p", "top-k-and-min-p"],
)
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


def test_a_row_draws_the_same_whatever_the_rows_beside_it() -> None:
    sampled = SamplingPolicy(temperature=1.0, top_k=3, top_p=0.95, seed=None)
    alone = draw(sampled, seeds=range(32), step=5)
    beside = [
        SamplingPolicy.greedy(),
        SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0),
        SamplingPolicy(temperature=0.7, top_k=0, top_p=0.5),
    ]
    for other in beside:
        mixed = draw(
            [sampled if i % 2 == 0 else other for i in range(64)], seeds=[s for s in range(32) for _ in (0, 1)], step=5
        )
        assert (mixed[0::2] == alone).all()
    assert set(draw([SamplingPolicy.greedy()] + [sampled] * 7, seeds=range(8))[:1]) == {0}


def test_the_draw_number_changes_the_draw() -> None:
    policy = SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0)
    assert (draw(policy, seeds=range(64), step=0) != draw(policy, seeds=range(64), step=1)).any()


def test_a_mask_limits_the_tokens_of_its_row_only() -> None:
    mask = np.ones((4, 6), bool)
    mask[0] = [False, False, True, False, False, False]  # row 0: token 2 only
    mask[1] = [False, True, False, True, False, False]
    greedy = draw(SamplingPolicy.greedy(), seeds=range(4), mask=mask)
    assert list(greedy) == [2, 1, 0, 0]
    sampled = draw(SamplingPolicy(temperature=1.0, top_k=0, top_p=1.0), seeds=range(4), mask=mask)
    assert sampled[0] == 2 and sampled[1] in (1, 3)


def test_log_probabilities_are_those_after_temperature() -> None:
    policy = SamplingPolicy(temperature=0.5, top_k=0, top_p=1.0)
    tokens, chosen, best_ids, best = draw(policy, seeds=range(16), logprobs=True)
    expected = LOGITS.astype(np.float64) / 0.5
    expected = expected - np.log(np.exp(expected - expected.max()).sum()) - expected.max()
    np.testing.assert_allclose(chosen, expected[tokens], atol=1e-4)
    assert list(best_ids[0][:4]) == [0, 1, 2, 3]
    np.testing.assert_allclose(best[0][:4], expected[:4], atol=1e-4)
    greedy = draw(SamplingPolicy.greedy(), seeds=range(2), logprobs=True)
    np.testing.assert_allclose(greedy[1], np.log(0.5), atol=1e-4)  # a greedy row: temperature 1
