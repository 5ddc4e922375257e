"""The CLI spellings of the three tools modelport replaces (docs/migrating-*.md), with
fakes: per-command help, RustLLM's --model and `model` commands, model-rs' settings,
Hugging Llama's serve flags and OLLAMA_LOCAL_PORT."""

from __future__ import annotations

import io
import json
import re

import pytest

from modelport.adapters.fake import InMemoryModelStore, fake_model
from modelport.entrypoints import cli as cli_module
from modelport.entrypoints.cli import ALIASES, EXIT_OK, EXIT_USAGE, OPTIONS_OF, main
from modelport.entrypoints.config import Settings, read_dotenv


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def cli(services, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), services=services, out=out, err=err, stdin=Tty())
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in (
        "MODELPORT_TEMPERATURE",
        "MODELPORT_TOP_P",
        "MODELPORT_TOP_K",
        "MODELPORT_REPEAT_PENALTY",
        "MODELPORT_MAX_TOKENS",
        "MODELPORT_MODEL_PATH",
        "MODELPORT_OUTPUT_DIR",
        "MODELPORT_PORT",
        "OLLAMA_LOCAL_PORT",
        "MODELPORT_HOST",
        "OLLAMA_HOST",
        "MODELPORT_API",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # .env files written by `cache` land here


# -- modelport COMMAND --help -------------------------------------------------------------


@pytest.mark.parametrize("command", sorted({*OPTIONS_OF, *ALIASES}))
def test_every_command_has_its_own_help(command) -> None:
    code, out, err = cli(None, command, "--help")
    assert (code, err) == (EXIT_OK, "")
    usage = out.split("\n\n")[0].splitlines()
    assert usage[0] == "Usage:" and len(usage) > 1
    name = ALIASES.get(command, command)
    for line in usage[1:]:
        assert re.search(rf"modelport \(?(\w[\w-]* \| )*({name}|{command})\b", line), line
    options = set(re.findall(r"^  (?:-h, )?(--[\w-]+)", out, flags=re.M))
    assert options == OPTIONS_OF[name] | {"--help"}


def test_help_is_that_commands_own() -> None:
    _, run_help, _ = cli(None, "run", "-h")
    _, chat_help, _ = cli(None, "chat", "--help")
    assert "--session" in chat_help and "--session" not in run_help
    assert "Answer a prompt" in run_help and "modelport serve" not in run_help
    _, serve_help, _ = cli(None, "serve", "--help")
    for flag in ("--max-resident-models", "--model-ttl", "--api", "--port"):
        assert flag in serve_help


def test_help_after_other_arguments_and_a_prompt_that_says_help() -> None:
    code, out, _ = cli(None, "generate", "fake", "hi", "--help")
    assert code == EXIT_OK and out.startswith("Usage:\n  modelport generate")


def test_unknown_command_help_is_still_a_usage_error() -> None:
    code, _, err = cli(None, "frobnicate", "--help")
    assert code == EXIT_USAGE and err


# -- RustLLM: --model, model pull/list/remove, --models-path ---------------------------------


def test_chat_and_run_take_model_as_an_option(services, engine_box) -> None:
    code, out, _ = cli(services, "run", "--model", "fake", "capital?", "--temperature", "0")
    assert (code, out) == (EXIT_OK, "The capital of France is Paris.\n")
    assert engine_box.last.prompts[-1] == "<|user|>capital?\n<|assistant|>"
    code, _, err = cli(services, "chat", "fake", "--model", "other")
    assert code == EXIT_USAGE and "name the model once" in err


def test_model_list_and_model_remove_are_list_and_remove(services) -> None:
    assert cli(services, "model", "list") == cli(services, "list")
    code, out, _ = cli(services, "model", "ls", "--json")
    assert code == EXIT_OK and {m["name"] for m in json.loads(out)} == {"fake:latest", "embedder:latest"}
    code, out, _ = cli(services, "model", "rm", "embedder")
    assert (code, out) == (EXIT_OK, "deleted 'embedder'\n")


def test_models_path_is_the_store_folder(tmp_path) -> None:
    settings = Settings.load(
        flags={"home": str(tmp_path / "home"), "models_path": str(tmp_path / "m")}, environ={}, dotenv=None
    )
    assert settings.models_dir == tmp_path / "m"
    assert Settings.load(flags={"home": str(tmp_path)}, environ={}, dotenv=None).models_dir == tmp_path / "models"
    env = Settings.load(environ={"MODELPORT_HOME": str(tmp_path), "MODELPORT_MODELS_PATH": "/srv/models"}, dotenv=None)
    assert str(env.models_dir) == "/srv/models"


# -- model-rs: generation defaults from the environment, MODELPORT_OUTPUT_DIR ----------------


def test_environment_sampling_defaults_sit_under_the_model_and_the_flags(monkeypatch, settings, engine_box) -> None:
    from modelport.adapters.fake import InMemorySessionRepository
    from modelport.domain import ModelFormat
    from modelport.entrypoints.bootstrap import bootstrap
    from modelport.ports import EngineSpec

    store = InMemoryModelStore(
        [fake_model("fake:latest", aliases=("fake",)), fake_model("own:latest", default_options=(("num_predict", 5),))]
    )
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    services = bootstrap(settings, store=store, engines=[spec], sessions=InMemorySessionRepository())
    monkeypatch.setenv("MODELPORT_TEMPERATURE", "0")
    monkeypatch.setenv("MODELPORT_MAX_TOKENS", "3")
    assert cli(services, "run", "fake", "hi")[1] == "The\n"  # greedy, 3 tokens: from the environment
    assert cli(services, "run", "own", "hi")[1] == "The c\n"  # the model's own num_predict wins
    assert cli(services, "run", "fake", "hi", "--max-tokens", "4")[1] == "The \n"  # a flag wins over both
    monkeypatch.setenv("MODELPORT_TOP_K", "many")
    code, _, err = cli(services, "run", "fake", "hi")
    assert code == EXIT_USAGE and "MODELPORT_TOP_K must be a whole number" in err


def test_output_dir_keeps_each_reply(monkeypatch, services, tmp_path) -> None:
    monkeypatch.setenv("MODELPORT_OUTPUT_DIR", str(tmp_path / "out"))
    code, out, _ = cli(services, "generate", "fake", "capital?", "--temperature", "0")
    assert code == EXIT_OK
    (saved,) = (tmp_path / "out").glob("*.json")
    record = json.loads(saved.read_text())
    assert record == {**record, "model": "fake", "prompt": "capital?", "response": out.rstrip("\n")}


def test_cache_enable_and_disable_write_the_model_ttl(tmp_path) -> None:
    code, out, _ = cli(None, "cache", "disable")
    assert code == EXIT_OK and "MODELPORT_MODEL_TTL=0" in out
    assert read_dotenv(tmp_path / ".env")["MODELPORT_MODEL_TTL"] == "0"
    assert Settings.load(environ={}, dotenv=tmp_path / ".env", flags={"home": "h"}).model_ttl == 0
    code, out, _ = cli(None, "cache", "enable", "--json")
    assert json.loads(out)["model_ttl"] == "5m"
    assert Settings.load(environ={}, dotenv=tmp_path / ".env", flags={"home": "h"}).model_ttl == 300


def test_stop_server_without_a_detached_server_says_so(tmp_path) -> None:
    code, _, err = cli(None, "stop-server", "--home", str(tmp_path))
    assert code == EXIT_USAGE and "no detached server to stop" in err


# -- Hugging Llama: serve flags, OLLAMA_LOCAL_PORT, pull flags -------------------------------


def test_serve_flags_of_hugging_llama(monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr(cli_module.Cli, "_serve", lambda self: seen.setdefault("s", self.settings) and 0)
    assert cli(None, "serve", "--max-resident-models", "2", "--model-ttl", "90", "--port", "8000")[0] == EXIT_OK
    settings = seen.pop("s")
    assert (settings.max_resident_models, settings.model_ttl, settings.port) == (2, 90, 8000)
    assert cli(None, "serve", "--max-models", "5", "--model-ttl", "-1", "--api", "rustllm")[0] == EXIT_OK
    settings = seen.pop("s")
    assert (settings.max_resident_models, settings.model_ttl, settings.api) == (5, float("inf"), "rustllm")
    code, _, err = cli(None, "serve", "--api", "grpc")
    assert code == EXIT_USAGE and "api must be ollama or rustllm" in err


def test_ollama_local_port_is_the_default_port_of_serve_and_of_clients(monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_LOCAL_PORT", "11500")
    settings = Settings.load(flags={"home": "h"}, dotenv=None)
    assert settings.port == 11500 and settings.url == "http://127.0.0.1:11500"
    code, _, err = cli(None, "ps")  # nothing listens there: the error names the port
    assert code == cli_module.EXIT_SERVER and "11500" in err
    monkeypatch.setenv("MODELPORT_PORT", "11600")
    assert Settings.load(flags={"home": "h"}, dotenv=None).port == 11600


def test_pull_takes_a_revision_and_says_what_trust_remote_code_means(services) -> None:
    pulled = []

    class Source:
        def fetch(self, ref, folder, progress):
            pulled.append(ref)
            raise cli_module.ModelportError("stop here")

    services.source = Source()
    code, _, err = cli(services, "pull", "org/tiny", "--revision", "v1.0", "--trust-remote-code")
    assert code == cli_module.EXIT_ERROR and "stop here" in err
    assert pulled[0].repo_id == "org/tiny" and pulled[0].revision == "v1.0"
    assert "never runs code from a model repository" in err
    code, _, err = cli(services, "pull", "org/tiny@main", "--revision", "v1.0")
    assert code == EXIT_USAGE and "give one" in err


def test_run_with_only_a_question_uses_the_default_model(monkeypatch, services, engine_box) -> None:
    monkeypatch.setenv("MODELPORT_DEFAULT_MODEL", "fake")
    code, out, _ = cli(services, "run", "capital of France?", "--temperature", "0")
    assert (code, out) == (EXIT_OK, "The capital of France is Paris.\n")
    assert engine_box.last.prompts[-1] == "<|user|>capital of France?\n<|assistant|>"


def test_the_option_table_is_read_from_the_docstring() -> None:
    from modelport.entrypoints.cli_help import options_of

    doc = (
        "Usage:\n  x a\n\nWhich command takes which option (a note):\n"
        "  <g>   --one --two\n  a     <g> --three\n  a     --four\n  b     a --five\n\nExit\n"
    )
    assert options_of(doc) == {
        "a": {"--one", "--two", "--three", "--four"},
        "b": {"--one", "--two", "--three", "--four", "--five"},
    }
    with pytest.raises(ValueError, match="<h>"):
        options_of(doc.replace("a     --four", "a     <h>"))
