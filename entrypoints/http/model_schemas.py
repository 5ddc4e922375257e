"""Ollama's model-management JSON <-> modelport's domain: the model list, a model's
details, /api/ps, embeddings, copy, create, blobs and pull progress.

The generate and chat shapes, and the request helpers both share, are in
``schemas.py``; nothing here does I/O or calls a use case.
"""

from __future__ import annotations

import math
import re
from typing import Any

import attrs

from modelport.domain import (
    Capability,
    ChatMessage,
    EmbeddingRequest,
    Embeddings,
    InvalidRequest,
    ModelDefaults,
    Modelfile,
    ModelInfo,
    ModelRef,
    PullProgress,
    RunningModel,
    SamplingPolicy,
    SlotStats,
)
from modelport.domain.modelfile import PARAMETERS, check_parameters, render_modelfile
from modelport.domain.parameters import parameters
from modelport.domain.sampling import layered

from .schemas import Body, _model, _optional, _stream, parse_keep_alive, rfc3339, store_name


def capabilities(model: ModelInfo) -> list[str]:
    """Ollama's capability names: chat and completion are both ``completion``."""
    names = []
    if model.supports(Capability.COMPLETION) or model.supports(Capability.CHAT):
        names.append("completion")
    if model.supports(Capability.EMBEDDING):
        names.append("embedding")
    return names


def details(model: ModelInfo) -> dict[str, Any]:
    family = model.family or model.architecture
    shape: dict[str, Any] = {
        "parent_model": "",
        "format": model.format.value,
        "family": family,
        "families": [family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization or "",
    }
    if model.context_length:
        shape["context_length"] = model.context_length
    if model.embedding_length:
        shape["embedding_length"] = model.embedding_length
    return shape


def tag(model: ModelInfo, name: str | None = None) -> dict[str, Any]:
    """One entry of ``/api/tags``, under ``name`` (default: the model's own)."""
    name = name or model.name
    return {
        "name": name,
        "model": name,
        "modified_at": rfc3339(model.modified_at),
        "size": model.size,
        "digest": model.digest,
        "details": details(model),
        "capabilities": capabilities(model),
    }


def tags(models: list[ModelInfo]) -> dict[str, Any]:
    """``/api/tags``: every model, then each alias as a name of its own (``smollm2``
    listed as ``smollm2:latest``, same digest), since Ollama clients (llm-ollama,
    Open WebUI) match names exactly against this list."""
    return {"models": [{**tag(model, name), **({"alias_of": model.name} if name != model.name else {})}
                       for model, name in listed_names(models)]}


def listed_names(models: list[ModelInfo]) -> list[tuple[ModelInfo, str]]:
    """(model, name) for each model's name and each alias's canonical name that no
    other model holds."""
    taken = {m.name for m in models}
    out = [(m, m.name) for m in models]
    for model in models:
        for alias in model.aliases:
            name = ModelRef.parse(alias).canonical
            if name not in taken:
                taken.add(name)
                out.append((model, name))
    return out


def show(model: ModelInfo) -> dict[str, Any]:
    """The ``/api/show`` answer. ``model_info`` is always there: the client requires it.
    ``template`` is the model's own (a Modelfile's TEMPLATE as given, else the one
    in its files); ``system`` and ``messages`` are what it was created with."""
    defaults = layered(model.sampling_defaults)
    lines = parameter_lines(defaults)
    shape = {
        "license": model.license or "",
        "modelfile": modelfile(model),
        "parameters": "\n".join(lines),
        "template": model.defaults.template if model.defaults.template is not None else model.chat_template or "",
        "system": model.defaults.system or "",
        "details": details(model),
        "model_info": model_info(model),
        "capabilities": capabilities(model),
        "modified_at": rfc3339(model.modified_at),
    }
    if model.defaults.messages:
        shape["messages"] = [m.to_dict() for m in model.defaults.messages]
    return shape


def parameter_lines(policy: SamplingPolicy) -> list[str]:
    lines = []
    for key, value in parameters(policy).items():
        values = value if isinstance(value, list) else [value]
        lines += [f'{key} "{v}"' if isinstance(v, str) else f"{key} {v}" for v in values]
    return lines


def modelfile(model: ModelInfo) -> str:
    """A Modelfile that makes the model again: its file, its own template, system
    prompt, messages and license, and its sampling parameters."""
    parameters = {k: v for k, v in model.default_options if k in PARAMETERS}
    own = attrs.evolve(model.defaults, parameters=parameters, license=model.license)
    try:
        return render_modelfile(f"{model.location}/{model.primary_file}", own, model.chat_template)
    except InvalidRequest:  # a value no Modelfile quoting can hold
        return f"# Modelfile generated by modelport\nFROM {model.location}/{model.primary_file}\n"


def model_info(model: ModelInfo) -> dict[str, Any]:
    """GGUF-style keys: the stored metadata, then what modelport itself knows."""
    arch = model.architecture
    info: dict[str, Any] = {k: v for k, v in model.metadata if _json_scalar(v)}
    info["general.architecture"] = arch
    if model.parameter_count:
        info["general.parameter_count"] = model.parameter_count
    if model.context_length:
        info[f"{arch}.context_length"] = model.context_length
    if model.embedding_length:
        info[f"{arch}.embedding_length"] = model.embedding_length
    return info


def _json_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# -- embeddings ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class EmbedCall:
    """A parsed ``/api/embed``, ``/api/embeddings`` or ``/v1/embeddings`` body."""

    model: str
    inputs: tuple[str, ...]
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: float | None = None

    @property
    def request(self) -> EmbeddingRequest:
        return EmbeddingRequest(model=ModelRef.parse(self.model), inputs=self.inputs, truncate=self.truncate)


def parse_embed(body: Body) -> EmbedCall:
    """Ollama's ``EmbedRequest``: ``input`` is a string or a list of strings."""
    model = _model(body)
    value = body.get("input")
    if value is None:
        inputs: tuple[str, ...] = ()
    elif isinstance(value, str):
        inputs = (value,)
    elif isinstance(value, list) and all(isinstance(text, str) for text in value):
        inputs = tuple(value)
    else:
        raise InvalidRequest("invalid input type: input must be a string or a list of strings")
    return EmbedCall(model=model, inputs=inputs, truncate=_optional(body, "truncate", bool, True),
                     dimensions=parse_dimensions(body.get("dimensions")),
                     keep_alive=parse_keep_alive(body.get("keep_alive")))


def parse_embeddings(body: Body) -> EmbedCall:
    """The legacy ``/api/embeddings``: one ``prompt``."""
    model = _model(body)
    prompt = _optional(body, "prompt", str, "")
    return EmbedCall(model=model, inputs=(prompt,) if prompt else (),
                     keep_alive=parse_keep_alive(body.get("keep_alive")))


def parse_dimensions(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest('field "dimensions" must be a whole number of at least 1')
    return value


def resize(vector: tuple[float, ...], dimensions: int | None) -> list[float]:
    """The first ``dimensions`` values, normalised again to unit length (Matryoshka
    truncation); the vector itself when ``dimensions`` is None."""
    if dimensions is None or dimensions == len(vector):
        return list(vector)
    if dimensions > len(vector):
        raise InvalidRequest(f"dimensions is {dimensions} but the model's embeddings have {len(vector)}")
    head = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in head)) or 1.0
    return [v / norm for v in head]


def embed_reply(embeddings: Embeddings, dimensions: int | None) -> dict[str, Any]:
    usage = embeddings.usage
    return {
        "model": embeddings.model,
        "embeddings": [resize(v, dimensions) for v in embeddings.vectors],
        "total_duration": usage.total_ns,
        "load_duration": usage.load_ns,
        "prompt_eval_count": usage.prompt_tokens,
    }


# -- model management -----------------------------------------------------------------------


def parse_name(body: Body, field: str = "model", legacy: str | None = "name") -> str:
    """A required model name in ``field`` (or the ``legacy`` field), checked."""
    name = body.get(field)
    if name is None and legacy:
        name = body.get(legacy)
    if name is None or name == "":
        raise InvalidRequest(f"{field} is required")
    if not isinstance(name, str):
        raise InvalidRequest(f'field "{field}" must be a string')
    return store_name(name, field)


def parse_copy(body: Body) -> tuple[str, str]:
    return parse_name(body, "source", None), parse_name(body, "destination", None)


@attrs.frozen(kw_only=True)
class CreateCall:
    """``/api/create``: a new model from a local path, an installed model, or blobs,
    with a Modelfile's defaults (``system``, ``template``, ``parameters``,
    ``messages``, ``license``, or the legacy ``modelfile`` text)."""

    model: str
    source: str | None = None  # "from": an installed model's name or a local path
    files: tuple[tuple[str, str], ...] = ()  # (file name, sha256 hex digest)
    stream: bool = True
    defaults: ModelDefaults = attrs.field(factory=ModelDefaults)


CREATE_UNSUPPORTED = {
    "quantize": "quantize is not supported: pull or import a model already quantized",
    "adapters": "adapters (ADAPTER, LoRA) are not supported by modelport",
    "renderer": "renderer is not supported", "parser": "parser is not supported",
}


def parse_create(body: Body) -> CreateCall:
    model = parse_name(body, "model", "name")
    for key, refusal in CREATE_UNSUPPORTED.items():
        if body.get(key) not in (None, "", [], {}):
            raise InvalidRequest(refusal)
    source = _optional(body, "from", str, None) or None
    defaults = _create_defaults(body)
    text = _optional(body, "modelfile", str, "")
    if text:
        parsed = Modelfile.parse(text)
        source = source or parsed.base
        defaults = defaults.over(parsed.defaults)
    files = _optional(body, "files", dict, {})
    pairs = tuple((name, blob_digest(digest, f'files["{name}"]')) for name, digest in files.items())
    if not source and not pairs:
        raise InvalidRequest("create needs 'from' (a local GGUF file, a model folder or an installed model) "
                             "or 'files' (uploaded blobs)")
    if source and pairs:
        raise InvalidRequest("give either 'from' or 'files', not both")
    return CreateCall(model=model, source=source, files=pairs, stream=_stream(body), defaults=defaults)


def _create_defaults(body: Body) -> ModelDefaults:
    license_ = body.get("license")
    if isinstance(license_, list) and all(isinstance(item, str) for item in license_):
        license_ = "\n\n".join(license_)
    elif license_ is not None and not isinstance(license_, str):
        raise InvalidRequest('field "license" must be a string or an array of strings')
    parameters = dict(_optional(body, "parameters", dict, {}))
    if isinstance(parameters.get("stop"), str):
        parameters["stop"] = [parameters["stop"]]
    messages = [ChatMessage.from_dict(m) for m in _optional(body, "messages", list, [])]
    return ModelDefaults(system=_optional(body, "system", str, None), template=_optional(body, "template", str, None),
                         parameters=check_parameters(parameters), messages=messages, license=license_ or None)


_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")


def blob_digest(value: object, what: str = "digest") -> str:
    """The hex part of ``sha256:<64 hex>`` (or ``sha256-<64 hex>``)."""
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidRequest(f"{what} must look like sha256:<64 lowercase hex digits>, got {value!r}")
    return match.group(1)


def progress(step: PullProgress) -> dict[str, Any]:
    """Ollama's ``ProgressResponse``: status, then digest/total/completed when known."""
    shape: dict[str, Any] = {"status": step.status}
    if step.digest:
        shape["digest"] = step.digest if step.digest.startswith("sha256:") else f"sha256:{step.digest}"
    if step.total is not None:
        shape["total"] = step.total
    if step.completed is not None:
        shape["completed"] = step.completed
    return shape


FOREVER_S = (2**63 - 1) / 1e9  # Go's longest duration, which Ollama reports for "forever"


def running(model: RunningModel, now: float) -> dict[str, Any]:
    """One entry of ``/api/ps``."""
    info = model.model
    expiry = model.expires_at
    return {
        "name": info.name,
        "model": info.name,
        "size": model.size,
        "digest": info.digest,
        "details": details(info),
        "expires_at": rfc3339(now + FOREVER_S if expiry is None else min(expiry, now + FOREVER_S)),
        "size_vram": model.size_vram,
        "context_length": model.num_ctx,
        "refs": model.in_use,  # requests using it now (Hugging Llama's ps shows them)
        **_slots(model.slots),
    }


def _slots(stats: SlotStats | None) -> dict[str, Any]:
    """modelport's addition to a ``/api/ps`` entry: the generation core's slots."""
    if stats is None:
        return {}
    return {"slots": {"total": stats.slots, "busy": stats.busy, "free": stats.free, "waiting": stats.waiting,
                      "tokens_per_second": round(stats.tokens_per_second, 2)}}


def ps(models: list[RunningModel], now: float) -> dict[str, Any]:
    """``/api/ps``: the loaded models, the one staying longest first."""
    def remaining(model: RunningModel) -> float:
        return math.inf if model.expires_at is None else model.expires_at

    return {"models": [running(m, now) for m in sorted(models, key=remaining, reverse=True)]}
