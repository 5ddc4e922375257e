"""Model management through main(argv): pull, search, verify, copy, remove, create
and the catalog, with a fake ModelSource over the in-memory store and over the real
filesystem store."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path

import pytest

from modelport.adapters.fake import InMemorySessionRepository, fake_model
from modelport.adapters.filesystem import FilesystemModelStore
from modelport.domain import DownloadError, ModelFile, ModelFormat, PullProgress, SearchHit
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.catalog import CATALOG, Budget, estimate, kv_cache_bytes
from modelport.entrypoints.cli import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from modelport.entrypoints.hardware import parse_meminfo, parse_nvidia_smi
from modelport.entrypoints.render import parse_size
from modelport.ports import EngineSpec


class FakeSource:
    """A ModelSource that writes a tiny Hugging Face folder, reporting progress as
    it goes, and answers searches from a fixed list."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.searches: list[tuple[str, dict]] = []

    def fetch(self, ref, folder, progress):
        files = {
            "config.json": json.dumps({"model_type": "llama", "hidden_size": 8}).encode(),
            "model.safetensors": safetensors({"w": [4, 8]}),
        }
        written = []
        for name, data in files.items():
            progress(PullProgress(status="pulling", file=name, completed=0, total=len(data)))
            if self.fail and name == "model.safetensors":
                raise DownloadError(f"the connection dropped while fetching {name}")
            Path(folder, name).write_bytes(data)
            progress(PullProgress(status="pulling", file=name, completed=len(data), total=len(data)))
            written.append(ModelFile(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
        return written

    def search(self, query, *, author=None, filter=None, sort="downloads", limit=20):
        self.searches.append((query, {"author": author, "filter": filter, "sort": sort, "limit": limit}))
        hits = [
            SearchHit(
                repo_id="org/tiny-llama-GGUF",
                downloads=1200,
                likes=7,
                pipeline_tag="text-generation",
                tags=("gguf", "llama"),
            ),
            SearchHit(repo_id="org/other", downloads=3),
        ]
        return hits[:limit]


def safetensors(tensors: dict[str, list[int]]) -> bytes:
    header, offset = {}, 0
    for name, shape in tensors.items():
        length = 4
        for dim in shape:
            length *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + bytes(offset)


def run(services, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), services=services, out=out, err=err, stdin=io.StringIO())
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def with_source(settings, fake_store, engine_box, source):
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    return bootstrap(settings, store=fake_store, engines=[spec], source=source, sessions=InMemorySessionRepository())


@pytest.fixture
def on_disk(tmp_path, engine_box, source, settings):
    """The real filesystem store (no bundled models) with the fake source."""
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    store = FilesystemModelStore(tmp_path / "models", bundled=())
    return bootstrap(settings, store=store, engines=[spec], source=source, sessions=InMemorySessionRepository())


# -- pull and search ------------------------------------------------------------------------


def test_pull_reports_progress_and_installs_the_model(with_source) -> None:
    code, out, err = run(with_source, "pull", "org/tiny")
    assert code == EXIT_OK and out.startswith("pulled org/tiny (249 B)")
    lines = err.splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert "pulling config.json (" in err and "model.safetensors: done" in err
    _, out, _ = run(with_source, "list")
    assert "org/tiny " in out


def test_download_is_pull_and_json_describes_the_model(on_disk) -> None:
    code, out, _ = run(on_disk, "download", "org/tiny:v1", "--json")
    info = json.loads(out)
    assert code == EXIT_OK and info["name"] == "org/tiny:v1" and info["format"] == "safetensors"
    assert info["size"] == len(safetensors({"w": [4, 8]})) + len(json.dumps({"model_type": "llama", "hidden_size": 8}))


def test_a_failed_pull_installs_nothing(settings, engine_box, tmp_path) -> None:
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=engine_box)
    store = FilesystemModelStore(tmp_path / "models", bundled=())
    services = bootstrap(settings, store=store, engines=[spec], source=FakeSource(fail=True))
    code, _, err = run(services, "pull", "org/tiny")
    assert code == EXIT_ERROR and "error: the connection dropped" in err
    assert run(services, "list", "--json")[1].strip() == "[]"
    # only the resumable pull folder (and its lock) is left, under .staging, unlisted
    assert sorted(os.listdir(tmp_path / "models" / ".staging")) == ["org--tiny.pull", "org--tiny.pull.lock"]


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["pull", "./local.gguf"], EXIT_USAGE, "is a local path; use create"),
        (["pull", "org//x"], EXIT_USAGE, "invalid model name"),
    ],
)
def test_pull_refuses_what_it_cannot_pull(with_source, argv, code, message) -> None:
    status, _, err = run(with_source, *argv)
    assert status == code and message in err


def test_search_prints_a_table_and_passes_the_filters(with_source, source) -> None:
    code, out, _ = run(
        with_source, "search", "tiny", "llama", "--author", "org", "--filter", "gguf", "--sort", "likes", "--limit", "1"
    )
    assert code == EXIT_OK and out.splitlines()[0].split() == ["MODEL", "DOWNLOADS", "LIKES", "TASK", "TAGS"]
    assert "org/tiny-llama-GGUF" in out and "org/other" not in out
    assert source.searches == [("tiny llama", {"author": "org", "filter": "gguf", "sort": "likes", "limit": 1})]
    code, out, _ = run(with_source, "search", "tiny", "--json")
    assert [hit["id"] for hit in json.loads(out)] == ["org/tiny-llama-GGUF", "org/other"]
    code, _, err = run(with_source, "search", "tiny", "--limit", "0")
    assert code == EXIT_USAGE and "--limit must be at least 1" in err


# -- verify, copy, remove, create -----------------------------------------------------------


def test_verify_copy_and_remove_on_the_real_store(on_disk, tmp_path) -> None:
    run(on_disk, "pull", "org/tiny")
    code, out, _ = run(on_disk, "verify", "org/tiny")
    assert code == EXIT_OK and out.count(" ok ") == 2
    code, out, _ = run(on_disk, "cp", "org/tiny", "mine", "--json")
    assert code == EXIT_OK and json.loads(out)["name"] == "mine:latest"
    weights = tmp_path / "models" / "org--tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))  # the copy shared the file, so it is damaged too
    code, out, err = run(on_disk, "verify", "mine", "--json")
    report = json.loads(out)
    assert code == EXIT_ERROR and report["ok"] is False
    assert [f["path"] for f in report["files"] if not f["ok"]] == ["model.safetensors"]
    assert "1 of 2 files of mine:latest failed verification" in err
    code, out, err = run(on_disk, "rm", "mine", "ghost", "org/tiny")
    assert code == EXIT_NOT_FOUND and "deleted 'mine'" in out and "deleted 'org/tiny'" in out
    assert "model 'ghost' not found" in err
    assert json.loads(run(on_disk, "list", "--json")[1]) == []


def test_copy_and_remove_on_the_fake_store(services, fake_store) -> None:
    code, out, _ = run(services, "copy", "fake", "other")
    assert code == EXIT_OK and out == "copied 'fake' to 'other'\n" and "other:latest" in fake_store.models
    code, out, _ = run(services, "remove", "other", "--json")
    assert json.loads(out) == {"deleted": ["other"]} and "other:latest" not in fake_store.models
    fake_store.add(fake_model("bundled:latest", read_only=True))
    code, _, err = run(services, "rm", "bundled")
    assert code == EXIT_ERROR and "cannot be removed" in err


def test_create_imports_a_local_folder(on_disk, tmp_path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (folder / "model.safetensors").write_bytes(safetensors({"w": [2, 8]}))
    code, out, _ = run(on_disk, "create", "local-model", str(folder))
    assert code == EXIT_OK and out.startswith(f"created 'local-model:latest' from {folder}")
    code, out, _ = run(on_disk, "verify", "local-model")
    assert code == EXIT_OK
    code, out, _ = run(on_disk, "create", "local-model", str(folder))  # replaced, as Ollama's create does
    assert code == EXIT_OK and out.startswith("created 'local-model:latest'")
    code, _, err = run(on_disk, "create", "x", str(tmp_path / "absent"))
    assert code == EXIT_USAGE and "no such file or folder" in err
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run(on_disk, "create", "x", str(tmp_path / "notes.txt"))
    assert code == EXIT_USAGE and "expected a GGUF file" in err


def test_create_from_a_modelfile(on_disk, tmp_path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    (folder / "model.safetensors").write_bytes(safetensors({"w": [2, 8]}))
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM ./hf\nSYSTEM """Be brief."""\nPARAMETER temperature 0.1\nPARAMETER stop END\n')
    code, out, err = run(on_disk, "create", "brief", "-f", str(modelfile))
    assert code == EXIT_OK and out.startswith("created 'brief:latest' from ./hf"), err
    info = on_disk.show("brief")
    assert info.defaults.system == "Be brief." and dict(info.default_options)["temperature"] == 0.1
    assert on_disk.sampling_for("brief").stop == ("END",)
    modelfile.write_text("FROM brief\nSYSTEM Shorter.\n")
    code, _, _ = run(on_disk, "create", "shorter", "--file", str(modelfile))
    shorter = on_disk.show("shorter")
    assert code == EXIT_OK and shorter.defaults.system == "Shorter." and shorter.files == info.files
    assert on_disk.sampling_for("shorter").temperature == 0.1
    modelfile.write_text("FROM brief\nADAPTER ./lora.gguf\n")
    code, _, err = run(on_disk, "create", "x", "-f", str(modelfile))
    assert code == EXIT_USAGE and "ADAPTER" in err
    code, _, err = run(on_disk, "create", "x", "-f", str(tmp_path / "absent"))
    assert code == EXIT_USAGE and "cannot read the Modelfile" in err


# -- the catalog --------------------------------------------------------------------------


def test_catalog_lists_what_fits_in_the_memory_given(services) -> None:
    code, out, _ = run(services, "catalog", "--memory", "1GB")
    assert code == EXIT_OK and "1.0 GB (--memory)" in out
    names = [line.split()[0] for line in out.splitlines()[3:] if line and not line.startswith(" ")]
    assert "smollm2:135m" in names and "llama3.1:8b" not in names
    assert "more do not fit; --all lists them" in out
    code, out, _ = run(services, "catalog", "--memory", "1GB", "--all")
    rows = {line.split()[0]: line for line in out.splitlines()[3:] if line.strip()}
    assert "  no  " in rows["llama3.1:8b"] and "  yes  " in rows["smollm2:135m"]
    assert "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF:Q4_K_M" in rows["llama3.1:8b"]


def test_catalog_json_marks_installed_models_and_scales_with_the_context(services, fake_store) -> None:
    fake_store.add(fake_model("Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"))
    small = json.loads(run(services, "catalog", "--json", "--all", "--memory", "64GB", "--num-ctx", "2048")[1])
    large = json.loads(run(services, "catalog", "--json", "--all", "--memory", "64GB", "--num-ctx", "8192")[1])
    by_name = {m["name"]: m for m in small["models"]}
    assert by_name["qwen2.5:0.5b"]["installed"] is True and by_name["qwen2.5:1.5b"]["installed"] is False
    assert by_name["qwen2.5:0.5b"]["pull"] == "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    assert small["budget"]["given"] == 64 * 10**9 and small["num_ctx"] == 2048
    bigger = {m["name"]: m["memory"] for m in large["models"]}
    assert all(bigger[m["name"]] >= m["memory"] for m in small["models"])
    assert bigger["llama3.1:8b"] > by_name["llama3.1:8b"]["memory"]


def test_catalog_detects_this_machines_memory(services) -> None:
    code, out, _ = run(services, "catalog", "--json")
    budget = json.loads(out)["budget"]
    meminfo = Path("/proc/meminfo").read_text()
    assert code == EXIT_OK and budget["ram"] == parse_meminfo(meminfo).total


def test_catalog_refuses_a_size_it_cannot_read(services) -> None:
    code, _, err = run(services, "catalog", "--memory", "lots")
    assert code == EXIT_USAGE and "not a memory size" in err


def test_memory_estimate_is_weights_plus_kv_cache_plus_a_tenth() -> None:
    llama = next(e for e in CATALOG if e.name == "llama3.1:8b")
    # 2 x 32 layers x 8 KV heads x 128 x 4096 tokens x 2 bytes = 512 MiB
    assert llama.kv_cache_bytes(4096) == kv_cache_bytes(32, 8, 128, 4096) == 512 * 2**20
    assert llama.weights_bytes == int(8.03e9 * 5.0 / 8)
    assert llama.memory_bytes(4096) == estimate(llama.weights_bytes, 512 * 2**20)
    smol = next(e for e in CATALOG if e.name == "smollm2:135m")
    assert smol.kv_cache_bytes(100_000) == smol.kv_cache_bytes(8192)  # capped at its context
    assert Budget(ram=10, vram=5).place(4) == "gpu" and Budget(ram=10, vram=5).place(6) == "cpu"
    assert Budget(ram=10).place(11) == "no" and Budget(given=3).place(3) == "yes"


def test_every_catalog_entry_names_what_to_pull() -> None:
    for entry in CATALOG:
        assert entry.bundled or "/" in entry.source, entry.name
        assert entry.kind == "embedding" or entry.layers * entry.kv_heads * entry.head_dim > 0, entry.name
    assert len({e.name for e in CATALOG}) == len(CATALOG)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("24GB", 24 * 10**9),
        ("24G", 24 * 10**9),
        ("16 GiB", 16 * 2**30),
        ("512MB", 512 * 10**6),
        ("1.5t", int(1.5 * 10**12)),
        ("8", 8 * 10**9),
    ],
)
def test_memory_sizes(text, expected) -> None:
    assert parse_size(text) == expected


def test_hardware_parsers() -> None:
    memory = parse_meminfo("MemTotal:       32768000 kB\nMemFree: 1 kB\nMemAvailable:   16384000 kB\n")
    assert memory.total == 32768000 * 1024 and memory.available == 16384000 * 1024
    assert parse_meminfo("nothing here") is None
    # The first line is what nvidia-smi printed on an H100 machine for this query.
    gpus = parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559, 81079\n1, NVIDIA A10, 23028, [N/A]\ngarbage\n")
    assert [(g.index, g.name, g.total // 2**20, g.free) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 81559, 81079 * 2**20),
        (1, "NVIDIA A10", 23028, None),
    ]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pull_on_a_terminal_draws_progress_bars(with_source) -> None:
    out, err = io.StringIO(), Tty()
    code = main(["pull", "org/tiny"], services=with_source, out=out, err=err, stdin=io.StringIO())
    drawn = err.getvalue()
    assert code == EXIT_OK and "\x1b[" in drawn
    assert "pulling model.safetensors" in drawn and "success" in drawn and "━" in drawn
