"""The CLI through main(argv), with the services wired by bootstrap from fakes:
generation, embeddings, model details, settings, and how errors come out."""

from __future__ import annotations

import io
import json
import re

import pytest

from modelport.adapters.fake import fake_model
from modelport.domain import Usage
from modelport.entrypoints import cli as cli_module
from modelport.entrypoints.cli import (
    EXIT_ENGINE,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    OPTIONS_OF,
    format_stats,
    main,
)

REPLY = "The capital of France is Paris."


class Tty(io.StringIO):
    """A terminal as far as the CLI can tell."""

    def isatty(self) -> bool:
        return True


def cli(services, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), services=services, out=out, err=err, stdin=stdin or Tty())
    return code, out.getvalue(), err.getvalue()


# -- generate and run ---------------------------------------------------------------------


def test_generate_streams_the_answer(services, engine_box) -> None:
    code, out, err = cli(services, "generate", "fake", "capital", "of", "France?", "--temperature", "0")
    assert (code, out, err) == (EXIT_OK, REPLY + "\n", "")
    assert engine_box.last.prompts == ["<|user|>capital of France?\n<|assistant|>"]


def test_generate_flags_reach_the_engine(services) -> None:
    code, out, _ = cli(services, "generate", "fake", "hi", "--temperature", "0", "--max-tokens", "3")
    assert (code, out) == (EXIT_OK, "The\n")
    code, out, _ = cli(services, "generate", "fake", "hi", "--temperature", "0", "--stop", "capital", "--stop", "zzz")
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


def test_no_stream_prints_the_whole_reply_once(services) -> None:
    code, out, _ = cli(services, "generate", "fake", "hi", "--temperature", "0", "--no-stream")
    assert (code, out) == (EXIT_OK, REPLY + "\n")


def test_json_prints_ollamas_generate_answer(services) -> None:
    code, out, _ = cli(services, "generate", "fake", "hi", "--temperature", "0", "--json")
    answer = json.loads(out)
    assert code == EXIT_OK and answer["response"] == REPLY and answer["done"] is True
    assert answer["done_reason"] == "stop" and answer["eval_count"] == len(REPLY)
    assert answer["prompt_eval_count"] > 0 and answer["model"] == "fake"


def test_json_with_stream_prints_one_object_per_line(services) -> None:
    code, out, _ = cli(services, "generate", "fake", "hi", "--temperature", "0", "--json", "--stream")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == EXIT_OK and len(lines) == len(REPLY) + 1
    assert "".join(line["response"] for line in lines) == REPLY
    assert [line["done"] for line in lines] == [False] * len(REPLY) + [True]


def test_format_json_prints_only_the_json(services) -> None:
    import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)

    code, out, err = cli(services, "run", "fake", "give me JSON", "--format", "json")
    assert code == EXIT_OK and isinstance(json.loads(out), dict)


def test_format_takes_a_schema_text_or_file(services, tmp_path) -> None:
    import llguidance  # noqa: F401  (CI installs every extra: a missing library fails)

    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 5}},
        "required": ["n"],
        "additionalProperties": False,
    }
    code, out, _ = cli(services, "generate", "fake", "a number", "--format", json.dumps(schema))
    assert code == EXIT_OK and 3 <= json.loads(out)["n"] <= 5
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    code, out, _ = cli(services, "generate", "fake", "a number", "--format", str(path), "--no-stream")
    assert code == EXIT_OK and 3 <= json.loads(out)["n"] <= 5


@pytest.mark.parametrize(
    "value, words",
    [("yaml", "not json"), ("{nope", "valid JSON"), ('{"type": "object", "dependentSchemas": {}}', "dependentSchemas")],
)
def test_a_bad_format_is_one_error_line_before_anything_runs(services, engine_box, value, words) -> None:
    code, out, err = cli(services, "generate", "fake", "give me JSON", "--format", value)
    assert code == EXIT_USAGE and out == "" and words in err and len(err.strip().splitlines()) == 1
    assert engine_box.built == []  # nothing was loaded


def test_stream_and_no_stream_contradict(services) -> None:
    code, _, err = cli(services, "generate", "fake", "hi", "--stream", "--no-stream")
    assert code == EXIT_USAGE and "choose one" in err


def test_run_uses_the_default_model_and_reads_piped_stdin(services, monkeypatch) -> None:
    monkeypatch.setenv("MODELPORT_DEFAULT_MODEL", "fake")
    code, out, _ = cli(services, "run", "--temperature", "0", stdin=io.StringIO("capital?"))
    assert (code, out) == (EXIT_OK, REPLY + "\n")
    monkeypatch.setenv("MODELPORT_DEFAULT_MODEL", "missing")
    code, _, err = cli(services, "run", stdin=io.StringIO("capital?"))
    assert code == EXIT_NOT_FOUND and "missing" in err


def test_run_without_prompt_on_a_terminal_chats(services, engine_box) -> None:
    code, out, _ = cli(services, "run", "fake", "--temperature", "0", stdin=Tty("first question\nsecond\n/bye\n"))
    assert code == EXIT_OK and out.count("Paris.") == 2 and out.count(">>> ") == 3
    assert "<|assistant|>The capital of France is Paris.\n<|user|>second" in engine_box.last.prompts[-1]


def test_run_refuses_one_shot_flags_for_the_chat(services) -> None:
    code, _, err = cli(services, "run", "fake", "--json", stdin=Tty("/bye\n"))
    assert code == EXIT_USAGE and "needs a prompt" in err


# -- embed ----------------------------------------------------------------------------------


def test_embed_arguments_print_json_vectors(services) -> None:
    code, out, _ = cli(services, "embed", "embedder", "first text", "second text")
    answer = json.loads(out)
    assert code == EXIT_OK and answer["model"] == "embedder:latest"
    vectors = answer["embeddings"]
    assert len(vectors) == 2 and all(len(v) == 16 for v in vectors) and vectors[0] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-6
    assert answer["prompt_eval_count"] == len("first text") + len("second text")


def test_embed_reads_one_text_per_line_of_stdin(services) -> None:
    code, out, _ = cli(services, "embed", "embedder", stdin=io.StringIO("first text\n\nsecond text\n"))
    piped = json.loads(out)["embeddings"]
    _, out, _ = cli(services, "embed", "embedder", "first text", "second text")
    assert code == EXIT_OK and piped == json.loads(out)["embeddings"]


@pytest.mark.parametrize(
    "argv, stdin, message",
    [
        (["embed", "fake", "hi"], None, "does not support embeddings"),
        (["embed", "embedder"], io.StringIO("\n\n"), "nothing to embed"),
        (["embed", "embedder"], None, "give the texts as arguments"),
    ],
)
def test_embed_refuses_what_it_cannot_embed(services, argv, stdin, message) -> None:
    code, out, err = cli(services, *argv, stdin=stdin)
    assert code == EXIT_USAGE and message in err and out == ""


# -- models ---------------------------------------------------------------------------------


def test_list_and_show(services) -> None:
    code, out, _ = cli(services, "list")
    assert code == EXIT_OK and out.splitlines()[0].split()[:2] == ["NAME", "ID"]
    assert "fake:latest" in out and "embedder:latest" in out
    code, out, _ = cli(services, "ls", "--json")
    assert {m["name"] for m in json.loads(out)} == {"fake:latest", "embedder:latest"}
    code, out, _ = cli(services, "show", "fake", "--json")
    assert json.loads(out)["architecture"] == "fake"
    code, out, _ = cli(services, "show", "fake")
    assert code == EXIT_OK and "Model fake:latest" in out and "quantization      F32" in out


def test_show_prints_the_models_own_sampling_defaults(services, fake_store) -> None:
    fake_store.add(fake_model("tuned:latest", default_options={"temperature": 0.2, "top_p": 0.9}))
    code, out, _ = cli(services, "show", "tuned")
    assert code == EXIT_OK and "Parameters" in out and "temperature       0.2" in out


def test_info_describes_this_installation(services, settings) -> None:
    code, out, _ = cli(services, "info", "--home", settings.home)
    assert code == EXIT_OK
    assert "engine fake" in out and "available" in out and settings.home in out and "memory" in out
    code, out, _ = cli(services, "info", "--json", "--url", "http://127.0.0.1:9")
    data = json.loads(out)
    assert data["engines"]["fake"]["available"] is True
    assert data["server"] == {"url": "http://127.0.0.1:9", "running": False}
    assert data["memory"]["total"] > 0


def test_info_about_a_model_estimates_its_memory(services, fake_store) -> None:
    fake_store.add(
        fake_model(
            "shaped:latest",
            architecture="llama",
            embedding_length=64,
            size=1000,
            context_length=2048,
            metadata=(
                ("llama.block_count", 2),
                ("llama.attention.head_count", 4),
                ("llama.attention.head_count_kv", 2),
            ),
        )
    )
    code, out, _ = cli(services, "info", "shaped", "--json", "--num-ctx", "4096")
    memory = json.loads(out)["memory"]
    # 2 (K and V) x 2 layers x 2 KV heads x 16 (64 / 4) x 2048 tokens (the model's limit) x 2 bytes
    assert code == EXIT_OK and memory["kv_cache"] == 2 * 2 * 2 * 16 * 2048 * 2
    assert memory["estimate"] == int((1000 + memory["kv_cache"]) * 1.1)
    code, out, _ = cli(services, "info", "shaped")
    assert "KV cache" in out and "Metadata" in out and "llama.block_count" in out


def test_config_shows_where_each_setting_came_from(services, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MODELPORT_PORT=12000\n")
    monkeypatch.setenv("MODELPORT_ENGINE", "gguf")
    code, out, _ = cli(services, "config", "--json", "--home", str(tmp_path), "--max-models", "5")
    settings = json.loads(out)
    assert settings["home"] == {"value": str(tmp_path), "source": "flag"}
    assert settings["engine"] == {"value": "gguf", "source": "environment (MODELPORT_ENGINE)"}
    assert settings["port"] == {"value": "12000", "source": ".env (MODELPORT_PORT)"}
    assert settings["max_resident_models"] == {"value": "5", "source": "flag"}
    assert settings["threads"] == {"value": "4", "source": "default"}
    code, out, _ = cli(services, "config")
    assert out.splitlines()[0].split() == ["SETTING", "VALUE", "SOURCE"]


# -- errors and usage -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["generate", "nope", "hi"], EXIT_NOT_FOUND, "model 'nope' not found"),
        (["generate", "../x/y", "hi"], EXIT_NOT_FOUND, "not found"),
        (["generate", "a//b", "hi"], EXIT_USAGE, "invalid model name"),
        (["generate", "fake", "hi", "--temperature", "hot"], EXIT_USAGE, "--temperature must be a number"),
        (["generate", "fake", "hi", "--top-p", "2"], EXIT_USAGE, "top_p must be in (0, 1]"),
        (["generate", "fake", " "], EXIT_USAGE, "the prompt is empty"),
        (["generate", "fake", "hi", "--engine", "warp"], EXIT_USAGE, "engine must be auto, gguf, jax or mlx"),
        (["generate", "fake", "hi", "--engine", "jax"], EXIT_ENGINE, "engine 'jax' is not available"),
        (["list", "--temperature", "1"], EXIT_USAGE, "--temperature does not apply to 'list'"),
        (["serve", "--json"], EXIT_USAGE, "--json does not apply to 'serve'"),
        (["search", "llama"], EXIT_ERROR, "no model source is configured"),
        (["ps", "--url", "http://127.0.0.1:9"], EXIT_SERVER, "cannot reach a modelport server"),
        (["ps", "--url", "ftp://x"], EXIT_USAGE, "not a server address"),
        (["frobnicate"], EXIT_USAGE, "error: unknown command 'frobnicate'"),
        (["generate", "fake", "hi", "--max-tokens", "-5"], EXIT_USAGE, "--max-tokens must be at least 1"),
        (["generate", "fake", "hi", "--num-ctx", "16"], EXIT_USAGE, "num_ctx must be >= 256"),
        (["generate", "fake", "hi", "--tensor-parallel", "0"], EXIT_USAGE, "tensor_parallel must be at least 1"),
        (
            ["generate", "fake", "hi", "--tensor-parallel", "2", "--url", "http://127.0.0.1:9"],
            EXIT_USAGE,
            "--tensor-parallel chooses how this machine runs a model",
        ),
        (["serve", "--num-processes", "2"], EXIT_USAGE, "--num-processes above 1 needs --coordinator"),
        (
            ["serve", "--num-processes", "2", "--coordinator", "127.0.0.1:1", "--process-id", "2"],
            EXIT_USAGE,
            "--process-id must be 0 to 1 for 2 processes",
        ),
        (["serve", "--coordinator", "nohost"], EXIT_USAGE, "coordinator must be HOST:PORT"),
        (
            ["serve", "--num-processes", "2", "--coordinator", "h:1", "--engine", "gguf"],
            EXIT_USAGE,
            "with the jax engine only",
        ),
        (["generate", "fake", "hi", "--process-id", "1"], EXIT_USAGE, "--process-id does not apply to 'generate'"),
        (["generate"], EXIT_USAGE, "Usage:"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_status(services, argv, code, message) -> None:
    status, out, err = cli(services, *argv)
    assert status == code and message in err and "Traceback" not in err
    if not message.startswith("Usage"):
        assert len(err.strip().splitlines()) == 1


def test_tensor_parallel_reaches_the_engine_options_from_a_flag_or_the_environment(tmp_path) -> None:
    from modelport.entrypoints.bootstrap import bootstrap
    from modelport.entrypoints.commands.context import setting_flags
    from modelport.entrypoints.config import Settings

    def options(flags: dict, environ: dict):
        settings = Settings.load(
            flags=setting_flags(flags), environ={"MODELPORT_HOME": str(tmp_path), **environ}, dotenv=None
        )
        return bootstrap(settings, engines=[]).engine_options

    assert options({}, {}).tensor_parallel == 1
    assert options({}, {"MODELPORT_TENSOR_PARALLEL": "3"}).tensor_parallel == 3
    assert options({"--tensor-parallel": "2"}, {"MODELPORT_TENSOR_PARALLEL": "3"}).tensor_parallel == 2


def test_debug_shows_the_traceback(services) -> None:
    with pytest.raises(Exception, match="not found"):
        cli(services, "generate", "nope", "hi", "--debug")


def test_every_command_and_option_it_takes_is_in_the_docstring() -> None:
    doc = cli_module.__doc__
    usage = doc.split("\n\n")[1]
    options = set(re.findall(r"^\s+(--[a-z-]+)", doc, re.MULTILINE))
    for command, allowed in OPTIONS_OF.items():
        assert re.search(rf"\b{command}\b", usage), command
        assert allowed <= options, f"{command}: {allowed - options} undocumented"


def test_help_and_version(services) -> None:
    code, out, _ = cli(services, "--help")
    assert code == EXIT_OK and out.startswith("modelport: run, manage and serve")
    code, out, _ = cli(services, "version")
    assert code == EXIT_OK and out.startswith("modelport ")


def test_stats_format() -> None:
    text = format_stats(
        Usage(
            prompt_tokens=10,
            completion_tokens=20,
            prompt_eval_ns=10**8,
            eval_ns=2 * 10**9,
            load_ns=5 * 10**6,
            total_ns=3 * 10**9,
        )
    )
    assert (
        "prompt eval rate:     100.00 tokens/s" in text and "eval rate:            9.50 tokens/s" in text
    )  # 19 steps in 2 s
