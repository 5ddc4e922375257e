"""The step-level engine port: what an engine gives the generation core.

An engine holds a fixed number of *slots*, each a sequence in its KV cache. The
core (:mod:`modelport.ports.scheduler`) owns the token loop; an engine only

- says which tokens a slot holds (:meth:`SlotEngine.held`), so that a new prompt
  can go where the longest prefix of it is already computed (the prompt cache);
- starts a sequence in a slot (:meth:`SlotEngine.begin`), keeping the common
  prefix of what the slot held and the new prompt;
- runs one :class:`Step` for many slots at once: chunks of prompts to add to the
  cache, and one token for every slot that is generating, each sampled with the
  slot's own :class:`SlotSampling` and, when given, its token mask;
- ends a sequence (:meth:`SlotEngine.end`); the slot's cache stays for reuse.

Sampling happens inside the engine (on the device for JAX, llama.cpp's sampler
chain for GGUF), so that logits never cross to Python unless asked for. Draw ``n``
of a slot depends only on its seed and ``n``: a seeded request gives the same
tokens whatever else is in the batch.

Shapes in this module are plain Python: token ids are ints, a mask is the
sequence of allowed ids.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Mapping, Protocol, Sequence, runtime_checkable

import attrs

from modelport.domain import GenerationRequest, SamplingPolicy


@attrs.frozen(kw_only=True)
class SlotSampling:
    """How a slot draws its tokens: the policy, the seed it resolved to, and how
    many log-probabilities to report per token (None: none; 0: the sampled
    token's only; k: also the k most likely)."""

    policy: SamplingPolicy
    seed: int
    logprobs: int | None = None


@attrs.frozen(kw_only=True)
class Chunk:
    """Prompt tokens to write into ``slot``'s cache from position ``start``.
    ``last`` marks the prompt's final chunk: the slot's first token is sampled
    from its last position."""

    slot: int
    tokens: tuple[int, ...] = attrs.field(converter=tuple)
    start: int
    last: bool


@attrs.frozen(kw_only=True)
class Step:
    """One engine step. ``decode``: slots that feed the token they sampled last
    and sample the next. ``masks``: for a slot that samples in this step, the only
    token ids it may draw (absent: any).

    ``pending``: masks still being computed (by the core's mask workers, while
    the engine runs its forward pass), given only to an engine that says
    ``late_masks = True``. Such an engine reads every mask with :meth:`mask`,
    as late as it can: after launching the forward pass, right before sampling.
    A mask that fails gives None (the core then fails that slot's request and
    drops its draw)."""

    chunks: tuple[Chunk, ...] = ()
    decode: tuple[int, ...] = ()
    masks: Mapping[int, Sequence[int]] = attrs.field(factory=dict)
    pending: Mapping[int, "Future[Sequence[int] | None]"] = attrs.field(factory=dict)

    @property
    def sampling(self) -> tuple[int, ...]:
        """The slots that get a token from this step."""
        return tuple(c.slot for c in self.chunks if c.last) + self.decode

    def mask(self, slot: int) -> Sequence[int] | None:
        """``slot``'s mask (None: any token), waiting for it when it is pending."""
        future = self.pending.get(slot)
        if future is None:
            return self.masks.get(slot)
        try:
            return future.result()
        except Exception:  # noqa: BLE001 - the core fails the request after the step
            return None


@attrs.frozen(kw_only=True)
class Sample:
    """A token drawn for a slot, with its log-probability under the distribution it
    was drawn from (after temperature) and the most likely alternatives, when the
    slot asked for them."""

    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


class TextDecoder(Protocol):
    """Token ids -> text, incrementally: :meth:`push` returns the text that the
    token completes (empty while a multi-byte character is unfinished)."""

    def push(self, token: int) -> str: ...

    def flush(self) -> str: ...


class TokenConstraint(Protocol):
    """A per-request rule on which tokens may come next (a grammar, a JSON schema).

    The core asks :meth:`allowed` before each draw (None: anything) and reports the
    drawn token with :meth:`advance`. :attr:`finished` ends the generation (the
    grammar is complete). Errors it raises fail its own request only."""

    @property
    def finished(self) -> bool: ...

    def allowed(self) -> Sequence[int] | None: ...

    def advance(self, token: int) -> None: ...


@runtime_checkable
class SlotEngine(Protocol):
    """A loaded decoder model with ``slots`` sequences in its cache, each of at
    most ``context_length`` tokens."""

    name: str

    @property
    def slots(self) -> int: ...

    @property
    def context_length(self) -> int: ...

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The request's prompt as the model sees it (chat template applied)."""
        ...

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends a generation (end of sequence or of turn)."""
        ...

    def text_decoder(self) -> TextDecoder: ...

    def held(self, slot: int) -> Sequence[int]:
        """The tokens ``slot``'s cache holds now, from position 0."""
        ...

    def begin(self, slot: int, prompt: Sequence[int], sampling: SlotSampling) -> int:
        """Start a sequence for ``prompt`` in ``slot``: keep the longest common
        prefix of what the slot holds and ``prompt`` (never all of ``prompt``: the
        last prompt token is always computed, its logits give the first draw) and
        drop the rest. Returns how many prompt tokens were kept."""
        ...

    def step(self, step: Step) -> Mapping[int, Sample]:
        """Run ``step``; one :class:`Sample` for every slot in ``step.sampling``."""
        ...

    def end(self, slot: int) -> None:
        """The slot's sequence is over; its cache is kept for a later prefix."""
        ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
