"""The installed `modelport` command, as a user runs it, on the bundled models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France? Answer in one sentence."


def modelport(*args: str, home: Path, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(home)}
    return subprocess.run([executable, *args], capture_output=True, text=True, env=env, input=stdin, timeout=timeout)


def test_run_answers_the_capital_question(tmp_path: Path) -> None:
    result = modelport("run", "smollm2", QUESTION, "--temperature", "0", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."
    assert result.stderr == ""


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_run_with_the_models_own_sampling_defaults_says_paris(tmp_path: Path, seed: str) -> None:
    result = modelport("run", "smollm2", QUESTION, "--seed", seed, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_generate_verbose_prints_statistics(tmp_path: Path) -> None:
    result = modelport("generate", "smollm2:135m", "Say hello.", "--max-tokens", "8", "--verbose", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    for field in (
        "load duration:",
        "prompt eval count:",
        "prompt eval rate:",
        "eval count:           8 token(s)",
        "eval rate:",
    ):
        assert field in result.stderr


def test_list_shows_both_bundled_models(tmp_path: Path) -> None:
    result = modelport("list", home=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == ["all-minilm:l6-v2", "smollm2:135m"]
    assert not (tmp_path / "models").exists(), "listing must not create the store"


def test_piped_prompt(tmp_path: Path) -> None:
    result = modelport("run", "smollm2", "--temperature", "0", home=tmp_path, stdin=QUESTION)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.parametrize(
    "args, status, message",
    [
        (("run", "nosuchmodel", "hi"), 3, "model 'nosuchmodel' not found"),
        (("generate", "smollm2", "hi", "--max-tokens", "zero"), 2, "--max-tokens must be a whole number"),
        (("generate", "smollm2", "hi", "--engine", "warp"), 2, "engine must be auto, gguf, jax or mlx"),
        (("show", "org/../etc"), 2, "invalid model name"),
        (("generate", "all-minilm", "hi"), 2, "does not support"),
    ],
)
def test_bad_input_gives_one_line_and_a_status(tmp_path: Path, args, status, message) -> None:
    result = modelport(*args, home=tmp_path)
    assert result.returncode == status, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_chat_as_a_pipe_answers_each_line_in_plain_text(tmp_path: Path) -> None:
    lines = f"{QUESTION}\n/set max_tokens 5\nSay hello.\n"
    result = modelport("chat", "smollm2", "--temperature", "0", home=tmp_path, stdin=lines)
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first == "The capital of France is Paris." and len(rest) >= 1
    assert "\x1b" not in result.stdout + result.stderr and ">>>" not in result.stdout


def test_show_info_and_verify_the_bundled_model(tmp_path: Path) -> None:
    shown = json.loads(modelport("show", "smollm2", "--json", home=tmp_path).stdout)
    assert (shown["name"], shown["quantization"], shown["parameters"]) == ("smollm2:135m", "Q4_1", 134515008)
    assert shown["default_options"] == {"repeat_penalty": 1.1, "temperature": 0.2, "top_p": 0.9}
    info = json.loads(modelport("info", "--json", home=tmp_path).stdout)
    assert info["engines"]["gguf"]["available"] is True and info["paths"]["home"] == str(tmp_path)
    # the installed llama.cpp build generated a token in a child process, remembered under the home
    assert info["engines"]["gguf"]["check"]["usable"] is True, info["engines"]["gguf"]["check"]
    assert list((tmp_path / "checks").glob("gguf-*.json"))
    about = json.loads(modelport("info", "smollm2", "--json", home=tmp_path).stdout)
    # 2 (K and V) x 30 layers x 3 KV heads x 64 x 4096 tokens x 2 bytes
    assert about["memory"]["kv_cache"] == 2 * 30 * 3 * 64 * 4096 * 2
    result = modelport("verify", "smollm2", home=tmp_path)
    assert result.returncode == 0 and "SmolLM2-135M-Instruct.Q4_1.gguf  ok (no recorded sha256)" in result.stdout


def test_catalog_against_a_given_memory(tmp_path: Path) -> None:
    result = modelport("catalog", "--memory", "1GB", home=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[3:] if line.strip()}
    assert rows["smollm2:135m"][-3:] == ["yes", "yes", "(bundled)"]  # fits, installed, bundled
    assert "llama3.1:8b" not in rows


def test_ctrl_c_stops_a_generation_with_status_130(tmp_path: Path) -> None:
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    process = subprocess.Popen(
        [
            executable,
            "generate",
            "smollm2",
            "Write a very long story about a dragon.",
            "--temperature",
            "0",
            "--max-tokens",
            "2000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MODELPORT_HOME": str(tmp_path)},
    )
    try:
        assert process.stdout.read(20)  # the reply has begun
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and err.strip().endswith("interrupted") and "Traceback" not in err


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path) -> None:
    """`modelport --help | head -1`: here the reader is gone before anything is written."""
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(tmp_path)}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([executable, "--help"], stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 0 and result.stderr == b""
