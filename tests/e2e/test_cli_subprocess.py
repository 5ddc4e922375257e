"""The installed `modelport` command, as a user runs it, on the bundled models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France? Answer in one sentence."


def modelport(*args: str, home: Path, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(home)}
    return subprocess.run([executable, *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout)


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
    for field in ("load duration:", "prompt eval count:", "prompt eval rate:", "eval count:           8 token(s)",
                  "eval rate:"):
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
