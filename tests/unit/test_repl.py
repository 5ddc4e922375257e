"""The chat through main(["chat", ...]) with fakes: slash commands, multi-line input,
saved sessions, the kept turns, and the pipe mode. The pseudo-terminal tests are in
tests/e2e/test_repl_pty.py."""

from __future__ import annotations

import io
import json

from modelport.domain import ChatSession, SamplingPolicy
from modelport.entrypoints.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from modelport.entrypoints.render import MarkdownReply, PlainReply, split_finished_blocks

REPLY = "The capital of France is Paris."


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def chat(services, lines: str, *argv: str, terminal: bool = True) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    stdin = Tty(lines) if terminal else io.StringIO(lines)
    code = main(["chat", *argv], services=services, out=out, err=err, stdin=stdin)
    return code, out.getvalue(), err.getvalue()


def test_a_conversation_keeps_its_turns(services, engine_box) -> None:
    code, out, err = chat(services, "hello\nand then?\n/quit\n", "fake", "--temperature", "0")
    assert code == EXIT_OK and out.count(REPLY) == 2
    assert "Chatting with fake" in err
    assert engine_box.last.prompts[-1] == (f"<|user|>hello\n<|assistant|>{REPLY}\n<|user|>and then?\n<|assistant|>")


def test_only_the_last_ten_turns_reach_the_model(services, engine_box) -> None:
    messages = "".join(f"question {i}\n" for i in range(12))
    chat(services, messages, "fake", "--temperature", "0", "--max-tokens", "2")
    prompt = engine_box.last.prompts[-1]
    assert "question 1\n" not in prompt and "question 0" not in prompt
    assert prompt.startswith("<|user|>question 2\n") and prompt.count("<|user|>") == 10


def test_triple_quotes_make_one_message_of_several_lines(services, engine_box) -> None:
    code, _, _ = chat(services, '"""first line\nsecond line\n"""\n"""one line"""\n', "fake")
    assert code == EXIT_OK
    assert engine_box.last.prompts[0] == "<|user|>first line\nsecond line\n<|assistant|>"
    assert engine_box.last.prompts[1].endswith("<|user|>one line\n<|assistant|>")


def test_set_changes_the_sampling_and_the_system_prompt(services, engine_box) -> None:
    lines = "/set temperature 0\n/set max_tokens 3\n/set system be brief\n/set\nhi\n/set top_p 7\n/set nothing 1\n"
    code, out, err = chat(services, lines, "fake")
    assert code == EXIT_OK
    assert engine_box.last.prompts[-1] == "<|system|>be brief\n<|user|>hi\n<|assistant|>"
    assert "The\n" in out  # three tokens, greedy
    assert "temperature     0.0" in out and "max_tokens      3" in out
    assert "error: top_p must be in (0, 1], got 7.0" in err and "unknown setting 'nothing'" in err


def test_set_stop_adds_stop_strings(services) -> None:
    code, out, _ = chat(services, "/set temperature 0\n/set stop capital\nhi\n", "fake")
    assert code == EXIT_OK and "The \n" in out


def test_show_history_clear_and_help(services) -> None:
    code, out, err = chat(
        services,
        "/show\nhello\n/history\n/clear\n/history\n/help\n/nope\n",
        "fake",
        "--temperature",
        "0",
        "--system",
        "be nice",
    )
    assert code == EXIT_OK
    assert "architecture    fake" in out and "system          be nice" in out
    assert f"user: hello\nassistant: {REPLY}" in out and "system: be nice" in out
    assert "(no messages yet)" not in out  # the system prompt survives /clear
    assert out.count("system: be nice") == 2 and out.count("user: hello") == 1
    assert "/save NAME|FILE" in out and "unknown command /nope" in err


def test_model_switches_and_refuses_unknown_models(services, engine_box) -> None:
    code, out, err = chat(services, "/model nope\n/model embedder\nhi\n/model fake\nhi\n", "fake", "--temperature", "0")
    assert code == EXIT_OK
    assert "model 'nope' not found" in err and "Now talking to embedder:latest" in err
    assert "'embedder:latest' does not support chat" in err
    assert out.count(REPLY) == 1


def test_save_and_load_a_file_round_trip(services, tmp_path) -> None:
    path = tmp_path / "chat.json"
    code, _, err = chat(services, f"hello\n/set temperature 0.5\n/save {path}\n", "fake", "--temperature", "0")
    assert code == EXIT_OK and f"Saved 2 messages to {path}" in err
    saved = ChatSession.from_json(path.read_text())
    assert [m.content for m in saved.conversation] == ["hello", REPLY]
    assert saved.sampling.temperature == 0.5 and saved.model == "fake"
    code, out, err = chat(services, f"/load {path}\n/history\n/show\n", "embedder")
    assert code == EXIT_OK and "Loaded 2 messages (fake)" in err
    assert f"user: hello\nassistant: {REPLY}" in out and "temperature     0.5" in out


def test_save_and_load_by_name_use_the_session_repository(services) -> None:
    code, _, err = chat(services, "hello\n/save mine\n", "fake", "--temperature", "0")
    assert code == EXIT_OK and "Saved as 'mine'" in err
    assert services.sessions.get("mine").conversation.messages[-1].content == REPLY
    code, out, _ = chat(services, "/history\nagain\n", "--session", "mine")
    assert code == EXIT_OK and f"assistant: {REPLY}" in out and out.count(REPLY) == 2


def test_session_option_keeps_the_saved_options_under_the_flags(services) -> None:
    session = ChatSession(id="tuned", model="fake", sampling=SamplingPolicy(temperature=0.0, top_k=7))
    services.sessions.save(session)
    code, out, _ = chat(services, "/set\n", "--session", "tuned", "--top-p", "0.5")
    assert code == EXIT_OK and "top_k           7" in out and "top_p           0.5" in out


def test_load_reports_what_is_wrong(services, tmp_path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    lines = f"/load nothere\n/load {tmp_path}/missing.json\n/load {tmp_path}/bad.json\n/save bad name!\n/save\n"
    code, _, err = chat(services, lines, "fake")
    assert code == EXIT_OK
    assert "no saved session 'nothere'" in err and "no such file" in err
    assert "not a saved chat session" in err and "cannot name a session" in err and "/save needs" in err


def test_a_missing_model_or_session_stops_before_the_chat(services) -> None:
    code, _, err = chat(services, "hi\n", "nope")
    assert code == EXIT_NOT_FOUND and "model 'nope' not found" in err
    code, _, err = chat(services, "hi\n", "--session", "absent")
    assert code == EXIT_USAGE and "no saved session 'absent'" in err


def test_as_a_pipe_it_prints_replies_only_and_reports_errors_in_its_status(services) -> None:
    code, out, err = chat(services, "hello\n/set top_p 9\nagain\n", "fake", "--temperature", "0", terminal=False)
    assert out == f"{REPLY}\n{REPLY}\n" and "\x1b" not in out + err
    assert ">>>" not in out and "Chatting" not in err
    assert code == EXIT_USAGE and "top_p must be in (0, 1]" in err


def test_verbose_prints_statistics_after_each_reply(services) -> None:
    code, _, err = chat(services, "hello\n/set verbose off\nagain\n", "fake", "--verbose")
    assert code == EXIT_OK and err.count("eval rate:") == 2  # eval rate and prompt eval rate, once


# -- drawing ----------------------------------------------------------------------------------


def test_finished_blocks_end_at_a_blank_line_outside_code() -> None:
    assert split_finished_blocks("one\n\ntwo") == ("one\n\n", "two")
    assert split_finished_blocks("one\n\n") == ("", "one\n\n")
    text = "intro\n\n```python\nx = 1\n\ny = 2\n"
    assert split_finished_blocks(text) == ("intro\n\n", "```python\nx = 1\n\ny = 2\n")
    closed = text + "```\n\nafter"
    assert split_finished_blocks(closed) == (closed[: -len("after")], "after")


def test_plain_reply_ends_the_line_once() -> None:
    out = io.StringIO()
    view = PlainReply(out)
    for part in ("Hel", "lo", ""):
        view.feed(part)
    view.close()
    assert out.getvalue() == "Hello\n"


def test_markdown_reply_highlights_code_on_a_terminal() -> None:
    out = Tty()
    view = MarkdownReply(out)
    for part in ["Some **bold** text.\n\n", "```python\n", "def f():\n    return 1\n", "```\n"]:
        view.feed(part)
    view.close()
    drawn = out.getvalue()
    assert "\x1b[" in drawn and "bold" in drawn and "return" in drawn and "**" not in drawn


def test_a_saved_session_is_plain_json(services, tmp_path) -> None:
    path = tmp_path / "s.json"
    chat(services, f"hello\n/save {path}\n", "fake", "--temperature", "0")
    data = json.loads(path.read_text())
    assert data["model"] == "fake" and data["kept_turns"] == 10 and len(data["messages"]) == 2


def test_chat_format_makes_every_reply_json(services) -> None:

    import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)

    code, out, err = chat(services, "a person\nanother\n/quit\n", "fake", "--format", "json", terminal=False)
    assert code == EXIT_OK, err
    assert [isinstance(json.loads(line), dict) for line in out.splitlines() if line.strip()] == [True, True]


def test_tool_calls_are_shown_on_a_line_of_their_own(services, engine_box) -> None:

    from modelport.domain import Tool, ToolChoice
    from modelport.entrypoints.repl import ChatRepl

    import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)

    weather = Tool(
        name="get_weather",
        parameters_text={
            "type": "object",
            "properties": {"city": {"enum": ["Oslo"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    )

    class WithTools:  # the services, offering a tool on every turn
        def __getattr__(self, name):
            return getattr(services, name)

        def chat(self, session, message, **output):
            return services.chat(session, message, tools=(weather,), tool_choice=ToolChoice(mode="required"), **output)

    out, err = io.StringIO(), io.StringIO()
    session = services.new_session("fake", sampling=SamplingPolicy.greedy())
    repl = ChatRepl(WithTools(), session, out=out, err=err, stdin=io.StringIO("weather?\n/history\n/quit\n"))
    assert repl.run() == 0
    shown = out.getvalue()
    assert '[tool call] get_weather {"city": "Oslo"}' in shown
    assert 'assistant: [tool call] get_weather {"city": "Oslo"}' in shown  # /history too
    assert repl.session.conversation.messages[-1].tool_calls[0].name == "get_weather"
