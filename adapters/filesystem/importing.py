"""Adding a model from files already on this machine: ``import`` (a GGUF file or a
Hugging Face folder, checked first) and ``copy`` (an installed model's files).
Either way the files are hard-linked into a scratch folder (copied where linking
is impossible) for the store to install."""

from __future__ import annotations

import json
import os

from modelport.domain import InvalidRequest, ModelFile, ModelInfo

from .describe import read_safetensors_header, weight_files
from .files import folder_files, link_or_copy, sha256_file
from .gguf_header import MAGIC, read_gguf_header


def import_sources(path: str) -> list[tuple[str, str]]:
    """(file on disk, its path in the model) for each file an import of ``path``
    adds; refuses what no engine could load, naming why."""
    source = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(source) and _starts_with_magic(source):
        read_gguf_header(source)  # refuse a damaged file now, not at load time
        base = os.path.basename(source)
        return [(source, base if base.lower().endswith(".gguf") else f"{base}.gguf")]
    if os.path.isdir(source) and os.path.isfile(os.path.join(source, "config.json")):
        _check_loadable_folder(source, path)
        return [(os.path.join(source, rel), rel) for rel in folder_files(source)]
    raise InvalidRequest(
        f"cannot import '{path}': expected a GGUF file or a Hugging Face model folder with a config.json"
    )


def link_hashed(sources: list[tuple[str, str]], folder: str) -> list[ModelFile]:
    """Link each source into ``folder``; the files with their size and sha256."""
    files = []
    for src, rel in sources:
        target = os.path.join(folder, rel)
        link_or_copy(src, target)
        files.append(ModelFile(path=rel, size=os.path.getsize(target), sha256=sha256_file(target)))
    return files


def link_model(info: ModelInfo, folder: str) -> None:
    """Link an installed model's files into ``folder`` (their sha256 are known)."""
    for file in info.files:
        link_or_copy(os.path.join(info.location, file.path), os.path.join(folder, file.path))


def _check_loadable_folder(folder: str, given: str) -> None:
    """Refuse a Hugging Face folder that no engine could load: config.json must be a
    JSON object naming its ``model_type``, and the weights must be safetensors files
    with a readable header."""
    what = f"cannot import '{given}'"
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{what}: config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InvalidRequest(f"{what}: config.json must be a JSON object with a 'model_type'")
    weights = weight_files(folder)
    if not weights:
        raise InvalidRequest(f"{what}: the folder has no .safetensors weights")
    for name in weights:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise InvalidRequest(f"{what}: the weights file '{name}' is missing")
        read_safetensors_header(path)


def _starts_with_magic(path: str) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC
