"""The chat on a pseudo-terminal (pexpect), as a person uses it, on the bundled SmolLM2:
markdown replies, slash commands, a /save then /load round trip, multi-line input,
the history file, Ctrl-C in the middle of a reply, Ctrl-D to leave."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pexpect
import pytest

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France? Answer in one sentence."
# A prompt SmolLM2 answers at length: greedy, it writes until --max-tokens (2000 tokens,
# about 20 s here), so a Ctrl-C after the first words always lands in the middle.
LONG = "Write a very long story about a dragon who learns to code in Python, with many chapters."
TIMEOUT_S = 90


def spawn(home: Path, *args: str) -> pexpect.spawn:
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(home), "TERM": "xterm-256color", "COLUMNS": "120"}
    child = pexpect.spawn(
        executable,
        ["chat", "smollm2", "--temperature", "0", *args],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT_S,
        dimensions=(40, 120),
    )
    child.logfile_read = (home / "terminal.log").open("w")
    child.expect_exact(">>> ")
    return child


def send(child: pexpect.spawn, line: str, *expected: str) -> None:
    """Type ``line``, wait for each of ``expected`` in turn, then for the next prompt."""
    child.sendline(line)
    for text in expected:
        child.expect_exact(text)
    child.expect_exact(">>> ")


def leave(child: pexpect.spawn) -> int:
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


def test_save_then_load_round_trip_multiline_input_and_history(tmp_path: Path) -> None:
    saved = tmp_path / "chat.json"
    child = spawn(tmp_path)
    send(child, QUESTION, "Paris")
    send(child, f"/save {saved}", "Saved 2 messages")
    send(child, "/clear", "Cleared the conversation.")
    send(child, "/history", "(no messages yet)")
    send(child, f"/load {saved}", "Loaded 2 messages (smollm2)")
    send(child, "/history", "user: " + QUESTION, "assistant: The capital of France is Paris.")
    child.sendline('"""')
    child.expect_exact("... ")
    child.sendline("Repeat these two words:")
    child.expect_exact("... ")
    send(child, 'blue sky"""')
    send(child, "/set temperature 0.7", "Set temperature to 0.7.")
    send(child, "/save later", "Saved as 'later'")
    assert leave(child) == 0

    first = json.loads(saved.read_text())
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["messages"][1]["content"] == "The capital of France is Paris."
    later = json.loads((tmp_path / "sessions" / "later.json").read_text())
    assert [m["content"] for m in later["messages"]][:3] == [
        QUESTION,
        "The capital of France is Paris.",
        "Repeat these two words:\nblue sky",
    ]
    assert later["options"]["temperature"] == 0.7 and later["model"] == "smollm2"
    history = (tmp_path / "history").read_text()
    assert QUESTION in history and f"/save {saved}" in history and "/set temperature 0.7" in history


def test_ctrl_c_stops_the_reply_and_the_chat_goes_on(tmp_path: Path) -> None:
    child = spawn(tmp_path, "--max-tokens", "2000")
    child.sendintr()  # at the prompt: a reminder, not an exit
    child.expect_exact("Use Ctrl-D or /bye to leave.")
    child.expect_exact(">>> ")
    child.sendline(LONG)
    child.expect_exact(LONG)  # the terminal's echo
    child.expect(r"[A-Za-z']+ [A-Za-z']+ [A-Za-z']+")  # the first words of the reply
    child.sendintr()
    child.expect_exact("(stopped)")
    child.expect_exact(">>> ")
    send(child, "/history", "(no messages yet)")  # the unfinished turn was dropped
    send(child, QUESTION, "Paris")
    send(child, "/history", "assistant: The capital of France is Paris.")
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
