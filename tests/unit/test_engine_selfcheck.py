"""An engine library that crashes natively is found out in a child process, remembered
per build, reported in one line, and ``auto`` falls back to another engine.

The crashing library is simulated by a child process that kills itself with SIGILL,
the signal a build compiled for instructions the CPU does not execute dies with.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from modelport.adapters.fake import FakeEngine, InMemoryModelStore, InMemorySessionRepository, fake_model
from modelport.adapters.selfcheck import Library, LibraryCheck, installed_library
from modelport.domain import EngineUnavailable, ModelFormat
from modelport.entrypoints import cli
from modelport.entrypoints.bootstrap import bootstrap
from modelport.ports import EngineCheck, EngineRegistry, EngineSpec

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGILL") or os.name != "posix", reason="signals as exit statuses are POSIX"
)

FIX = "pip install --force-reinstall --no-cache-dir --no-deps -r requirements/llama-cpp.txt"


def child(code: str, marker: Path | None = None) -> list[str]:
    """A probe: Python running ``code``, after appending a line to ``marker``."""
    prefix = f"open({str(marker)!r}, 'a').write('ran\\n'); " if marker else ""
    return [sys.executable, "-c", prefix + code]


CRASH = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
PASS = "import json; print(json.dumps({'ok': True, 'detail': 'CPU: AVX2 FMA'}))"


def fake_library(folder: Path) -> Library:
    """The 'installed build': a shared library file whose size and mtime are its identity."""
    lib = folder / "lib" / "libengine.so"
    lib.parent.mkdir(parents=True, exist_ok=True)
    if not lib.exists():
        lib.write_bytes(b"\x7fELF build one")
    stat = lib.stat()
    return Library(name="fake-engine-lib", version="1.2.3", files=((str(lib), stat.st_size, stat.st_mtime_ns),))


def make_check(tmp_path: Path, argv: list[str], **kwargs) -> LibraryCheck:
    return LibraryCheck(
        engine="gguf",
        library=lambda: fake_library(tmp_path),
        argv=argv,
        fix=FIX,
        folder=tmp_path / "home" / "checks",
        **kwargs,
    )


def ran(marker: Path) -> int:
    return marker.read_text().count("ran") if marker.exists() else 0


def test_a_child_killed_by_sigill_makes_the_engine_unusable_with_the_fix(tmp_path) -> None:
    check = make_check(tmp_path, child(CRASH))
    result = check.result()
    assert (result.outcome, result.signal, result.usable) == ("crashed", "SIGILL", False)
    verdict = check()
    assert isinstance(verdict, EngineCheck) and not verdict.usable
    assert "fake-engine-lib 1.2.3 crashed with SIGILL (illegal instruction)" in verdict.summary
    assert verdict.fix == f"reinstall it with: {FIX}"
    stored = json.loads(next((tmp_path / "home" / "checks").glob("gguf-*.json")).read_text())
    assert stored["outcome"] == "crashed" and stored["signal"] == "SIGILL"


def test_the_result_is_remembered_under_the_home_per_build(tmp_path) -> None:
    marker = tmp_path / "runs.txt"
    assert make_check(tmp_path, child(CRASH, marker)).result().outcome == "crashed"
    assert ran(marker) == 1
    # a later process (a new check, a probe that would pass) reads the remembered result
    again = make_check(tmp_path, child(PASS, marker)).result()
    assert ran(marker) == 1 and again.remembered and again.outcome == "crashed"
    # the library is rebuilt: another file, so it is checked again
    lib = tmp_path / "lib" / "libengine.so"
    lib.write_bytes(b"\x7fELF build two, rebuilt")
    rebuilt = make_check(tmp_path, child(PASS, marker)).result()
    assert ran(marker) == 2 and rebuilt.outcome == "passed" and rebuilt.usable
    assert rebuilt.detail == "CPU: AVX2 FMA"
    assert len(list((tmp_path / "home" / "checks").glob("gguf-*.json"))) == 2


def test_the_child_runs_once_per_check_however_often_it_is_asked(tmp_path) -> None:
    marker = tmp_path / "runs.txt"
    check = make_check(tmp_path, child(PASS, marker))
    assert [check().usable for _ in range(5)] == [True] * 5
    assert ran(marker) == 1


def test_an_error_exit_or_a_timeout_does_not_rule_the_engine_out(tmp_path) -> None:
    failed = make_check(tmp_path, child("import sys; sys.exit('llama_cpp: cannot load libggml.so')"))
    result = failed.result()
    assert result.outcome == "failed" and result.usable
    assert "cannot load libggml.so" in result.summary()
    slow = LibraryCheck(
        engine="slow",
        library=lambda: fake_library(tmp_path),
        argv=child("import time; time.sleep(30)"),
        fix=FIX,
        folder=tmp_path / "home" / "checks",
        timeout=0.5,
    )
    assert slow.result().outcome == "timed out" and slow().usable
    # neither is remembered: the next process asks again
    assert [p.name.split("-")[0] for p in (tmp_path / "home" / "checks").glob("*.json")] == []


def test_nothing_is_checked_when_the_library_is_not_installed(tmp_path) -> None:
    marker = tmp_path / "runs.txt"
    check = LibraryCheck(engine="gguf", library=lambda: None, argv=child(CRASH, marker), fix=FIX)
    assert check() is None and ran(marker) == 0


def test_installed_library_keys_on_version_and_shared_library_files(tmp_path, monkeypatch) -> None:
    package = tmp_path / "site" / "fakeenginelib"
    (package / "lib").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "lib" / "libfake.so").write_bytes(b"one")
    (package / "lib" / "libfake.so.1").write_bytes(b"one")
    (package / "README.txt").write_text("not a library")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    first = installed_library("fakeenginelib", "fakeenginelib")
    assert first is not None and first.version == "unknown"
    assert sorted(Path(f[0]).name for f in first.files) == ["libfake.so", "libfake.so.1"]
    (package / "lib" / "libfake.so").write_bytes(b"rebuilt")
    assert installed_library("fakeenginelib", "fakeenginelib").key != first.key
    assert installed_library("no_such_module_here", "nothing") is None


# -- selection ---------------------------------------------------------------------------


def crashing(tmp_path: Path, marker: Path | None = None) -> LibraryCheck:
    return make_check(tmp_path, child(CRASH, marker))


def specs(tmp_path: Path, box_gguf, box_jax, jax_available: bool = True) -> list[EngineSpec]:
    return [
        EngineSpec(name="gguf", formats={ModelFormat.GGUF}, factory=box_gguf, extra="gguf", check=crashing(tmp_path)),
        EngineSpec(
            name="jax",
            formats={ModelFormat.SAFETENSORS, ModelFormat.GGUF},
            factory=box_jax,
            available=lambda: jax_available,
            extra="jax",
        ),
    ]


def never():
    raise AssertionError("a crashing engine must not be built")


def test_auto_falls_back_and_says_so_once(tmp_path, caplog) -> None:
    registry = EngineRegistry(specs(tmp_path, never, FakeEngine))
    model = fake_model("smollm2:135m")
    with caplog.at_level(logging.WARNING, logger="modelport.engines"):
        assert registry.select(model).name == "jax"
        assert registry.select(model).name == "jax"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith("engine 'gguf' is not available: fake-engine-lib 1.2.3 crashed with SIGILL")
    assert f"reinstall it with: {FIX}; using engine 'jax' instead" in lines[0]


def test_an_explicit_engine_that_crashes_is_an_error_with_the_fix(tmp_path) -> None:
    registry = EngineRegistry(specs(tmp_path, never, FakeEngine))
    with pytest.raises(EngineUnavailable) as caught:
        registry.select(fake_model("smollm2:135m"), "gguf")
    assert "crashed with SIGILL" in str(caught.value) and caught.value.fix == f"reinstall it with: {FIX}"


def test_with_no_engine_to_fall_back_on_the_crash_is_the_error(tmp_path) -> None:
    registry = EngineRegistry(specs(tmp_path, never, never, jax_available=False))
    with pytest.raises(EngineUnavailable, match="crashed with SIGILL"):
        registry.select(fake_model("smollm2:135m"))


def test_an_engine_not_chosen_is_never_checked(tmp_path) -> None:
    marker = tmp_path / "runs.txt"
    registry = EngineRegistry(
        [
            EngineSpec(name="jax", formats={ModelFormat.GGUF}, factory=FakeEngine),
            EngineSpec(name="gguf", formats={ModelFormat.GGUF}, factory=never, check=crashing(tmp_path, marker)),
        ]
    )
    assert registry.select(fake_model("m")).name == "jax"
    assert ran(marker) == 0


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def crash_services(tmp_path, settings):
    return crash_app(tmp_path, settings.home)


def crash_app(tmp_path: Path, home: str):
    """The application with a gguf engine whose library crashes and a jax engine."""
    from modelport.entrypoints.config import Settings

    store = InMemoryModelStore([fake_model("smollm2:135m", aliases=("smollm2",))])
    return bootstrap(
        Settings(home=home),
        store=store,
        engines=specs(tmp_path, never, lambda: FakeEngine(reply="Paris.")),
        sessions=InMemorySessionRepository(),
    )


def run_cli(argv, services):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, services=services, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_run_answers_with_the_fallback_engine_and_says_why(crash_services, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="modelport.engines"):
        code, out, err = run_cli(["run", "smollm2", "What is the capital of France?"], crash_services)
    assert code == 0 and out.strip() and err == ""
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["engine 'gguf' is not available"]


def test_the_fallback_line_reaches_stderr_in_a_real_process(tmp_path) -> None:
    """Without pytest's log capture: the warning is printed on stderr, once."""
    script = (
        "import sys; sys.path.insert(0, {tests!r}); from pathlib import Path\n"
        "from unit.test_engine_selfcheck import crash_app\n"
        "from modelport.entrypoints import cli\n"
        "sys.exit(cli.main(['run', 'smollm2', 'hi'], services=crash_app(Path({tmp!r}), {home!r})))\n"
    ).format(tests=str(Path(__file__).parents[1]), tmp=str(tmp_path), home=str(tmp_path / "home"))
    import subprocess

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("engine 'gguf' is not available: fake-engine-lib 1.2.3 crashed with SIGILL")
    assert lines[0].endswith("using engine 'jax' instead")


def test_run_with_engine_gguf_fails_with_one_line_and_status_4(crash_services) -> None:
    code, out, err = run_cli(["run", "smollm2", "hi", "--engine", "gguf"], crash_services)
    assert code == cli.EXIT_ENGINE and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: engine 'gguf' is not available: fake-engine-lib 1.2.3 crashed with SIGILL")
    assert lines[0].endswith(f"reinstall it with: {FIX}")


def test_info_shows_each_engines_check(crash_services) -> None:
    code, out, _ = run_cli(["info"], crash_services)
    assert code == 0
    gguf = next(line for line in out.splitlines() if line.strip().startswith("engine gguf"))
    assert "unusable: fake-engine-lib 1.2.3 crashed with SIGILL" in gguf and FIX in gguf
    code, out, _ = run_cli(["info", "--json"], crash_services)
    engines = json.loads(out)["engines"]
    assert engines["gguf"]["check"]["usable"] is False
    assert engines["jax"]["check"] is None


def test_version_flag_prints_the_version() -> None:
    for argv in (["--version"], ["version"]):
        code, out, err = run_cli(argv, None)
        assert (code, err) == (0, "") and out.startswith("modelport ") and out.split()[1][0].isdigit()
