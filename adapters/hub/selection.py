"""Which files of a Hub repository a pull fetches. Pure functions over the file list.

A GGUF repository holds one model in many quantizations: ``org/name:Q4_K_M`` fetches
the files of that one (every shard of a split GGUF), and no tag picks a sensible
default. Any other repository is fetched as a Hugging Face folder, without the
redundant copies of its weights in other frameworks' formats.
"""

from __future__ import annotations

import posixpath
import re
from typing import Iterable

import attrs

from modelport.domain import DEFAULT_TAG, InvalidRequest, ModelNotFound, ModelRef

# Quantization labels as llama.cpp and the usual GGUF publishers spell them in file
# names: Q4_K_M, IQ4_XS, Q8_0, UD-Q4_K_XL, BF16, F16, ...
_QUANT = re.compile(
    r"(?:^|[-._/])((?:UD-)?(?:I?Q\d+(?:_[A-Z0-9]+)*|BF16|FP16|FP32|F16|F32|MXFP4(?:_MOE)?))(?=$|[-._/])",
    re.IGNORECASE,
)
_SHARD = re.compile(r"-\d{5}-of-\d{5}$", re.IGNORECASE)
# Picked, in this order, when a GGUF repository is pulled without a tag: the 4-bit
# K-quant is Ollama's default too, the best size/quality trade-off for most machines.
DEFAULT_QUANTIZATIONS = (
    "Q4_K_M",
    "Q4_K_S",
    "Q4_0",
    "Q4_1",
    "IQ4_XS",
    "IQ4_NL",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_0",
    "Q5_1",
    "Q6_K",
    "Q8_0",
    "Q3_K_M",
    "Q3_K_L",
    "Q3_K_S",
    "IQ3_M",
    "IQ3_XS",
    "Q2_K",
    "BF16",
    "F16",
    "F32",
)
# Beside the weights of a GGUF repository, only the model card and the licence.
_GGUF_EXTRAS = ("README.md", "LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "USE_POLICY.md")

# Never fetched for a folder: other frameworks' weights, exports, media, remote code.
_SKIPPED_SUFFIXES = (
    ".onnx",
    ".onnx_data",
    ".ort",
    ".tflite",
    ".mlmodel",
    ".h5",
    ".msgpack",
    ".ot",
    ".gguf",
    ".py",
    ".ipynb",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".svg",
    ".mp4",
    ".pdf",
)
_SKIPPED_FOLDERS = {"onnx", "openvino", "coreml", "tflite", "mlpackage"}
_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_TRAINING_LEFTOVERS = re.compile(r"(optimizer|scheduler|rng_state.*|training_args|trainer_state)\.(pt|pth|bin|json)$")


@attrs.frozen(kw_only=True)
class RemoteFile:
    """One file of a repository, as the Hub lists it."""

    path: str
    size: int | None = None
    sha256: str | None = None  # LFS files: the Hub's sha256 of the content
    blob_id: str | None = None  # the git blob id (sha1)

    @property
    def source_digest(self) -> str | None:
        """``sha256:<hex>`` for LFS files, ``git-sha1:<hex>`` for the others."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        return f"git-sha1:{self.blob_id}" if self.blob_id else None

    @property
    def short_id(self) -> str:
        """What progress lines call the file: 12 hex digits of its digest (Ollama's style)."""
        return (self.sha256 or self.blob_id or self.path)[:12]


@attrs.frozen(kw_only=True)
class Selection:
    """The files to fetch; for a GGUF repository, which quantization and what exists."""

    files: tuple[RemoteFile, ...] = attrs.field(converter=tuple)
    repo_id: str = ""
    quantization: str | None = None
    available: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    defaulted: bool = False

    @property
    def note(self) -> str | None:
        """A line for the user when the quantization was chosen for them."""
        if not self.defaulted or not self.quantization:
            return None
        if len(self.available) == 1:
            return f"using {self.quantization}, the only quantization"
        others = ", ".join(self.available)
        return f"using {self.quantization} (available: {others}; pull {self.repo_id}:<quantization> for another)"


def quantization_of(path: str) -> str | None:
    """The quantization label in a GGUF file's path (``Q4_K_M``), upper-cased, or None."""
    stem = _SHARD.sub("", path[: -len(".gguf")] if path.lower().endswith(".gguf") else path)
    labels = _QUANT.findall(stem)
    return labels[-1].upper() if labels else None


def select_files(ref: ModelRef, files: Iterable[RemoteFile]) -> Selection:
    """What a pull of ``ref`` fetches from a repository holding ``files`` (names that
    would leave the model's folder, and hidden files, are never fetched)."""
    files = [f for f in files if _safe(f.path) and not _hidden(f.path)]
    tag = None if ref.tag in (None, DEFAULT_TAG) else ref.tag
    weights = [f for f in files if _is_gguf_weights(f.path)]
    has_config = any(f.path == "config.json" for f in files)
    # Some GGUF repositories carry a config.json too: a folder needs weights of its own.
    has_folder_weights = any(f.path.endswith((".safetensors", *_TORCH_SUFFIXES)) for f in files)
    if weights and (tag is not None or not has_folder_weights):
        return _select_gguf(ref, files, weights, tag)
    if tag is not None:
        raise InvalidRequest(
            f"'{ref.repo_id}' holds no GGUF files, so ':{tag}' cannot pick a quantization; "
            f"pull '{ref.repo_id}' (with @revision to pin a version)"
        )
    if not has_config:
        raise InvalidRequest(f"'{ref.repo_id}' holds neither GGUF files nor a config.json: modelport cannot run it")
    return Selection(files=folder_files(files), repo_id=ref.repo_id)


def _select_gguf(ref: ModelRef, files: list[RemoteFile], weights: list[RemoteFile], tag: str | None) -> Selection:
    groups: dict[str, list[RemoteFile]] = {}
    for file in weights:
        groups.setdefault(_group_of(file.path), []).append(file)
    available = tuple(sorted(groups, key=_quantization_order))
    if tag is None:
        chosen = _default_group(groups)
    else:
        chosen = _matching_group(groups, tag)
        if chosen is None:
            raise ModelNotFound(
                str(ref), hint=f"'{ref.repo_id}' has no '{tag}' file; available: {', '.join(available)}"
            )
    extras = [f for f in files if f.path in _GGUF_EXTRAS]
    return Selection(
        files=sorted(groups[chosen], key=lambda f: f.path) + extras,
        repo_id=ref.repo_id,
        quantization=chosen,
        available=available,
        defaulted=tag is None,
    )


def _group_of(path: str) -> str:
    label = quantization_of(path)
    if label:
        return label
    stem = posixpath.basename(path)[: -len(".gguf")]
    return _SHARD.sub("", stem)


def _matching_group(groups: dict[str, list[RemoteFile]], tag: str) -> str | None:
    wanted = tag.upper()
    for name in groups:
        if name.upper() == wanted:
            return name
    suffixed = [name for name in groups if name.upper().endswith("-" + wanted)]
    return suffixed[0] if len(suffixed) == 1 else None


def _default_group(groups: dict[str, list[RemoteFile]]) -> str:
    for label in DEFAULT_QUANTIZATIONS:
        if label in groups:
            return label
    # Nothing usual: the smallest (files of unknown size last).
    return min(
        groups,
        key=lambda name: (any(f.size is None for f in groups[name]), sum(f.size or 0 for f in groups[name]), name),
    )


def _quantization_order(name: str) -> tuple[int, str]:
    try:
        return DEFAULT_QUANTIZATIONS.index(name), name
    except ValueError:
        return len(DEFAULT_QUANTIZATIONS), name


def folder_files(files: Iterable[RemoteFile]) -> list[RemoteFile]:
    """A Hugging Face folder without what an engine never reads: other frameworks'
    copies of the weights (PyTorch pickles beside safetensors, ONNX, TensorFlow, Flax),
    Meta's ``original/`` checkpoints, GGUF variants, media and remote code."""
    files = list(files)
    folders_with_safetensors = {posixpath.dirname(f.path) for f in files if f.path.endswith(".safetensors")}
    root_has_safetensors = "" in folders_with_safetensors
    has_model_shards = any(
        posixpath.basename(f.path).startswith("model") and f.path.endswith(".safetensors") and "/" not in f.path
        for f in files
    )
    kept = []
    for file in files:
        folder, name = posixpath.split(file.path)
        top = file.path.split("/", 1)[0] if "/" in file.path else ""
        if name.lower().endswith(_SKIPPED_SUFFIXES) or top.lower() in _SKIPPED_FOLDERS:
            continue
        if top == "original" and root_has_safetensors:
            continue
        if name.startswith("consolidated") and folder == "" and has_model_shards:
            continue
        if _TRAINING_LEFTOVERS.search(name):
            continue
        if folder in folders_with_safetensors and (
            name.endswith(_TORCH_SUFFIXES) or name.endswith((".bin.index.json", ".pt.index.json"))
        ):
            continue
        kept.append(file)
    return sorted(kept, key=lambda f: f.path)


def _is_gguf_weights(path: str) -> bool:
    return path.lower().endswith(".gguf") and "mmproj" not in posixpath.basename(path).lower()


def _safe(path: str) -> bool:
    """A relative path that stays inside the model's folder (a mirror could list others)."""
    parts = path.split("/")
    return (
        bool(path) and "\\" not in path and ":" not in parts[0] and all(part not in ("", ".", "..") for part in parts)
    )


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))
