"""The generation core: one token loop for every engine.

A :class:`Scheduler` drives one loaded :class:`~modelport.ports.slots.SlotEngine`.
Requests join a FIFO line (bounded: one more than ``max_queue`` waiting gets
:class:`~modelport.domain.ServerBusy`); each free slot takes the next in line,
choosing among the free slots the one whose cache holds the longest prefix of the
prompt. Every step then runs, in one engine call, a chunk of the prompts being
read (at most ``chunk_tokens`` prompt tokens a step, so that a long prompt never
freezes the streams already running) and one token for every slot generating.

The loop owns what used to be written once per engine: end tokens, stop strings,
``max_tokens`` and the context window, the token mask of a constrained request,
usage with Ollama's timings, and cancellation.

Masks are computed off the loop's critical path: as soon as a constrained
request's token is known, its next mask is started on a mask worker thread, so
that it is computed while the next step's forward pass runs (a grammar engine
such as llguidance releases the GIL). An engine that says ``late_masks = True``
gets those masks as futures (:attr:`Step.pending`) and waits for them only when
it samples; for any other engine the loop waits for them before the step. A request is cancelled explicitly,
by closing its :class:`Generation`; its slot is free at the next step. An error
of one request (its constraint fails) ends that request only; an engine step that
fails ends the requests of that step, each with the error.

The loop runs in a thread of its own while there is work, and ends when there is
none; request threads only tokenize (outside the model's turn), queue, and read
their events.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import queue
import random
import sys
import threading
import time
from typing import Callable, Iterator, Sequence

from modelport.domain import (
    ContextOverflow,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ServerBusy,
    SlotStats,
    StopMatcher,
    TokenEvent,
    Usage,
)

from .slots import Chunk, Sample, SlotEngine, SlotSampling, Step, TextDecoder, TokenConstraint, common_prefix

DEFAULT_CHUNK_TOKENS = 512
MASK_WORKERS = 4  # at most this many masks computed at once, per engine
RATE_WINDOW_NS = 10_000_000_000  # tokens/s is measured over the last 10 s
# SlotStats, what stats() returns, is a domain value (domain/running.py).


_END = object()  # the queue's sentinel after the final event


class _Job:
    """One request inside the core."""

    def __init__(
        self,
        number: int,
        request: GenerationRequest,
        prompt: list[int],
        sampling: SlotSampling,
        limit: int,
        constraint: TokenConstraint | None,
        decoder: TextDecoder,
    ) -> None:
        self.number = number
        self.prompt = prompt
        self.sampling = sampling
        self.limit = limit
        self.constraint = constraint
        self.decoder = decoder
        self.matcher = StopMatcher(request.sampling.stop)
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False
        self.slot: int | None = None
        self.position = 0  # prompt tokens in the slot's cache
        self.reused = 0
        self.produced = 0
        self.admitted_ns = 0
        self.first_ns = 0
        self.next_mask: concurrent.futures.Future | None = None  # started after the last draw

    @property
    def reading(self) -> bool:
        """Still writing its prompt into the cache."""
        return self.position < len(self.prompt)


class Generation(Iterator[TokenEvent]):
    """The events of one request: iterate them (blocking until each is ready);
    :meth:`close` cancels the request. The last event has a finish reason and usage;
    an error of the request is raised from ``next``."""

    def __init__(self, job: _Job, cancel: Callable[[_Job], None]) -> None:
        self._job = job
        self._cancel = cancel
        self._open = True

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> TokenEvent:
        if not self._open:
            raise StopIteration
        item = self._job.events.get()
        if item is _END:
            self._open = False
            raise StopIteration
        if isinstance(item, BaseException):
            self._open = False
            raise item
        return item

    def close(self) -> None:
        if self._open:
            self._open = False
            self._cancel(self._job)

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a backstop only: callers close what they stop reading
        # Not while the interpreter shuts down: its daemon threads (the loop's among
        # them) are frozen wherever they were, maybe holding the loop's lock, which
        # closing takes; a script's leftover stream would hang its exit.
        if not sys.is_finalizing():
            self.close()


class Scheduler:
    """The one token loop over one engine's slots. Thread safe."""

    def __init__(
        self,
        engine: SlotEngine,
        *,
        max_queue: int = 512,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if max_queue < 0:
            raise ValueError("max_queue must be 0 or more")
        if chunk_tokens < 1:
            raise ValueError("chunk_tokens must be at least 1")
        self.engine = engine
        self.max_queue = max_queue
        self.chunk_tokens = chunk_tokens
        self._clock = clock
        self._changed = threading.Condition()
        self._numbers = itertools.count()
        self._waiting: collections.deque[_Job] = collections.deque()
        self._active: dict[int, _Job] = {}  # slot -> job
        self._cancelled: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._recent: collections.deque[tuple[int, int]] = collections.deque()  # (ns, tokens) per step
        self._generated = 0
        self._last_slot_use: dict[int, int] = {}
        self._masker: concurrent.futures.ThreadPoolExecutor | None = None

    # -- the request side ----------------------------------------------------------------

    def submit(
        self, request: GenerationRequest, *, constraint: TokenConstraint | None = None, logprobs: int | None = None
    ) -> Generation:
        """Queue ``request``. What makes it impossible (an empty prompt, one longer
        than the context, a full queue) raises here, before anything is queued.
        ``logprobs`` overrides the request's own."""
        engine = self.engine
        prompt = list(engine.prompt_tokens(request))
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        context = engine.context_length
        if len(prompt) >= context:
            raise ContextOverflow(len(prompt), context)
        policy = request.sampling
        limit = context - len(prompt)
        if policy.max_tokens is not None:
            limit = min(limit, policy.max_tokens)
        seed = policy.seed if policy.seed is not None else random.randrange(2**31)
        sampling = SlotSampling(policy=policy, seed=seed, logprobs=request.logprobs if logprobs is None else logprobs)
        with self._changed:
            if self._closed:
                raise InvalidRequest("the model is being unloaded; try again")
            beyond = len(self._waiting) - self._free_slots()  # those that will wait for a slot
            if beyond >= self.max_queue:
                raise ServerBusy(max(beyond, 0))
            job = _Job(next(self._numbers), request, prompt, sampling, limit, constraint, engine.text_decoder())
            self._waiting.append(job)
            self._start_locked()
            self._changed.notify_all()
        return Generation(job, self._cancel)

    def stream(self, request: GenerationRequest) -> Generation:
        return self.submit(request)

    def _cancel(self, job: _Job) -> None:
        with self._changed:
            if job.cancelled:
                return
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)
            elif job.slot is not None:
                self._cancelled.append(job)
            self._changed.notify_all()

    def stats(self) -> SlotStats:
        with self._changed:
            now = self._clock()
            self._trim(now)
            tokens = sum(n for _, n in self._recent)
            span = (now - self._recent[0][0]) if self._recent else 0
            rate = tokens / span * 1e9 if span > 0 else 0.0
            return SlotStats(
                slots=self.engine.slots,
                busy=len(self._active),
                waiting=len(self._waiting),
                tokens_per_second=rate,
                generated_tokens=self._generated,
            )

    @property
    def busy(self) -> bool:
        with self._changed:
            return bool(self._active or self._waiting)

    def close(self, timeout: float | None = 30.0) -> None:
        """Cancel everything, waiting and running, and wait for the loop to end."""
        with self._changed:
            self._closed = True
            for job in list(self._waiting):
                job.cancelled = True
                job.events.put(InvalidRequest("the model was unloaded"))
            self._waiting.clear()
            for job in self._active.values():
                if not job.cancelled:
                    job.cancelled = True
                    job.events.put(InvalidRequest("the model was unloaded"))
                self._cancelled.append(job)
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._masker is not None:
            self._masker.shutdown(wait=False, cancel_futures=True)
            self._masker = None

    # -- the loop ------------------------------------------------------------------------

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"modelport-{self.engine.name}-core", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._settle_cancelled()
                self._admit()
                if not self._active:
                    self._thread = None  # nothing left: a later submit starts a new loop
                    return
                jobs = dict(self._active)
            self._step(jobs)

    def _settle_cancelled(self) -> None:
        for job in self._cancelled:
            if job.slot is not None and self._active.get(job.slot) is job:
                self._release(job)
        self._cancelled.clear()

    def _free_slots(self) -> int:
        """Slots free now or at the next step (a cancelled request's slot is)."""
        leaving = sum(1 for job in self._cancelled if job.slot is not None)
        return self.engine.slots - len(self._active) + leaving

    def _admit(self) -> None:
        """Give free slots to the waiting jobs, first come first served."""
        while self._waiting and self._free_slots() > 0:
            job = self._waiting.popleft()
            slot = self._best_slot(job.prompt)
            try:
                job.reused = job.position = self.engine.begin(slot, job.prompt, job.sampling)
            except Exception as exc:  # noqa: BLE001 - the request gets the error, the loop goes on
                job.events.put(exc)
                continue
            job.slot = slot
            job.admitted_ns = self._clock()
            self._active[slot] = job

    def _best_slot(self, prompt: Sequence[int]) -> int:
        """The free slot holding the longest prefix of ``prompt``; among equals the
        one unused longest (its cache is the least likely to be wanted again)."""
        free = [s for s in range(self.engine.slots) if s not in self._active]
        return max(free, key=lambda s: (common_prefix(self.engine.held(s), prompt), -self._last_slot_use.get(s, -1)))

    def _step(self, jobs: dict[int, _Job]) -> None:
        step = self._plan(jobs)
        if not step.chunks and not step.decode:
            return
        try:
            samples = self.engine.step(step)
        except Exception as exc:  # noqa: BLE001 - every request of the step gets the error
            for slot in {c.slot for c in step.chunks} | set(step.decode):
                self._fail(jobs[slot], exc)
            return
        now = self._clock()
        for chunk in step.chunks:
            jobs[chunk.slot].position += len(chunk.tokens)
        for slot in step.sampling:
            failed = _failure(step.pending.get(slot))
            if failed is not None:  # its mask failed: the draw is dropped, the request ends
                self._fail(jobs[slot], failed)
                continue
            self._take(jobs[slot], samples[slot], now)
        with self._changed:
            self._recent.append((now, len(step.sampling)))
            self._generated += len(step.sampling)
            self._trim(now)

    def _plan(self, jobs: dict[int, _Job]) -> Step:
        """The next step: prompt chunks in arrival order within the token budget,
        one token for every generating slot, and the masks of constrained slots (a
        constraint that fails ends its own request, not the step)."""
        chunks, decode, masks, pending, budget = [], [], {}, {}, self.chunk_tokens
        late = bool(getattr(self.engine, "late_masks", False))
        for slot, job in sorted(jobs.items(), key=lambda item: item[1].number):
            if job.reading:
                if budget <= 0:
                    continue
                take = job.prompt[job.position : job.position + budget]
                budget -= len(take)
                last = job.position + len(take) == len(job.prompt)
            if (not job.reading or last) and job.constraint is not None:
                future, job.next_mask = job.next_mask or self._start_mask(job.constraint), None
                if late:
                    pending[slot] = future
                else:
                    try:
                        allowed = future.result()
                    except Exception as exc:  # noqa: BLE001
                        self._fail(job, exc)
                        continue
                    if allowed is not None:
                        masks[slot] = allowed
            if job.reading:
                chunks.append(Chunk(slot=slot, tokens=take, start=job.position, last=last))
            else:
                decode.append(slot)
        return Step(chunks=tuple(chunks), decode=tuple(decode), masks=masks, pending=pending)

    def _start_mask(self, constraint: TokenConstraint) -> concurrent.futures.Future:
        """The constraint's next mask, computed on a mask worker."""
        if self._masker is None:
            self._masker = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, min(MASK_WORKERS, self.engine.slots)),
                thread_name_prefix=f"modelport-{self.engine.name}-mask",
            )
        return self._masker.submit(_checked_mask, constraint)

    def _take(self, job: _Job, sample: Sample, now: int) -> None:
        """Turn one drawn token into the job's next event, and end the job if the
        token ends it."""
        if job.cancelled:
            return
        if job.produced == 0:
            job.first_ns = now
        token = sample.token
        if self.engine.is_end(token):
            self._finish(job, FinishReason.STOP, now)
            return
        job.produced += 1
        constraint_done = False
        if job.constraint is not None:
            try:
                job.constraint.advance(token)
                constraint_done = job.constraint.finished
            except Exception as exc:  # noqa: BLE001
                self._fail(job, exc)
                return
        text = job.matcher.push(job.decoder.push(token))
        job.events.put(TokenEvent(text=text, token_id=token, logprob=sample.logprob, top_logprobs=sample.top))
        if job.matcher.stopped or constraint_done:
            self._finish(job, FinishReason.STOP, now)
        elif job.produced >= job.limit:
            self._finish(job, FinishReason.LENGTH, now)
        elif job.constraint is not None:
            job.next_mask = self._start_mask(job.constraint)  # computed while the next step runs

    def _finish(self, job: _Job, reason: FinishReason, now: int) -> None:
        tail = "" if job.matcher.stopped else job.matcher.push(job.decoder.flush()) + job.matcher.flush()
        first = job.first_ns or now
        usage = Usage(
            prompt_tokens=len(job.prompt),
            completion_tokens=job.produced,
            cached_tokens=job.reused,
            prompt_eval_ns=max(1, first - job.admitted_ns),
            eval_ns=max(1, now - first),
        )
        job.events.put(TokenEvent(text=tail, finish_reason=reason, usage=usage))
        job.events.put(_END)
        with self._changed:
            self._release(job)

    def _fail(self, job: _Job, error: BaseException) -> None:
        if not job.cancelled:
            job.events.put(error)
        with self._changed:
            self._release(job)

    def _release(self, job: _Job) -> None:
        """Free the job's slot (called with the lock held)."""
        if job.slot is None or self._active.get(job.slot) is not job:
            return
        del self._active[job.slot]
        self._last_slot_use[job.slot] = job.number
        try:
            self.engine.end(job.slot)
        finally:
            job.slot = None

    def _trim(self, now: int) -> None:
        while self._recent and now - self._recent[0][0] > RATE_WINDOW_NS:
            self._recent.popleft()


def _checked_mask(constraint: TokenConstraint) -> Sequence[int] | None:
    allowed = constraint.allowed()
    if allowed is not None and len(allowed) == 0:
        raise InvalidRequest("the output constraint allows no token here")
    return allowed


def _failure(future: concurrent.futures.Future | None) -> BaseException | None:
    """The error a pending mask ended with (None: none, or no pending mask)."""
    if future is None:
        return None
    try:
        return future.exception()
    except concurrent.futures.CancelledError as exc:
        return exc
