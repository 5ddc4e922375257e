"""Ollama's JSON <-> modelport's domain: the only module that knows the wire names.

Parsing turns a request body into a :class:`Call` (a domain request plus the few
HTTP-only choices around it); rendering turns domain values into Ollama's shapes.
Nothing here does I/O or calls a use case.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import attrs

from modelport.domain import (
    MAX_LOGPROBS,
    Capability,
    ChatMessage,
    Conversation,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    GenerationRequest,
    InvalidModelName,
    InvalidRequest,
    ModelDefaults,
    Modelfile,
    ModelInfo,
    ModelRef,
    PullProgress,
    RunningModel,
    SamplingPolicy,
    SlotStats,
    ToolCall,
    Usage,
    system_and_user,
)
from modelport.domain.modelfile import PARAMETERS, check_parameters, render_modelfile

from . import tools as tool_wire

THINK_LEVELS = ("low", "medium", "high", "max")
RAW_CONFLICT = "raw mode does not support template, system, or context"

Body = Mapping[str, Any]
Clock = Callable[[], float]


# -- requests -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Call:
    """A parsed ``/api/generate`` or ``/api/chat`` body.

    ``request`` is None when the body only asks to load (or, with ``keep_alive`` 0,
    unload) the model. ``needs`` names features the client asked for that no model
    here offers yet (Ollama's capability names: images, insert, thinking, tools).
    """

    model: str
    request: GenerationRequest | None
    stream: bool = True
    keep_alive: float | None = None
    needs: tuple[str, ...] = ()

    @property
    def unloads(self) -> bool:
        return self.request is None and self.keep_alive == 0


Policy = Callable[[str, "Mapping[str, Any] | None"], SamplingPolicy]


def default_policy(model: str, options: Mapping[str, Any] | None) -> SamplingPolicy:
    """Request options over modelport's defaults (the server passes
    ``Services.sampling_for``, which puts the model's own defaults in between)."""
    return SamplingPolicy.from_ollama_options(options)


def parse_generate(body: Body, policy: Policy = default_policy) -> Call:
    """An Ollama ``GenerateRequest``.

    Supported: model, prompt, system, raw, stream, options, keep_alive, ``format``
    ("json" or a JSON schema: the output is constrained to it).
    Refused with 400 (no model here can honour them yet): non-empty ``images``
    (vision), ``suffix`` (fill-in-the-middle).
    Accepted and ignored: ``think`` (no model here has a reasoning mode),
    ``template`` (the model's own chat template is used), ``context``
    (deprecated), truncate, shift. ``logprobs``/``top_logprobs`` add each token's
    log-probability (and that many alternatives) to the answer.
    ``raw`` with system, template or context is refused, as Ollama does.
    """
    model = _model(body)
    prompt = _optional(body, "prompt", str, "")
    system = _optional(body, "system", str, "")
    raw = _optional(body, "raw", bool, False)
    template = _optional(body, "template", str, "")
    context = _optional(body, "context", list, [])
    if raw and (system or template or context):
        raise InvalidRequest(RAW_CONFLICT)
    needs = _needs(body, images=_optional(body, "images", list, []))
    if _optional(body, "suffix", str, ""):
        needs += ("insert",)
    request = None
    fmt = tool_wire.ollama_format(body.get("format"))
    if prompt or system:
        sampling = policy(model, _options(body))
        top = parse_logprobs(body)
        if raw:
            request = GenerationRequest(model=ModelRef.parse(model), prompt=prompt, sampling=sampling,
                                        logprobs=top, format=fmt)
        else:
            messages = system_and_user(prompt, system or None)
            request = GenerationRequest(model=ModelRef.parse(model), messages=messages, sampling=sampling,
                                        logprobs=top, format=fmt)
    return Call(model=model, request=request, stream=_stream(body),
                keep_alive=parse_keep_alive(body.get("keep_alive")), needs=needs)


def parse_chat(body: Body, policy: Policy = default_policy) -> Call:
    """An Ollama ``ChatRequest``: model, messages, stream, options, keep_alive,
    ``format`` as in :func:`parse_generate`, and ``tools`` (the model decides
    whether to call one: Ollama has no ``tool_choice``). Messages may carry
    ``tool_calls`` (arguments an object); ``tool`` messages name their tool with
    ``tool_name`` (and may give ``tool_call_id``). Images are refused.
    """
    model = _model(body)
    raw_messages = _optional(body, "messages", list, [])
    images = [image for m in raw_messages if isinstance(m, Mapping) for image in _images(m)]
    needs = _needs(body, images=images)
    fmt = tool_wire.ollama_format(body.get("format"))
    tools = tool_wire.parse_tools(body.get("tools"))
    messages = Conversation(messages=tuple(ChatMessage.from_dict(m) for m in raw_messages))
    request = None
    if len(messages):
        request = GenerationRequest(model=ModelRef.parse(model), messages=messages,
                                    sampling=policy(model, _options(body)), logprobs=parse_logprobs(body),
                                    format=fmt, tools=tools)
    return Call(model=model, request=request, stream=_stream(body),
                keep_alive=parse_keep_alive(body.get("keep_alive")), needs=needs)


def parse_logprobs(body: Body) -> int | None:
    """Ollama's ``logprobs`` (a boolean) and ``top_logprobs`` (0 to 20): None when
    not asked, else how many alternatives to report beside each token."""
    wanted = _optional(body, "logprobs", bool, False)
    top = body.get("top_logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_LOGPROBS):
        raise InvalidRequest(f'field "top_logprobs" must be an integer from 0 to {MAX_LOGPROBS}')
    return (top or 0) if wanted else None


def _images(message: Mapping[str, Any]) -> list:
    images = message.get("images")
    if images is not None and not isinstance(images, list):
        raise InvalidRequest(f'field "images" of a message must be an array, not {_json_type(images)}')
    return images or []


def parse_show(body: Body) -> str:
    """``/api/show``: ``model``, or the legacy ``name``."""
    name = body.get("model") or body.get("name")
    if name is None:
        raise InvalidRequest("model is required")
    if not isinstance(name, str):
        raise InvalidRequest('field "model" must be a string')
    return store_name(name)


PATH_REFUSED = ("over HTTP a model is named as in the store ('name', 'name:tag' or 'org/name'), "
                "not by a path on the server")


def store_name(name: str, field: str = "model") -> str:
    """``name``, checked to be a well-formed store name: over HTTP a model is never
    a path (on the command line it may be), so no request can probe or load the
    server's files through it."""
    if ModelRef.parse(name).is_path:  # a malformed name fails here too
        raise InvalidModelName(f'field "{field}": {PATH_REFUSED}')
    return name


def _model(body: Body) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("model is required")
    if not isinstance(model, str):
        raise InvalidRequest('field "model" must be a string')
    return store_name(model)


def _stream(body: Body) -> bool:
    return _optional(body, "stream", bool, True)


def parse_stream(body: Body, default: bool = True) -> bool:
    """``stream`` (Ollama streams unless told not to; OpenAI the other way round)."""
    return _optional(body, "stream", bool, default)


def _options(body: Body) -> Mapping[str, Any] | None:
    return _optional(body, "options", dict, None)


def _needs(body: Body, *, images: list) -> tuple[str, ...]:
    needs: tuple[str, ...] = ()
    if images:
        needs += ("images",)
    _wants_thinking(body.get("think"))  # checked, then ignored: no model here has a reasoning mode
    return needs


def _wants_thinking(think: object) -> bool:
    if think is None or think is False:
        return False
    if think is True or think in THINK_LEVELS:
        return True
    raise InvalidRequest(f'field "think" must be a boolean or one of {", ".join(THINK_LEVELS)}')


_TYPE_NAMES = {str: "a string", bool: "a boolean", list: "an array", dict: "an object"}


def _optional(body: Body, name: str, kind: type, default: Any) -> Any:
    """``body[name]`` checked against ``kind``; ``default`` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidRequest(f'field "{name}" must be {_TYPE_NAMES[kind]}, not {_json_type(value)}')
    return value


def _json_type(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "a number", float: "a number",
             list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


# -- keep_alive: a number of seconds or a Go duration string ----------------------------

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SECONDS = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_DURATION = re.compile(r"([+-]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_keep_alive(value: object) -> float | None:
    """Seconds to keep the model loaded: None when absent, ``math.inf`` when
    negative (Ollama: forever). Accepts numbers (seconds) and duration strings
    ("5m", "1h30m", "-1s"; a bare number string counts as seconds)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidRequest('field "keep_alive" must be a number of seconds or a duration such as "5m"')
    seconds = float(value) if not isinstance(value, str) else parse_duration(value)
    if math.isnan(seconds):
        raise InvalidRequest('field "keep_alive" must be a number of seconds, not NaN')
    return math.inf if seconds < 0 else seconds


def parse_duration(text: str) -> float:
    """A Go duration string in seconds."""
    text = text.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise InvalidRequest(f'invalid duration "{text}" for keep_alive; use e.g. "30s", "5m" or "1h"')
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    return -seconds if match.group(1) == "-" else seconds


# -- responses -------------------------------------------------------------------------


def rfc3339(timestamp: float) -> str:
    """``2024-05-04T22:57:36.389358Z``: RFC 3339 in UTC."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def metrics(usage: Usage) -> dict[str, int]:
    """Ollama's counts and durations (ns) from a final event's usage."""
    return {
        "total_duration": usage.total_ns,
        "load_duration": usage.load_ns,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": usage.prompt_eval_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": usage.eval_ns,
    }


TokenLogprobs = Callable[[Sequence[Any]], list]


@attrs.frozen
class Reply:
    """The objects of one ``/api/generate`` or ``/api/chat`` answer. ``logprobs``,
    when the request asked for them, renders a list of
    :class:`~.logprobs.TokenLogprob` in Ollama's shape."""

    model: str
    clock: Clock
    content: Callable[[str], dict[str, Any]]
    logprobs: TokenLogprobs | None = None

    def with_logprobs(self, render: TokenLogprobs) -> "Reply":
        return attrs.evolve(self, logprobs=render)

    def _logprobs(self, entries: Sequence[Any]) -> dict[str, Any]:
        return {} if self.logprobs is None else {"logprobs": self.logprobs(entries)}

    @classmethod
    def generate(cls, model: str, clock: Clock) -> "Reply":
        return cls(model, clock, lambda text: {"response": text})

    @classmethod
    def chat(cls, model: str, clock: Clock) -> "Reply":
        return cls(model, clock, lambda text: {"message": {"role": "assistant", "content": text}})

    def chunk(self, text: str, entries: Sequence[Any] = (), calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
        return {**self._head(), **self._content(text, calls), **self._logprobs(entries), "done": False}

    def final(self, text: str, reason: FinishReason, usage: Usage, entries: Sequence[Any] = (),
              calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
        logprobs = self._logprobs(entries) if entries else {}
        return {**self._head(), **self._content(text, calls), **logprobs, "done": True,
                "done_reason": reason.value, **metrics(usage)}

    def _content(self, text: str, calls: tuple[ToolCall, ...]) -> dict[str, Any]:
        content = self.content(text)
        if calls and "message" in content:
            content["message"]["tool_calls"] = tool_wire.ollama_calls(calls)
        return content

    def done(self, reason: str) -> dict[str, Any]:
        """The answer to a load or unload request."""
        return {**self._head(), **self.content(""), "done": True, "done_reason": reason}

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": rfc3339(self.clock())}


def error(message: str) -> dict[str, str]:
    return {"error": message}


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
    defaults = SamplingPolicy.from_ollama_options(dict(model.default_options))
    parameters = parameter_lines(defaults)
    shape = {
        "license": model.license or "",
        "modelfile": modelfile(model),
        "parameters": "\n".join(parameters),
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
    for key, value in policy.to_options().items():
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
