"""The generation core's scheduler, on the fake engine's slots (no JAX, no llama.cpp)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelport.adapters.fake import FakeEngine, fake_model
from modelport.domain import (
    Completion,
    ContextOverflow,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelRef,
    SamplingPolicy,
    ServerBusy,
)
from modelport.ports import EngineOptions, Scheduler

REPLY = "The capital of France is Paris."


def engine(slots: int = 4, num_ctx: int = 4096, reply: str = REPLY, token_delay: float = 0.0) -> FakeEngine:
    fake = FakeEngine(reply, slots=slots, token_delay=token_delay)
    fake.load(fake_model("fake:latest"), EngineOptions(num_ctx=num_ctx, slots=slots))
    return fake


def request(prompt: str = "hi", **sampling) -> GenerationRequest:
    policy = SamplingPolicy(**sampling) if "temperature" in sampling else SamplingPolicy.greedy(**sampling)
    return GenerationRequest(model=ModelRef.parse("fake"), prompt=prompt, sampling=policy)


def complete(scheduler: Scheduler, req: GenerationRequest, **kwargs) -> Completion:
    return Completion.fold(scheduler.submit(req, **kwargs))


def test_one_request_gets_its_whole_answer_and_usage() -> None:
    fake = engine()
    done = complete(fake.scheduler, request("hello"))
    assert done.text == REPLY and done.finish_reason is FinishReason.STOP
    assert done.usage.prompt_tokens == 5 and done.usage.completion_tokens == len(REPLY)
    assert done.usage.prompt_eval_ns > 0 and done.usage.eval_ns > 0
    assert fake.scheduler.stats().busy == 0


def test_sixty_four_requests_through_four_slots_finish_in_arrival_order() -> None:
    fake = engine(slots=4, token_delay=0.0002)
    prompts = [f"prompt number {i:02d}" for i in range(64)]
    generations = [fake.scheduler.submit(request(p, max_tokens=3 + i % 5)) for i, p in enumerate(prompts)]
    results = [Completion.fold(g) for g in generations]
    assert [r.text for r in results] == [REPLY[: 3 + i % 5] for i in range(64)]
    assert [prompt for _, prompt in fake.begun] == [tuple(map(ord, p)) for p in prompts]
    assert max(len(step.sampling) for step in fake.steps) == 4  # never more than the slots
    assert fake.scheduler.stats().busy == 0


def test_concurrent_greedy_requests_equal_each_alone() -> None:
    alone_engine, together_engine = engine(), engine(slots=8)
    prompts = [("x" * n, 4 + n) for n in range(1, 9)]
    alone = [complete(alone_engine.scheduler, request(p, max_tokens=m)).token_ids for p, m in prompts]
    generations = [together_engine.scheduler.submit(request(p, max_tokens=m)) for p, m in prompts]
    assert [Completion.fold(g).token_ids for g in generations] == alone
    assert max(len(step.decode) for step in together_engine.steps) > 1  # they really ran together


def test_a_seeded_request_draws_the_same_whatever_runs_beside_it() -> None:
    fake = engine()
    seeded = request("seed me", temperature=1.0, seed=7, max_tokens=12)
    alone = complete(fake.scheduler, seeded).token_ids
    others = [fake.scheduler.submit(request(f"other {i}", temperature=1.0, max_tokens=20)) for i in range(3)]
    beside = complete(fake.scheduler, seeded).token_ids
    for other in others:
        Completion.fold(other)
    assert beside == alone


def test_cancel_frees_the_slot_at_the_next_step_and_the_others_finish() -> None:
    fake = engine(slots=2, token_delay=0.001)
    doomed = fake.scheduler.submit(request("a"))
    kept = fake.scheduler.submit(request("b"))
    next(doomed), next(doomed)
    doomed.close()
    waiting = fake.scheduler.submit(request("c"))  # gets the freed slot
    assert Completion.fold(kept).text == REPLY
    assert Completion.fold(waiting).text == REPLY
    slots = [slot for slot, _ in fake.begun]
    assert slots[2] == slots[0]  # "c" reused the cancelled request's slot
    assert fake.scheduler.stats().busy == 0


def test_a_cancelled_request_that_waits_never_starts() -> None:
    fake = engine(slots=1, token_delay=0.001)
    running = fake.scheduler.submit(request("a"))
    waiting = fake.scheduler.submit(request("b"))
    waiting.close()
    Completion.fold(running)
    assert [prompt for _, prompt in fake.begun] == [(ord("a"),)]


def test_a_long_prompt_is_read_in_chunks_between_decode_steps() -> None:
    fake = engine(slots=2)
    fake.scheduler.chunk_tokens = 64
    fake.token_delay = 0.0005
    running = fake.scheduler.submit(request("short", max_tokens=30))
    next(running)
    long = fake.scheduler.submit(request("y" * 400, max_tokens=2))
    assert Completion.fold(long).text == REPLY[:2]
    Completion.fold(running)
    chunks = [(step, chunk) for step in fake.steps for chunk in step.chunks if len(chunk.tokens) == 64]
    assert len(chunks) >= 6  # 400 tokens in chunks of 64
    assert all(step.decode for step, _ in chunks)  # and the running stream decoded in each of those steps


def test_the_next_turn_of_a_chat_reuses_the_cached_prefix() -> None:
    fake = engine(slots=2)
    first = complete(fake.scheduler, request("history " * 50))
    second = complete(fake.scheduler, request("history " * 50 + first.text + " and then?"))
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == len("history " * 50) + len(first.text)  # the reply was fed back too
    assert second.text == REPLY


def test_a_prompt_that_cannot_fit_is_refused_at_once_and_the_others_finish() -> None:
    fake = engine(slots=2, num_ctx=64, token_delay=0.0005)
    running = fake.scheduler.submit(request("fits"))
    with pytest.raises(ContextOverflow):
        fake.scheduler.submit(request("z" * 64))
    with pytest.raises(InvalidRequest):
        fake.scheduler.submit(request(""))
    assert Completion.fold(running).text == REPLY


def test_the_context_window_ends_a_generation_with_length() -> None:
    fake = engine(num_ctx=40)
    done = complete(fake.scheduler, request("p" * 30))
    assert done.finish_reason is FinishReason.LENGTH and len(done.token_ids) == 10


def test_stop_strings_and_max_tokens() -> None:
    fake = engine()
    stopped = complete(fake.scheduler, request("q", stop=("France",)))
    assert stopped.text == "The capital of " and stopped.finish_reason is FinishReason.STOP
    short = complete(fake.scheduler, request("q", max_tokens=3))
    assert short.text == "The" and short.finish_reason is FinishReason.LENGTH


def test_a_full_queue_refuses_with_server_busy() -> None:
    fake = engine(slots=1, token_delay=0.002)
    fake.scheduler.max_queue = 1
    running = fake.scheduler.submit(request("a"))
    queued = fake.scheduler.submit(request("b"))
    with pytest.raises(ServerBusy, match="1 requests are already waiting"):
        fake.scheduler.submit(request("c"))
    assert Completion.fold(running).text == Completion.fold(queued).text == REPLY


class OnlyDigits:
    """A constraint: digits only, finished after three of them."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    @property
    def finished(self) -> bool:
        return len(self.seen) >= 3

    def allowed(self):
        return [ord(d) for d in "0123456789"]

    def advance(self, token: int) -> None:
        self.seen.append(token)


class Broken(OnlyDigits):
    def allowed(self):
        raise ValueError("this grammar is broken")


def test_a_constraint_masks_each_draw_and_ends_the_generation() -> None:
    fake = engine()
    constraint = OnlyDigits()
    done = complete(fake.scheduler, request("n"), constraint=constraint)
    assert done.text == "000" and done.finish_reason is FinishReason.STOP
    assert constraint.seen == [ord("0")] * 3


def test_a_failing_constraint_fails_its_own_request_only() -> None:
    fake = engine(slots=2, token_delay=0.0005)
    running = fake.scheduler.submit(request("fine"))
    broken = fake.scheduler.submit(request("broken"), constraint=Broken())
    with pytest.raises(ValueError, match="broken"):
        Completion.fold(broken)
    assert Completion.fold(running).text == REPLY
    assert fake.scheduler.stats().busy == 0


def test_an_engine_failure_ends_the_requests_of_that_step_and_the_core_goes_on() -> None:
    fake = engine(slots=2)
    fake.fail_on = ord("c")
    with pytest.raises(RuntimeError, match="failed a step"):
        complete(fake.scheduler, request("x"))
    fake.fail_on = None
    assert complete(fake.scheduler, request("x")).text == REPLY


def test_many_threads_submit_and_read_at_once() -> None:
    fake = engine(slots=3, token_delay=0.0002)

    def ask(i: int) -> str:
        return complete(fake.scheduler, request(f"thread {i}", max_tokens=1 + i % 7)).text

    with ThreadPoolExecutor(max_workers=12) as pool:
        texts = list(pool.map(ask, range(48)))
    assert texts == [REPLY[: 1 + i % 7] for i in range(48)]


def test_close_cancels_what_waits_and_runs() -> None:
    fake = engine(slots=1, token_delay=0.002)
    running = fake.scheduler.submit(request("a"))
    waiting = fake.scheduler.submit(request("b"))
    next(running)
    fake.scheduler.close()
    with pytest.raises(InvalidRequest, match="unloaded"):
        Completion.fold(waiting)
    with pytest.raises(InvalidRequest, match="unloaded"):
        Completion.fold(running)
    with pytest.raises(InvalidRequest, match="unloaded"):
        fake.scheduler.submit(request("c"))


def test_the_loop_thread_ends_when_there_is_no_work() -> None:
    fake = engine()
    complete(fake.scheduler, request("a"))
    for _ in range(200):
        if not any(t.name.startswith("modelport-fake-core") for t in threading.enumerate()):
            break
        threading.Event().wait(0.005)
    assert not any(t.name.startswith("modelport-fake-core") for t in threading.enumerate())
    assert complete(fake.scheduler, request("b")).text == REPLY  # and a new one starts


def test_stats_count_slots_queue_and_tokens() -> None:
    fake = engine(slots=2)
    complete(fake.scheduler, request("a"))
    stats = fake.scheduler.stats()
    assert (stats.slots, stats.busy, stats.free, stats.waiting) == (2, 0, 2, 0)
    assert stats.generated_tokens == len(REPLY) + 1 and stats.tokens_per_second > 0
