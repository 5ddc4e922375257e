"""Which files a pull fetches: pure functions over a repository's file list."""

from __future__ import annotations

import pytest

from modelport.adapters.hub import RemoteFile, quantization_of, select_files
from modelport.domain import InvalidRequest, ModelNotFound, ModelRef


def files(*paths: str, sizes: dict[str, int] | None = None) -> list[RemoteFile]:
    return [RemoteFile(path=p, size=(sizes or {}).get(p, 10), blob_id="0" * 40) for p in paths]


def chosen(name: str, *paths: str, **kwargs) -> list[str]:
    return [f.path for f in select_files(ModelRef.parse(name), files(*paths, **kwargs)).files]


@pytest.mark.parametrize(
    "path, label",
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Q4_K_M/model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        ("Q8_0/Qwen-00001-of-00003.gguf", "Q8_0"),
        ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("gemma-3-270m-it-IQ4_XS.gguf", "IQ4_XS"),
        ("Llama-3.2-1B-Instruct-bf16.gguf", "BF16"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("Qwen2-7B.gguf", None),
        ("model.gguf", None),
    ],
)
def test_reads_the_quantization_from_the_file_name(path, label) -> None:
    assert quantization_of(path) == label


def test_the_default_quantization_follows_the_preferences_then_the_smallest() -> None:
    assert chosen("o/m", "m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-Q2_K.gguf") == ["m-Q4_K_M.gguf"]
    assert chosen("o/m", "m-Q8_0.gguf", "m-F16.gguf") == ["m-Q8_0.gguf"]
    sizes = {"a-weird1.gguf": 30, "b-weird2.gguf": 20}
    assert chosen("o/m", "a-weird1.gguf", "b-weird2.gguf", sizes=sizes) == ["b-weird2.gguf"]
    selection = select_files(ModelRef.parse("o/m"), files("m-Q4_0.gguf", "README.md", "LICENSE", "notes.txt"))
    assert [f.path for f in selection.files] == ["m-Q4_0.gguf", "README.md", "LICENSE"]
    assert selection.note == "using Q4_0, the only quantization"


def test_a_tag_matches_a_label_in_any_case_or_after_a_prefix() -> None:
    paths = ("m-UD-Q4_K_XL.gguf", "m-Q8_0.gguf", "plain.gguf")
    assert chosen("o/m:q8_0", *paths) == ["m-Q8_0.gguf"]
    assert chosen("o/m:Q4_K_XL", *paths) == ["m-UD-Q4_K_XL.gguf"]
    assert chosen("o/m:plain", *paths) == ["plain.gguf"]
    with pytest.raises(ModelNotFound, match="available: Q8_0, UD-Q4_K_XL, plain"):
        chosen("o/m:Q5_K_M", *paths)


def test_a_repo_with_both_formats_is_a_folder_unless_a_tag_asks_for_gguf() -> None:
    paths = ("config.json", "model.safetensors", "m-Q4_K_M.gguf")
    assert chosen("o/m", *paths) == ["config.json", "model.safetensors"]
    assert chosen("o/m:latest", *paths) == ["config.json", "model.safetensors"]
    assert chosen("o/m:Q4_K_M", *paths) == ["m-Q4_K_M.gguf"]
    # a GGUF repository with a config.json beside (no weights of its own) stays GGUF
    assert chosen("o/m", "config.json", "m-Q4_K_M.gguf", "m-Q8_0.gguf") == ["m-Q4_K_M.gguf"]


def test_a_folder_keeps_pytorch_weights_only_where_there_are_no_safetensors() -> None:
    assert chosen(
        "o/m",
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "2_Dense/pytorch_model.bin",
        "2_Dense/config.json",
        "optimizer.pt",
        "consolidated.safetensors",
        "coreml/model.mlmodel",
        "openvino/model.xml",
    ) == ["2_Dense/config.json", "2_Dense/pytorch_model.bin", "config.json", "model.safetensors"]


def test_names_that_would_leave_the_folder_are_never_fetched() -> None:
    assert chosen(
        "o/m",
        "m-Q4_0.gguf",
        "../evil-Q4_0.gguf",
        "/abs-Q4_0.gguf",
        "a//b-Q4_0.gguf",
        "x\\y-Q4_0.gguf",
        ".cache/m-Q4_0.gguf",
    ) == ["m-Q4_0.gguf"]
    with pytest.raises(InvalidRequest, match="neither GGUF files nor a config.json"):
        chosen("o/m", "../config.json")
