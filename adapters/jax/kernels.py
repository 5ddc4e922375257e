"""The native quantized matmul (``native/qmatmul.cc``) as an XLA FFI target.

XLA's CPU backend dequantizes an int8 or int4 matrix into a float copy before
every dot (see docs/engines-jax.md), so quantized weights cost it more than float
ones. The kernel here reads each weight byte once, in registers, for the few rows
of a decode step. It is compiled from source on first use, for the CPU it runs
on (``-march=native``), with the C++ compiler that building llama-cpp-python
already needs; the library is kept under ``<home>/cache/native/``, named by the
source, the compiler, jaxlib and the CPU's flags, so a home shared by two
different CPUs holds two builds and neither runs the other's instructions.

:func:`available` compiles (once per process) and registers the target, or says
why not; without it the layers fall back to XLA's dequantize-then-dot.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TARGET = "modelport_qmatmul"
SOURCE = Path(__file__).with_name("native") / "qmatmul.cc"
MAX_ROWS = 16  # x rows up to which the native kernel runs; above, XLA's dot on the dequantized copy wins
_lock = threading.Lock()
_state: dict[str, Any] = {}


def available(home: str) -> bool:
    """Whether the native kernel is registered with JAX (compiling it into
    ``<home>/cache/native`` the first time); False, with the reason logged once,
    when it cannot be (no compiler, a failed build, not x86-64 Linux)."""
    with _lock:
        if "ok" not in _state:
            try:
                library = _build(Path(home) / "cache" / "native")
                _register(library)
                _state["ok"] = True
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                _state["ok"] = False
                _state["why"] = str(exc)
                log.warning("the native quantized matmul is not available (%s); XLA's dot is used instead", exc)
        return bool(_state["ok"])


def why_not() -> str | None:
    """Why :func:`available` said False (None when it did not)."""
    return _state.get("why")


def qmatmul(x: Any, values: Any, scales: Any, offsets: Any, bits: int) -> Any:
    """x (M, K) float32 against the quantized rows (N, K): (M, N) float32.
    Call only after :func:`available` said True."""
    import jax
    import jax.numpy as jnp

    out = jax.ShapeDtypeStruct((x.shape[0], scales.shape[0]), jnp.float32)
    call = jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")
    return call(x.astype(jnp.float32), values, scales, scales if offsets is None else offsets, bits=int(bits))


def _register(library: Path) -> None:
    import jax

    handle = ctypes.cdll.LoadLibrary(str(library))
    _state["library"] = handle  # kept loaded for the life of the process
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handle.ModelportQMatmul), platform="cpu")


def _build(folder: Path) -> Path:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"built only for x86-64 Linux, this is {platform.system()} {platform.machine()}")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    import jax
    import jaxlib

    flags = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd"]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), version.encode(), " ".join(flags).encode()):
        key.update(part)
    key.update(jaxlib.__version__.encode())
    key.update(_cpu_flags().encode())
    library = folder / f"qmatmul-{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, prefix=".qmatmul-", suffix=".so")
    os.close(handle)
    try:
        command = [compiler, *flags, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", partial]
        built = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if built.returncode != 0:
            raise RuntimeError(f"{Path(compiler).name} failed: {built.stderr.strip()[-400:]}")
        os.replace(partial, library)  # whole or absent: another process may be building it too
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


def _cpu_flags() -> str:
    """The CPU's model and feature flags (what ``-march=native`` builds for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    lines = [line for line in text.splitlines() if line.startswith(("flags", "model name"))]
    return "\n".join(sorted(set(lines)))
