"""A running modelport (or Ollama) server, through its Ollama-compatible API.

:class:`OllamaClient` speaks the wire format (standard library only: urllib);
:class:`RemoteServices` implements :class:`~modelport.ports.Backend`, the use cases
the command line needs, so ``--url`` mode is the same commands over other adapters
(``entrypoints/bootstrap.py`` picks them).
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Iterator, Mapping

from modelport.domain import (
    Capability,
    ChatSession,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    ModelFormat,
    ModelInfo,
    ModelportError,
    ModelRef,
    PullProgress,
    RemoteBadRequest,
    RemoteNotFound,
    SamplingPolicy,
    ServerError,
    ServerUnreachable,
    TokenEvent,
    Usage,
    ToolCall,
)
from modelport.domain.modelfile import as_parameters, read_parameter_lines
from modelport.domain.timestamps import parse_timestamp
from modelport.domain.sampling import layered
from modelport.ports import ChatTurn, GenerationStream

DEFAULT_TIMEOUT_S = 30.0
STREAM_TIMEOUT_S = 600.0  # between two lines of a stream (a model loading, a long prompt)


def normalize_url(text: str) -> str:
    """``host``, ``host:port`` or a URL, as ``http://host:port`` (port 11434 by default)."""
    text = text.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"not a server address: {text!r}; use http://host:port")
    try:
        port = parts.port
    except ValueError:
        raise InvalidRequest(f"not a server address: {text!r}; the port must be a number") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None:
        port = 443 if parts.scheme == "https" else 11434
    return f"{parts.scheme}://{host}:{port}{parts.path}"


class OllamaClient:
    """JSON over HTTP to an Ollama-compatible server."""

    def __init__(
        self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S, stream_timeout: float = STREAM_TIMEOUT_S
    ) -> None:
        self.url = normalize_url(url)
        self.timeout = timeout
        self.stream_timeout = stream_timeout

    # -- transport ------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self._json(self._open("GET", path, None, self.timeout))

    def post(self, path: str, body: Mapping[str, Any], *, method: str = "POST") -> Any:
        return self._json(self._open(method, path, body, self.timeout))

    def stream(self, path: str, body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The NDJSON lines of a streamed answer. The request is sent (and its status
        checked) before this returns; closing the iterator closes the connection."""
        response = self._open("POST", path, {**body, "stream": True}, self.stream_timeout)
        return self._lines(response)

    def _open(self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json, application/x-ndjson")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http only)
        except urllib.error.HTTPError as exc:
            raise _server_error(exc.code, _error_text(exc.read())) from None
        except urllib.error.URLError as exc:
            raise ServerUnreachable(self.url, getattr(exc, "reason", exc)) from None
        except (ConnectionError, socket.timeout, TimeoutError) as exc:
            raise ServerUnreachable(self.url, exc) from None

    def _json(self, response) -> Any:
        with response:
            try:
                text = response.read()
            except (OSError, socket.timeout) as exc:
                raise ServerUnreachable(self.url, exc) from None
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError:
            raise ServerError(f"the server at {self.url} did not answer with JSON") from None

    def _lines(self, response) -> Iterator[dict[str, Any]]:
        with response:
            while True:
                try:
                    line = response.readline()
                except (OSError, socket.timeout) as exc:
                    raise ServerUnreachable(self.url, exc) from None
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    raise ServerError(f"the server sent a line that is not JSON: {line[:80]!r}") from None
                if isinstance(item, dict) and "error" in item:
                    raise ServerError(str(item["error"]))
                yield item

    # -- the calls ----------------------------------------------------------------------

    def ps(self) -> list[dict[str, Any]]:
        return list(self.get("/api/ps").get("models") or [])

    def health(self) -> dict[str, Any]:
        return dict(self.get("/health"))

    def load(self, model: str) -> dict[str, Any]:
        """Ollama's way to load a model: a generate request without a prompt."""
        return dict(self.post("/api/generate", {"model": model, "stream": False}))

    def unload(self, model: str) -> dict[str, Any]:
        """Ollama's way to unload a model: no prompt and ``keep_alive`` 0."""
        return dict(self.post("/api/generate", {"model": model, "keep_alive": 0, "stream": False}))

    def is_up(self) -> bool:
        try:
            self._open("GET", "/", None, 0.5).close()
        except ModelportError:
            return False
        return True


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:200]
    if isinstance(data, dict):
        if "error" in data:
            return str(data["error"])
        if "description" in data or "title" in data:
            return str(data.get("description") or data.get("title"))
    return str(data)[:200]


def _server_error(status: int, message: str) -> ServerError:
    message = message or f"the server answered {status}"
    if status == 404:
        return RemoteNotFound(message, status)
    if status in (400, 422):
        return RemoteBadRequest(message, status)
    return ServerError(f"the server answered {status}: {message}", status)


# -- the services, through the server --------------------------------------------------------


class RemoteServices:
    """The use cases the CLI needs, carried out by a running server."""

    def __init__(self, client: OllamaClient) -> None:
        self.client = client
        self.url = client.url

    # the server's own calls (ps, stop, cache, info and deploy use them)

    def ps(self) -> list[dict[str, Any]]:
        return self.client.ps()

    def health(self) -> dict[str, Any]:
        return self.client.health()

    def load(self, model: str) -> dict[str, Any]:
        return self.client.load(model)

    def unload(self, model: str) -> dict[str, Any]:
        return self.client.unload(model)

    def is_up(self) -> bool:
        return self.client.is_up()

    # the Backend port

    def list_models(self) -> list[ModelInfo]:
        models = self.client.get("/api/tags").get("models") or []
        return sorted(
            (
                model_from_ollama(m.get("name") or m.get("model"), m, self.client.url)
                for m in models
                if not m.get("alias_of")
            ),
            key=lambda m: m.name,
        )  # as `list` here

    def show(self, name: str | ModelRef | ModelInfo) -> ModelInfo:
        if isinstance(name, ModelInfo):
            return name
        data = self.client.post("/api/show", {"model": str(name)})
        return model_from_ollama(str(name), data, self.client.url)

    def sampling_for(
        self, model: str | ModelRef | ModelInfo, changes: Mapping[str, Any] | None = None
    ) -> SamplingPolicy:
        return layered(self.show(model).sampling_defaults, changes)

    def generate(self, request: GenerationRequest, *, model: ModelInfo | None = None) -> GenerationStream:
        """``model`` is not needed here: the server looks the model up itself."""
        body: dict[str, Any] = {"model": str(request.model), "options": as_parameters(request.sampling)}
        if request.format is not None:
            body["format"] = "json" if request.format.is_json_mode else request.format.schema
        if request.is_chat:
            body["messages"] = [m.to_dict() for m in request.messages]
            if request.calls_tools:
                body["tools"] = [t.to_dict() for t in request.tools]
            lines = self.client.stream("/api/chat", body)
        else:
            body.update(prompt=request.prompt, raw=True)
            lines = self.client.stream("/api/generate", body)
        return GenerationStream(_events(lines), getattr(lines, "close", lambda: None))

    def chat(self, session: ChatSession, message: str, **output: Any) -> ChatTurn:
        session = session.with_user(message)
        request = GenerationRequest(
            model=ModelRef.parse(session.model), messages=session.context, sampling=session.sampling, **output
        )
        return ChatTurn(session, self.generate(request))

    def new_session(self, model: str, **fields: object) -> ChatSession:
        self.show(model)
        return ChatSession(id=uuid.uuid4().hex[:12], model=model, **fields)  # type: ignore[arg-type]

    def embed(self, request: EmbeddingRequest) -> Embeddings:
        data = self.client.post(
            "/api/embed", {"model": str(request.model), "input": list(request.inputs), "truncate": request.truncate}
        )
        usage = Usage(
            prompt_tokens=int(data.get("prompt_eval_count") or 0),
            load_ns=int(data.get("load_duration") or 0),
            total_ns=int(data.get("total_duration") or 0),
        )
        vectors = tuple(tuple(float(x) for x in v) for v in data.get("embeddings") or ())
        return Embeddings(model=str(data.get("model") or request.model), vectors=vectors, usage=usage)

    def pull(self, name: str | ModelRef, progress=lambda _: None) -> ModelInfo:
        for line in self.client.stream("/api/pull", {"model": str(name)}):
            progress(
                PullProgress(
                    status=str(line.get("status", "")),
                    digest=line.get("digest"),
                    completed=line.get("completed"),
                    total=line.get("total"),
                )
            )
        return self.show(name)

    def copy(self, source: str | ModelRef, destination: str | ModelRef) -> ModelInfo:
        self.client.post("/api/copy", {"source": str(source), "destination": str(destination)})
        return self.show(destination)

    def remove(self, name: str | ModelRef) -> None:
        self.client.post("/api/delete", {"model": str(name)}, method="DELETE")


def _events(lines: Iterator[dict[str, Any]]) -> Iterator[TokenEvent]:
    for line in lines:
        message = line.get("message") or {}
        text = message.get("content", "") if "message" in line else line.get("response", "")
        calls = tuple(ToolCall.from_dict(c) for c in message.get("tool_calls") or ())
        if not line.get("done"):
            yield TokenEvent(text=text or "", tool_calls=calls)
            continue
        reason = FinishReason.LENGTH if line.get("done_reason") == "length" else FinishReason.STOP
        usage = Usage(
            prompt_tokens=int(line.get("prompt_eval_count") or 0),
            completion_tokens=int(line.get("eval_count") or 0),
            load_ns=int(line.get("load_duration") or 0),
            prompt_eval_ns=int(line.get("prompt_eval_duration") or 0),
            eval_ns=int(line.get("eval_duration") or 0),
            total_ns=int(line.get("total_duration") or 0),
        )
        yield TokenEvent(text=text or "", finish_reason=reason, usage=usage, tool_calls=calls)
        return


def model_from_ollama(name: str, data: Mapping[str, Any], url: str) -> ModelInfo:
    """A ModelInfo from an ``/api/tags`` entry or an ``/api/show`` answer."""
    details = data.get("details") or {}
    info = data.get("model_info") or {}
    arch = str(info.get("general.architecture") or details.get("family") or "unknown")
    try:
        model_format = ModelFormat(details.get("format") or "gguf")
    except ValueError:
        model_format = ModelFormat.GGUF
    capabilities = set()
    for capability in data.get("capabilities") or ["completion"]:
        if capability == "completion":
            capabilities |= {Capability.COMPLETION, Capability.CHAT}
        elif capability == "embedding":
            capabilities.add(Capability.EMBEDDING)
    count = info.get("general.parameter_count")
    return ModelInfo(
        name=name,
        format=model_format,
        location=url,
        primary_file="",
        architecture=arch,
        family=str(details.get("family") or arch),
        parameter_count=int(count)
        if isinstance(count, (int, float))
        else parse_parameter_size(details.get("parameter_size")),
        quantization=details.get("quantization_level") or None,
        context_length=details.get("context_length") or info.get(f"{arch}.context_length"),
        embedding_length=details.get("embedding_length") or info.get(f"{arch}.embedding_length"),
        size=int(data.get("size") or 0),
        capabilities=capabilities or {Capability.COMPLETION},
        modified_at=parse_timestamp(data.get("modified_at")) or 0.0,
        digest=str(data.get("digest") or ""),
        license=data.get("license") or None,
        chat_template=data.get("template") or None,
        default_options=read_parameter_lines(data.get("parameters") or ""),
    )


def parse_parameter_size(text: object) -> int | None:
    """``135M``, ``1.5B`` as a count."""
    if not isinstance(text, str) or not text:
        return None
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}.get(text[-1].upper())
    try:
        return int(float(text[:-1]) * scale) if scale else int(float(text))
    except ValueError:
        return None
