"""The one cache of GGUF conversions: converted once per home, whoever asks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from modelport.adapters.ggufconvert.cache import cache_root, converted_folder
from modelport.domain import ModelFormat, ModelRef
from modelport.entrypoints import bootstrap
from modelport.entrypoints.config import Settings


def _gguf(tmp_path: Path) -> str:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return str(path)


def _writer(calls: list[str]):
    def convert(gguf_path: str, folder: str) -> None:
        calls.append(gguf_path)
        time.sleep(0.05)  # long enough for the other threads to arrive while it runs
        (Path(folder) / "model.safetensors").write_bytes(b"")
        (Path(folder) / "config.json").write_text("{}")

    return convert


def test_concurrent_requests_convert_once_and_share_the_folder(tmp_path) -> None:
    gguf, calls, folders = _gguf(tmp_path), [], []
    root = str(tmp_path / "cache")
    threads = [
        threading.Thread(target=lambda: folders.append(converted_folder(gguf, root, _writer(calls)))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [gguf] and len(set(folders)) == 1
    assert sorted(os.listdir(root)) == [os.path.basename(folders[0])]  # no lock or scratch left


def test_a_changed_gguf_converts_again(tmp_path) -> None:
    gguf, calls = _gguf(tmp_path), []
    first = converted_folder(gguf, str(tmp_path / "cache"), _writer(calls))
    with open(gguf, "ab") as handle:
        handle.write(b"more")
    second = converted_folder(gguf, str(tmp_path / "cache"), _writer(calls))
    assert first != second and len(calls) == 2


def test_a_failed_conversion_leaves_nothing(tmp_path) -> None:
    def broken(gguf_path: str, folder: str) -> None:
        (Path(folder) / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        converted_folder(_gguf(tmp_path), str(tmp_path / "cache"), broken)
    assert os.listdir(tmp_path / "cache") == []


def test_the_store_of_a_home_converts_into_the_homes_one_cache(tmp_path, monkeypatch) -> None:
    """What bootstrap builds: the store's conversions (for MLX) land where the JAX
    engine looks (``<home>/cache/hf-from-gguf``), not in a second cache."""
    pytest.importorskip("safetensors")
    from support import tiny_llama

    monkeypatch.delenv("MODELPORT_MODELS_PATH", raising=False)
    # a tiny folder instead of dequantizing SmolLM2: this test is about where it goes
    monkeypatch.setattr(bootstrap, "_gguf_converter", lambda: lambda gguf, folder: tiny_llama.build(Path(folder)))
    settings = Settings.load(flags={"home": str(tmp_path / "home")}, dotenv=None)
    store = bootstrap.build_store(settings)
    smollm = store.resolve(ModelRef.parse("smollm2"))
    converted = store.materialize(smollm, ModelFormat.SAFETENSORS)
    assert os.path.dirname(converted.location) == cache_root(str(tmp_path / "home"))
    assert not os.path.exists(os.path.join(settings.models_dir, ".converted"))
