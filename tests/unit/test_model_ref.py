from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelport.domain import InvalidModelName, ModelRef

part = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_]|[._-][A-Za-z0-9_]){0,20}", fullmatch=True)
tag = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_]{0,15}", fullmatch=True)


@pytest.mark.parametrize(
    "text, repo, tag_, revision",
    [
        ("smollm2", "smollm2", None, None),
        ("smollm2:135m", "smollm2", "135m", None),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", None, None),
        ("bartowski/Llama-3.2-1B-GGUF:Q4_K_M", "bartowski/Llama-3.2-1B-GGUF", "Q4_K_M", None),
        ("org/name@main", "org/name", None, "main"),
        ("org/name:Q8_0@v1.0", "org/name", "Q8_0", "v1.0"),
        ("org/name@refs/pr/1:Q8_0", "org/name", "Q8_0", "refs/pr/1"),
    ],
)
def test_parses_every_form(text, repo, tag_, revision) -> None:
    ref = ModelRef.parse(text)
    assert (ref.repo_id, ref.tag, ref.revision) == (repo, tag_, revision)
    assert str(ref) == text or ModelRef.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["./model.gguf", "/models/llama", "~/m/x.gguf", "../up/model", "weights.gguf"])
def test_paths_are_kept_verbatim(text) -> None:
    ref = ModelRef.parse(text)
    assert ref.is_path and ref.path == text and str(ref) == text
    with pytest.raises(InvalidModelName):
        _ = ref.folder_name


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "a/../b",
        "org/..",
        "..",
        "a//b",
        "a/b/c",
        "a b",
        "a:b:c",
        "a--b/c",
        "org/na--me",
        ":tag",
        "name:",
        "name@",
        "-name",
        "org/.hidden",
        "na\\me",
        "name:ta g",
        "name@..",
        "org/name@a..b",
        "x" * 97,
    ],
)
def test_rejects_bad_names(text) -> None:
    if text == "..":
        assert ModelRef.parse(text).is_path  # '..' is a path, never a store name
        return
    with pytest.raises(InvalidModelName):
        ModelRef.parse(text)


def test_rejects_non_strings() -> None:
    with pytest.raises(InvalidModelName):
        ModelRef.parse(None)  # type: ignore[arg-type]


def test_folder_name_round_trip() -> None:
    ref = ModelRef.parse("HuggingFaceTB/SmolLM2-135M:Q4_1")
    assert ref.folder_name == "HuggingFaceTB--SmolLM2-135M"
    assert ModelRef.from_folder_name(ref.folder_name) == ref.untagged


@given(org=st.none() | part, name=part, tag_=st.none() | tag)
def test_parse_inverts_str(org, name, tag_) -> None:
    ref = ModelRef(org=org, name=name, tag=tag_)
    assert ModelRef.parse(str(ref)) == ref
    assert ModelRef.from_folder_name(ref.folder_name) == ref.untagged


@given(st.text(max_size=40))
def test_any_text_parses_or_fails_cleanly(text) -> None:
    try:
        ref = ModelRef.parse(text)
    except InvalidModelName as exc:
        assert str(exc)
        return
    if not ref.is_path:
        folder = ref.folder_name
        assert "/" not in folder and ".." not in folder and "\\" not in folder
        assert not folder.startswith((".", "-"))


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("smollm2", "smollm2:latest"),
        ("smollm2:135m", "smollm2:135m"),
        ("org/m@main", "org/m:latest"),
        ("org/m:Q4_K_M@v2", "org/m:Q4_K_M"),
    ],
)
def test_canonical_name(text, canonical) -> None:
    assert ModelRef.parse(text).canonical == canonical
