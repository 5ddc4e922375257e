"""Pulling from a Hub look-alike on 127.0.0.1 with the real huggingface_hub client:
file selection, progress, digests, resume, retries, errors and the store's side."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Iterator

import pytest

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.hub import HubModelSource, RetryPolicy
from modelport.domain import (
    DownloadError,
    InvalidRequest,
    ModelFormat,
    ModelNotFound,
    ModelRef,
    PullProgress,
)
from modelport.ports import EngineRegistry, Services
from support.hubserver import HubServer
from support.modelfiles import gguf_bytes, gguf_with_data, safetensors_bytes

MIB = 1 << 20
BIG = 3 * MIB
FAST_RETRY = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.05)
README = b"---\nlicense: mit\n---\n# Tiny\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(tmp_path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as server:
        yield server


@pytest.fixture
def store(tmp_path) -> FilesystemModelStore:
    return FilesystemModelStore(tmp_path / "models", bundled=())


def services_for(store, hub: HubServer, token: str | bool | None = False, **kwargs) -> Services:
    source = HubModelSource(hub.url, token=token, retry=kwargs.pop("retry", FAST_RETRY), **kwargs)
    return Services(store=store, engines=EngineRegistry([]), source=source)


@pytest.fixture
def services(store, hub) -> Services:
    return services_for(store, hub)


class Recorder(list):
    def __call__(self, event: PullProgress) -> None:
        self.append(event)

    @property
    def statuses(self) -> list[str]:
        return [e.status for e in self]

    def of(self, file: str) -> list[PullProgress]:
        return [e for e in self if e.file == file]


GGUF_FILES = {
    "README.md": README,
    ".gitattributes": b"*.gguf filter=lfs\n",
    "tiny-Q4_K_M.gguf": gguf_with_data(BIG, seed=1, file_type=15),
    "tiny-Q8_0.gguf": gguf_with_data(MIB, seed=2, file_type=7),
    "tiny-F16.gguf": gguf_with_data(MIB, seed=3, file_type=1),
    "mmproj-tiny-f16.gguf": gguf_bytes(),
}


def add_gguf_repo(hub: HubServer, repo_id: str = "org/tiny-GGUF", **fields) -> dict[str, bytes]:
    hub.add_repo(repo_id, GGUF_FILES, **fields)
    return GGUF_FILES


def installed(store: FilesystemModelStore) -> list[str]:
    return sorted(m.name for m in store.list())


def cdn_bytes(hub: HubServer, file: str) -> int:
    return sum(e.sent for e in hub.requests(server="cdn", method="GET", file=file))


# -- GGUF repositories -------------------------------------------------------------------------


def test_a_gguf_repo_pulls_the_default_quantization_and_says_what_else_exists(services, store, hub) -> None:
    files = add_gguf_repo(hub)
    progress = Recorder()
    info = services.pull("org/tiny-GGUF", progress)

    assert info.name == "org/tiny-GGUF:latest" and info.format is ModelFormat.GGUF
    assert info.primary_file == "tiny-Q4_K_M.gguf" and info.quantization == "Q4_K_M"
    assert {f.path: f.sha256 for f in info.files} == {
        "tiny-Q4_K_M.gguf": sha256(files["tiny-Q4_K_M.gguf"]),
        "README.md": sha256(README),
    }
    assert sorted(os.listdir(info.location)) == ["README.md", "tiny-Q4_K_M.gguf"]
    assert installed(store) == ["org/tiny-GGUF:latest"]
    usage = services.disk_usage()
    assert usage.by_model == (("org/tiny-GGUF:latest", BIG + len(README)),) and usage.partial == 0

    statuses = progress.statuses
    assert statuses[0] == "pulling manifest" and statuses[-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert statuses[1] == ("using Q4_K_M (available: Q4_K_M, Q8_0, F16; pull org/tiny-GGUF:<quantization> for another)")
    weights = progress.of("tiny-Q4_K_M.gguf")
    digest = sha256(files["tiny-Q4_K_M.gguf"])
    assert {(e.status, e.digest, e.total) for e in weights} == {(f"pulling {digest[:12]}", f"sha256:{digest}", BIG)}
    assert weights[-1].completed == BIG and [e.completed for e in weights] == sorted(e.completed for e in weights)

    fetched = {e.path.rsplit("/", 1)[-1] for e in hub.requests(method="GET")}
    assert not any(name in fetched for name in ("tiny-Q8_0.gguf", "tiny-F16.gguf", "mmproj-tiny-f16.gguf"))
    assert cdn_bytes(hub, "tiny-Q4_K_M.gguf") == BIG

    report = services.verify("org/tiny-GGUF")
    assert report.ok and {c.source for c in report.checks} == {
        f"sha256:{digest}",
        "git-sha1:" + hashlib.sha1(b"blob %d\0" % len(README) + README).hexdigest(),
    }


def test_a_tag_picks_its_quantization_and_an_unknown_one_lists_the_others(services, store, hub) -> None:
    files = add_gguf_repo(hub)
    info = services.pull("org/tiny-GGUF:q8_0")
    assert info.name == "org/tiny-GGUF:q8_0" and os.path.basename(info.location) == "org--tiny-GGUF+q8_0"
    assert info.primary_file == "tiny-Q8_0.gguf" and info.quantization == "Q8_0"
    assert info.files[0].sha256 == sha256(files["tiny-Q8_0.gguf"])
    assert store.resolve(ModelRef.parse("org/tiny-GGUF:Q8_0")).name == "org/tiny-GGUF:q8_0"

    with pytest.raises(ModelNotFound, match="has no 'Q2_K' file; available: Q4_K_M, Q8_0, F16"):
        services.pull("org/tiny-GGUF:Q2_K")
    assert installed(store) == ["org/tiny-GGUF:q8_0"]


def test_a_split_gguf_pulls_every_shard_and_loads_the_first(services, hub) -> None:
    shards = {f"Q4_K_M/big-Q4_K_M-0000{i}-of-00002.gguf": gguf_with_data(MIB, seed=i) for i in (1, 2)}
    hub.add_repo("org/big-GGUF", {**shards, "Q8_0/big-Q8_0.gguf": gguf_bytes()})
    info = services.pull("org/big-GGUF")
    assert sorted(f.path for f in info.files) == sorted(shards)
    assert info.primary_file == "Q4_K_M/big-Q4_K_M-00001-of-00002.gguf"


# -- Hugging Face folders ---------------------------------------------------------------------


def test_an_hf_repo_skips_other_frameworks_copies_of_the_weights(services, hub) -> None:
    config = {"model_type": "llama", "max_position_embeddings": 64, "hidden_size": 8}
    template = {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}
    weights = safetensors_bytes({"embed.weight": ("F16", [16, 8])})
    hub.add_repo(
        "org/tiny-hf",
        {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": weights,
            "tokenizer.json": b"{}",
            "tokenizer_config.json": json.dumps(template).encode(),
            "generation_config.json": json.dumps({"temperature": 0.6}).encode(),
            "README.md": README,
            "1_Pooling/config.json": b"{}",
            "pytorch_model.bin": b"pickle" * 100,
            "tf_model.h5": b"h5" * 100,
            "flax_model.msgpack": b"m" * 100,
            "onnx/model.onnx": b"onnx" * 100,
            "original/consolidated.00.pth": b"pth" * 100,
            "modeling_tiny.py": b"import os\n",
            "training_args.bin": b"x",
            "tiny-Q4_0.gguf": gguf_bytes(),
        },
    )
    info = services.pull("org/tiny-hf")
    assert sorted(f.path for f in info.files) == [
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (info.format, info.primary_file, info.architecture) == (ModelFormat.SAFETENSORS, "config.json", "llama")
    assert info.chat_template == template["chat_template"] and info.license == "mit"
    assert dict(info.default_options) == {"temperature": 0.6}
    assert services.verify("org/tiny-hf").ok

    hub.add_repo("org/plain-hf", {"config.json": b"{}", "model.safetensors": weights})
    with pytest.raises(InvalidRequest, match="holds no GGUF files, so ':Q4_0' cannot pick"):
        services.pull("org/plain-hf:Q4_0")
    hub.add_repo("org/nothing", {"README.md": README})
    with pytest.raises(InvalidRequest, match="neither GGUF files nor a config.json"):
        services.pull("org/nothing")


def test_a_revision_pins_the_files_of_that_commit(services, hub) -> None:
    old = hub.add_repo("org/rev-GGUF", {"m-Q4_0.gguf": gguf_with_data(1000, seed=1)}, revision="v1")
    hub.add_repo("org/rev-GGUF", {"m-Q4_0.gguf": gguf_with_data(1000, seed=2)}, revision="main")
    info = services.pull("org/rev-GGUF@v1")
    assert info.files[0].sha256 == sha256(gguf_with_data(1000, seed=1))
    assert any(f"/resolve/{old}/" in e.path for e in hub.requests(method="HEAD"))
    with pytest.raises(ModelNotFound, match="'org/rev-GGUF' has no revision 'v9'"):
        services.pull("org/rev-GGUF@v9")


def test_pulling_again_fetches_only_what_changed(services, store, hub) -> None:
    files = add_gguf_repo(hub)
    services.pull("org/tiny-GGUF")
    first = store.resolve(ModelRef.parse("org/tiny-GGUF"))
    requests_before = len(hub.requests(method="GET"))
    again = services.pull("org/tiny-GGUF")  # up to date: only the model info is fetched
    assert len(hub.requests(method="GET")) == requests_before + 1
    assert again.files == first.files

    hub.add_repo("org/tiny-GGUF", {**files, "README.md": README + b"\nNew card.\n"})
    updated = services.pull("org/tiny-GGUF")
    assert cdn_bytes(hub, "tiny-Q4_K_M.gguf") == BIG  # the weights were not fetched again
    assert {f.path: f.sha256 for f in updated.files}["README.md"] == sha256(README + b"\nNew card.\n")
    assert services.verify("org/tiny-GGUF").ok and installed(store) == ["org/tiny-GGUF:latest"]


def test_a_bundled_name_needs_no_pull(tmp_path, hub) -> None:
    store = FilesystemModelStore(tmp_path / "models")  # with the real bundled models
    progress = Recorder()
    info = services_for(store, hub).pull("smollm2", progress)
    assert info.read_only and info.name == "smollm2:135m"
    assert progress.statuses == ["success"] and hub.log == []


# -- interruptions ----------------------------------------------------------------------------


def test_a_dropped_connection_resumes_with_a_range_request(services, hub) -> None:
    files = add_gguf_repo(hub)
    hub.faults.abort_after["tiny-Q4_K_M.gguf"] = [MIB, 2 * MIB - 100]
    info = services.pull("org/tiny-GGUF")
    gets = hub.requests(server="cdn", method="GET", file="tiny-Q4_K_M.gguf")
    assert [e.range for e in gets] == [None, f"bytes={MIB}-", f"bytes={3 * MIB - 100}-"]
    assert [e.sent for e in gets] == [MIB, 2 * MIB - 100, 100]
    assert info.files[0].sha256 == sha256(files["tiny-Q4_K_M.gguf"])


def test_server_errors_are_retried_with_backoff_then_reported(store, hub) -> None:
    add_gguf_repo(hub)
    waits: list[float] = []
    services = services_for(store, hub, retry=RetryPolicy(attempts=3, first_delay=0.5), sleep=waits.append)
    hub.faults.status["tiny-Q4_K_M.gguf"] = [503, 502]
    services.pull("org/tiny-GGUF")
    assert waits == [0.5, 1.0]  # doubling

    hub.faults.status["tiny-Q8_0.gguf"] = [503, 503, 503]
    with pytest.raises(DownloadError, match="answered 503 for 'tiny-Q8_0.gguf' of 'org/tiny-GGUF'; pull again"):
        services.pull("org/tiny-GGUF:Q8_0")
    assert installed(store) == ["org/tiny-GGUF:latest"]


def test_a_file_that_does_not_match_the_hubs_digest_is_refused(services, store, hub) -> None:
    add_gguf_repo(hub)
    hub.faults.corrupt.add("tiny-Q4_K_M.gguf")
    with pytest.raises(DownloadError, match="does not match the Hub's digest.*serves a damaged file"):
        services.pull("org/tiny-GGUF")
    assert installed(store) == []
    assert len(hub.requests(server="cdn", method="GET")) == 2  # one more try, from the start


def test_two_pulls_of_one_model_at_once_fetch_it_once(services, store, hub) -> None:
    add_gguf_repo(hub)
    results, errors = [], []

    def pull() -> None:
        try:
            results.append(services.pull("org/tiny-GGUF"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(results) == 2
    assert installed(store) == ["org/tiny-GGUF:latest"] and services.verify("org/tiny-GGUF").ok
    assert cdn_bytes(hub, "tiny-Q4_K_M.gguf") == BIG
    assert os.listdir(os.path.join(store.root, ".staging")) == []


# -- errors -----------------------------------------------------------------------------------


def test_a_missing_repo_or_private_one_says_how_to_get_in(services, store, hub, tmp_path) -> None:
    with pytest.raises(ModelNotFound, match="no repository 'org/nope' on http://127.*set HF_TOKEN"):
        services.pull("org/nope")
    hub.add_repo("org/secret", {"m-Q4_0.gguf": gguf_bytes()}, private=True)
    with pytest.raises(ModelNotFound, match="if it is private, set HF_TOKEN"):
        services.pull("org/secret")
    hub.tokens["reader"] = {"org/secret"}
    assert services_for(store, hub, token="reader").pull("org/secret").name == "org/secret:latest"
    with pytest.raises(DownloadError, match=r"refused the credentials \(401\): check HF_TOKEN"):
        services_for(store, hub, token="expired").pull("org/secret")


def test_a_gated_repo_asks_for_a_token_then_for_access(services, store, hub, monkeypatch) -> None:
    add_gguf_repo(hub, "org/gated-GGUF", gated=True)
    with pytest.raises(DownloadError, match="gated model: sign in.*accept its conditions.*set HF_TOKEN"):
        services.pull("org/gated-GGUF")
    hub.tokens.update({"no-access": set(), "granted": {"org/gated-GGUF"}})
    no_access = r"has no access to it yet: request access at http://127[^ ]*/org/gated-GGUF"
    with pytest.raises(DownloadError, match=no_access):
        services_for(store, hub, token="no-access").pull("org/gated-GGUF")
    assert installed(store) == []

    monkeypatch.setenv("HF_TOKEN", "granted")  # the token comes from the environment
    info = services_for(store, hub, token=None).pull("org/gated-GGUF")
    assert info.name == "org/gated-GGUF:latest"
    granted = [e for e in hub.requests(file="tiny-Q4_K_M.gguf") if e.status in (200, 302)]
    assert {(e.server, e.authorized) for e in granted} == {("hub", True), ("cdn", False)}  # no token to the CDN


def test_network_down_disk_full_and_a_bad_mirror_are_clear(store, hub, tmp_path) -> None:
    closed = HubServer(tmp_path / "gone")
    with closed:
        url = closed.url
    services = Services(
        store=store, engines=EngineRegistry([]), source=HubModelSource(url, token=False, retry=FAST_RETRY)
    )
    with pytest.raises(DownloadError, match=f"cannot reach {url} .*check the network connection"):
        services.pull("org/tiny-GGUF")

    hub.add_repo("org/huge-GGUF", {"m-Q4_0.gguf": gguf_bytes()}, advertised_sizes={"m-Q4_0.gguf": 1 << 60})
    too_big = r"no space left for 'org/huge-GGUF': it needs 1152921\.5 TB more but .* free"
    with pytest.raises(DownloadError, match=too_big):
        services_for(store, hub).pull("org/huge-GGUF")
    assert hub.requests(server="cdn") == []

    bad = Services(store=store, engines=EngineRegistry([]), source=HubModelSource("ftp://mirror"))
    with pytest.raises(InvalidRequest, match="must be an http\\(s\\) URL.*MODELPORT_MIRROR"):
        bad.pull("org/tiny-GGUF")
    assert installed(store) == []
