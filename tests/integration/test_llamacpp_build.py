"""The installed llama.cpp build is the portable one, and the install commands make it so.

llama.cpp's default build (GGML_NATIVE=ON) compiles for the building machine and, where
the CPU reports AMX, turns on ggml's AMX matrix path, which dies with SIGILL in some VMs.
The README installs llama-cpp-python from requirements/llama-cpp.txt, whose flags turn
that off. The build reports the paths it was compiled with, whatever CPU runs the test:
a machine without AMX still catches a build that would crash on one.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from modelport.adapters.llamacpp import BUILD_FLAGS, reinstall_command

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements" / "llama-cpp.txt"


def needs_llama_cpp(test):
    """CI installs every extra: without llama-cpp-python these tests fail, never skip."""
    return test


@needs_llama_cpp
def test_the_installed_llama_cpp_has_no_amx_path() -> None:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    assert "CPU :" in info, info
    assert "AMX" not in info, (
        f"this llama.cpp build has the AMX path ({info.strip()}), which dies with SIGILL on CPUs "
        f"that report AMX in some VMs; reinstall it: pip install --force-reinstall --no-cache-dir "
        f"--no-deps -r requirements/llama-cpp.txt"
    )


@needs_llama_cpp
def test_the_self_check_of_the_installed_build_passes_and_is_remembered(tmp_path) -> None:
    from modelport.entrypoints.bootstrap import default_engines

    gguf = default_engines(str(tmp_path))[0]
    assert gguf.name == "gguf"
    check = gguf.check()
    assert check is not None and check.usable, check
    assert check.summary.startswith("self-check passed (llama-cpp-python ")
    assert "AMX" not in check.summary
    assert len(list((tmp_path / "checks").glob("gguf-*.json"))) == 1
    assert gguf.problem() is None


def requirement_lines() -> list[str]:
    text = REQUIREMENTS.read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    return [line.split("#")[0].strip() for line in joined.splitlines() if line.split("#")[0].strip()]


def test_the_requirements_file_pins_the_source_and_the_flags_the_code_names() -> None:
    (line,) = requirement_lines()
    words = shlex.split(line)
    assert re.fullmatch(r"llama-cpp-python==[0-9.]+", words[0])
    assert any(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", w) for w in words)
    defines = [
        w.removeprefix("--config-settings=cmake.define.")
        for w in words
        if w.startswith("--config-settings=cmake.define.")
    ]
    assert ["-D" + d for d in defines] == list(BUILD_FLAGS)
    assert "-DGGML_NATIVE=OFF" in BUILD_FLAGS
    # what the self-check tells a user to run builds with the same flags
    command = reinstall_command(sys.executable, "0.3.36")
    assert f'CMAKE_ARGS="{" ".join(BUILD_FLAGS)}"' in command
    assert "--no-cache-dir" in command and "--force-reinstall" in command


def readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
    return " ".join(line.strip() for line in block.strip().splitlines())


@pytest.mark.parametrize("marker", ["run-command", "test-command"])
def test_the_readme_installs_llama_cpp_from_the_file_first_never_from_the_cache(marker) -> None:
    steps = [step.strip() for step in readme_command(marker).split("&&")]
    llama = [i for i, s in enumerate(steps) if "requirements/llama-cpp.txt" in s]
    editable = [i for i, s in enumerate(steps) if " -e " in f" {s} "]
    assert len(llama) == 1 and len(editable) == 1 and llama[0] < editable[0], steps
    words = shlex.split(steps[llama[0]])
    assert "--no-cache-dir" in words and "--no-deps" in words
    # per-requirement --config-settings in a requirements file needs pip 23.1
    assert any("pip>=23.1" in s for s in steps[: llama[0]]), steps
