from __future__ import annotations

import pytest

from modelport.domain import (
    ChatMessage,
    ChatSession,
    Completion,
    Conversation,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelRef,
    Role,
    SamplingPolicy,
    TokenEvent,
    Usage,
    system_and_user,
)


def test_roles_are_parsed_case_insensitively_and_checked() -> None:
    assert ChatMessage.from_dict({"role": "USER", "content": "hi"}).role is Role.USER
    with pytest.raises(InvalidRequest, match="role"):
        ChatMessage.from_dict({"role": "wizard", "content": "hi"})
    with pytest.raises(InvalidRequest):
        ChatMessage.from_dict({"content": "no role"})
    with pytest.raises(InvalidRequest):
        ChatMessage.from_dict({"role": "user", "content": 5})


def turns(n: int) -> Conversation:
    conversation = Conversation().add(ChatMessage.system("be brief"))
    for i in range(n):
        conversation = conversation.add(ChatMessage.user(f"q{i}"), ChatMessage.assistant(f"a{i}"))
    return conversation


def test_last_turns_keeps_the_system_prompt_and_the_last_n_turns() -> None:
    kept = turns(15).last_turns(10)
    assert kept.messages[0] == ChatMessage.system("be brief")
    assert [m.content for m in kept.messages[1:3]] == ["q5", "a5"]
    assert len(kept) == 21
    assert turns(3).last_turns(10) == turns(3)


def test_session_keeps_ten_turns_by_default_and_round_trips_json() -> None:
    session = ChatSession(
        id="s1", model="smollm2", conversation=turns(12), sampling=SamplingPolicy(temperature=0.1, seed=4)
    )
    assert len(session.context) == 21
    again = ChatSession.from_json(session.to_json())
    assert again == session


def test_session_updates_are_new_values() -> None:
    session = ChatSession(id="s1", model="m")
    after = session.with_system("sys").with_user("hi").with_reply("hello")
    assert len(session.conversation) == 0
    assert [m.role for m in after.conversation] == [Role.SYSTEM, Role.USER, Role.ASSISTANT]
    assert after.cleared().conversation.messages == (ChatMessage.system("sys"),)


@pytest.mark.parametrize("text", ["{", "[]", '{"id": "x"}', '{"id": "../x", "model": "m"}'])
def test_bad_session_json_is_a_clear_error(text) -> None:
    with pytest.raises(InvalidRequest):
        ChatSession.from_json(text)


def test_request_takes_a_prompt_or_messages_not_both() -> None:
    ref = ModelRef.parse("m")
    assert GenerationRequest(model=ref, messages=system_and_user("hi", "sys")).is_chat
    with pytest.raises(InvalidRequest):
        GenerationRequest(model=ref, prompt="x", messages=system_and_user("hi"))


def test_completion_folds_events() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=2, eval_ns=2_000_000_000)
    events = [
        TokenEvent(text="Hel", token_id=1),
        TokenEvent(text="lo", token_id=2),
        TokenEvent(finish_reason=FinishReason.LENGTH, usage=usage),
    ]
    completion = Completion.fold(events)
    assert (completion.text, completion.token_ids, completion.finish_reason) == ("Hello", (1, 2), FinishReason.LENGTH)
    assert completion.usage.eval_rate == 0.5 and completion.usage.total_tokens == 5  # one step in 2 s
    with pytest.raises(RuntimeError):
        Completion.fold(events[:2])
