"""The CLI through main(argv), with the services wired by bootstrap from fakes."""

from __future__ import annotations

import io
import json

import pytest

from modelport.entrypoints.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, format_stats, main
from modelport.domain import Usage


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def cli(services, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), services=services, out=out, err=err, stdin=stdin or Tty())
    return code, out.getvalue(), err.getvalue()


def test_generate_streams_the_answer(services, engine_box) -> None:
    code, out, err = cli(services, "generate", "fake", "capital", "of", "France?", "--temperature", "0")
    assert (code, out, err) == (EXIT_OK, "The capital of France is Paris.\n", "")
    assert engine_box.last.prompts == ["<|user|>capital of France?\n<|assistant|>"]


def test_generate_flags_reach_the_engine(services) -> None:
    code, out, _ = cli(services, "generate", "fake", "hi", "--temperature", "0", "--max-tokens", "3")
    assert (code, out) == (EXIT_OK, "The\n")
    code, out, _ = cli(services, "generate", "fake", "hi", "--temperature", "0", "--stop", "capital",
                       "--stop", "zzz")
    assert out == "The \n"


def test_system_prompt_and_raw_mode(services, engine_box) -> None:
    cli(services, "generate", "fake", "hi", "--system", "be brief")
    assert engine_box.last.prompts[-1] == "<|system|>be brief\n<|user|>hi\n<|assistant|>"
    cli(services, "generate", "fake", "hi", "--raw")
    assert engine_box.last.prompts[-1] == "hi"
    code, _, err = cli(services, "generate", "fake", "hi", "--raw", "--system", "x")
    assert code == EXIT_USAGE and "--raw" in err


def test_verbose_prints_ollama_statistics(services) -> None:
    code, _, err = cli(services, "generate", "fake", "hi", "--verbose")
    assert code == EXIT_OK
    for line in ("load duration:", "prompt eval count:", "prompt eval rate:", "eval count:", "eval rate:"):
        assert line in err
    assert "tokens/s" in err


def test_run_uses_the_default_model_and_reads_piped_stdin(services, monkeypatch) -> None:
    monkeypatch.setenv("MODELPORT_DEFAULT_MODEL", "fake")
    code, out, _ = cli(services, "run", "--temperature", "0", stdin=io.StringIO("capital?"))
    assert (code, out) == (EXIT_OK, "The capital of France is Paris.\n")
    monkeypatch.setenv("MODELPORT_DEFAULT_MODEL", "missing")
    code, _, err = cli(services, "run", stdin=io.StringIO("capital?"))
    assert code == EXIT_NOT_FOUND and "missing" in err


def test_run_without_prompt_on_a_terminal_chats(services, monkeypatch, engine_box) -> None:
    answers = iter(["first question", "second", "/bye"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    code, out, _ = cli(services, "run", "fake", "--temperature", "0")
    assert code == EXIT_OK and out.count("Paris.") == 2
    assert "<|assistant|>The capital of France is Paris.\n<|user|>second" in engine_box.last.prompts[-1]


def test_list_and_show(services) -> None:
    code, out, _ = cli(services, "list")
    assert code == EXIT_OK and out.splitlines()[0].split()[:2] == ["NAME", "ID"]
    assert "fake:latest" in out and "embedder:latest" in out
    code, out, _ = cli(services, "ls", "--json")
    assert {m["name"] for m in json.loads(out)} == {"fake:latest", "embedder:latest"}
    code, out, _ = cli(services, "show", "fake", "--json")
    assert json.loads(out)["architecture"] == "fake"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["generate", "nope", "hi"], EXIT_NOT_FOUND, "model 'nope' not found"),
        (["generate", "../x/y", "hi"], EXIT_NOT_FOUND, "not found"),
        (["generate", "a//b", "hi"], EXIT_USAGE, "invalid model name"),
        (["generate", "fake", "hi", "--temperature", "hot"], EXIT_USAGE, "--temperature must be a number"),
        (["generate", "fake", "hi", "--top-p", "2"], EXIT_USAGE, "top_p must be in (0, 1]"),
        (["generate", "fake", " "], EXIT_USAGE, "the prompt is empty"),
        (["frobnicate"], EXIT_USAGE, "Usage:"),
        (["generate"], EXIT_USAGE, "Usage:"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_status(services, argv, code, message) -> None:
    status, out, err = cli(services, *argv)
    assert status == code and message in err and "Traceback" not in err


def test_help_and_version(services) -> None:
    code, out, _ = cli(services, "--help")
    assert code == EXIT_OK and out.startswith("modelport: run, manage and serve")
    code, out, _ = cli(services, "version")
    assert code == EXIT_OK and out.startswith("modelport ")


def test_config_shows_where_each_setting_came_from(services, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MODELPORT_PORT=12000\n")
    monkeypatch.setenv("MODELPORT_ENGINE", "gguf")
    code, out, _ = cli(services, "config", "--json", "--home", str(tmp_path))
    settings = json.loads(out)
    assert settings["home"] == {"value": str(tmp_path), "source": "flag"}
    assert settings["engine"] == {"value": "gguf", "source": "environment (MODELPORT_ENGINE)"}
    assert settings["port"] == {"value": "12000", "source": ".env (MODELPORT_PORT)"}


def test_stats_format() -> None:
    text = format_stats(Usage(prompt_tokens=10, completion_tokens=20, prompt_eval_ns=10**8,
                              eval_ns=2 * 10**9, load_ns=5 * 10**6, total_ns=3 * 10**9))
    assert "prompt eval rate:     100.00 tokens/s" in text and "eval rate:            10.00 tokens/s" in text
