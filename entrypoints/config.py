"""Settings: flags over environment over ``.env`` over defaults, each value knowing
where it came from (``modelport config`` shows that)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs

from modelport.domain import InvalidRequest

DEFAULT_PORT = 11434
DEFAULT_HOST = "127.0.0.1"


def _default_home() -> str:
    import platformdirs

    return platformdirs.user_cache_dir("modelport", appauthor=False)


def _positive_int(name: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise InvalidRequest(f"{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise InvalidRequest(f"{name} must be at least 1, got {value}")
        return value

    return convert


def _port(text: str) -> int:
    value = _positive_int("port")(text)
    if value > 65535:
        raise InvalidRequest(f"port must be at most 65535, got {value}")
    return value


def _engine(text: str) -> str:
    text = text.lower()
    if text not in ("auto", "gguf", "jax", "mlx", "fake"):
        raise InvalidRequest(f"engine must be auto, gguf, jax or mlx, got {text!r}")
    return text


def _quantize(text: str) -> str:
    text = text.strip().lower()
    if text not in ("auto", "none", "int8", "int4"):
        raise InvalidRequest(f"quantize must be auto, none, int8 or int4, got {text!r}")
    return text


def _coordinator(text: str) -> str:
    """HOST:PORT of jax.distributed's coordinator (empty: one process)."""
    text = text.strip()
    host, _, port = text.rpartition(":")
    if text and not (host and port.isdigit() and 0 < int(port) <= 65535):
        raise InvalidRequest(f"coordinator must be HOST:PORT, got {text!r}")
    return text


def _non_negative_int(name: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise InvalidRequest(f"{name} must be a whole number, got {text!r}") from None
        if value < 0:
            raise InvalidRequest(f"{name} must be 0 or more, got {value}")
        return value

    return convert


def _keep_alive(text: str) -> float:
    """Seconds ("300", "5m", "1h30m"); negative means forever (``math.inf``)."""
    from .http.schemas import parse_keep_alive  # no framework import: schemas is plain Python

    try:
        value = parse_keep_alive(text)
    except InvalidRequest:
        raise InvalidRequest(
            f"model_ttl must be a number of seconds or a duration such as 5m, 1h or -1, got {text!r}"
        ) from None
    assert value is not None
    return value


API_PROFILES = ("ollama", "rustllm")


def _api(text: str) -> str:
    text = text.strip().lower()
    if text not in API_PROFILES:
        raise InvalidRequest(f"api must be {' or '.join(API_PROFILES)}, got {text!r}")
    return text


def _optional_number(name: str, kind: type, low: float | None = None) -> Callable[[str], Any]:
    """A number or nothing (the empty string): model-rs' MODELPORT_TEMPERATURE and kin."""

    def convert(text: str) -> Any:
        if not text.strip():
            return None
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise InvalidRequest(f"{name} must be {what}, got {text!r}") from None
        if low is not None and value < low:
            raise InvalidRequest(f"{name} must be at least {low}, got {value}")
        return value

    return convert


def _seconds(name: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise InvalidRequest(f"{name} must be a number of seconds, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise InvalidRequest(f"{name} must be a positive number of seconds, got {text!r}")
        return value

    return convert


# model-rs' generation defaults: setting -> (variable, SamplingPolicy field, type, lowest value).
SAMPLING_DEFAULTS: dict[str, tuple[str, str, type, float]] = {
    "temperature": ("MODELPORT_TEMPERATURE", "temperature", float, 0),
    "top_p": ("MODELPORT_TOP_P", "top_p", float, 0),
    "top_k": ("MODELPORT_TOP_K", "top_k", int, 0),
    "repeat_penalty": ("MODELPORT_REPEAT_PENALTY", "repeat_penalty", float, 0),
    "max_tokens": ("MODELPORT_MAX_TOKENS", "max_tokens", int, 1),
}


def _allowed_paths(text: str) -> str:
    """Absolute folders, separated by ``os.pathsep``; checked, kept as text."""
    folders = [part for part in text.split(os.pathsep) if part.strip()]
    for folder in folders:
        if not os.path.isabs(folder):
            raise InvalidRequest(f"allowed_paths holds absolute folders only, got {folder!r}")
    return os.pathsep.join(folders)


@attrs.frozen
class Option:
    """One setting: its name, environment variables (first wins), default, converter.
    A ``secret`` setting is never printed."""

    name: str
    env: tuple[str, ...]
    default: Callable[[], str]
    convert: Callable[[str], Any] = str
    help: str = ""
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("home", ("MODELPORT_HOME",), _default_home, str, "where models, sessions and caches live"),
    Option("host", ("MODELPORT_HOST", "OLLAMA_HOST"), lambda: DEFAULT_HOST, str, "server address"),
    Option(
        "port",
        ("MODELPORT_PORT", "OLLAMA_LOCAL_PORT"),
        lambda: str(DEFAULT_PORT),
        _port,
        "server port (and the port client commands call)",
    ),
    Option("engine", ("MODELPORT_ENGINE",), lambda: "auto", _engine, "auto, gguf, jax or mlx"),
    Option("device", ("MODELPORT_DEVICE",), lambda: "auto", str, "auto, cpu or gpu"),
    Option("device_index", ("MODELPORT_DEVICE_INDEX",), lambda: "0", int, "which GPU"),
    Option(
        "quantize",
        ("MODELPORT_QUANTIZE",),
        lambda: "auto",
        _quantize,
        "the jax engine's weights: auto, none, int8 or int4",
    ),
    Option(
        "tensor_parallel",
        ("MODELPORT_TENSOR_PARALLEL",),
        lambda: "1",
        _positive_int("tensor_parallel"),
        "devices the jax engine splits one model over (tensor parallelism)",
    ),
    Option(
        "coordinator",
        ("MODELPORT_COORDINATOR",),
        lambda: "",
        _coordinator,
        "serve: HOST:PORT of jax.distributed's coordinator, process 0's (empty: one process)",
    ),
    Option(
        "num_processes",
        ("MODELPORT_NUM_PROCESSES",),
        lambda: "1",
        _positive_int("num_processes"),
        "serve: how many processes (hosts) serve one model together",
    ),
    Option(
        "process_id",
        ("MODELPORT_PROCESS_ID",),
        lambda: "0",
        _non_negative_int("process_id"),
        "serve: this process's number; 0 serves HTTP, the others follow it",
    ),
    Option("mirror", ("MODELPORT_MIRROR", "HF_ENDPOINT"), lambda: "", str, "Hugging Face Hub endpoint"),
    Option(
        "max_resident_models",
        ("MODELPORT_MAX_RESIDENT_MODELS",),
        lambda: "3",
        _positive_int("max_resident_models"),
        "models kept loaded at once",
    ),
    Option("threads", ("MODELPORT_THREADS",), lambda: "4", _positive_int("threads"), "server worker threads"),
    Option("default_model", ("MODELPORT_DEFAULT_MODEL",), lambda: "smollm2", str, "model for `run` without one"),
    Option(
        "model_ttl",
        ("MODELPORT_MODEL_TTL", "MODELPORT_KEEP_ALIVE", "OLLAMA_KEEP_ALIVE"),
        lambda: "5m",
        _keep_alive,
        "how long the server keeps an idle model loaded (negative: forever)",
    ),
    Option(
        "num_parallel",
        ("MODELPORT_NUM_PARALLEL", "OLLAMA_NUM_PARALLEL"),
        lambda: str(default_slots()),
        _positive_int("num_parallel"),
        "slots per model: generations decoded together (default: twice the CPU count, 2 to 8)",
    ),
    Option(
        "num_thread",
        ("MODELPORT_NUM_THREAD",),
        lambda: "",
        _optional_number("MODELPORT_NUM_THREAD", int, 1),
        "CPU threads a model computes with (empty: one per CPU; fewer on a machine busy with other work)",
    ),
    Option(
        "warmup_tokens",
        ("MODELPORT_WARMUP_TOKENS",),
        lambda: "4",
        _non_negative_int("warmup_tokens"),
        "tokens a model decodes when it loads, so that the first request does not pay the warm-up",
    ),
    Option(
        "max_queue",
        ("MODELPORT_MAX_QUEUE", "OLLAMA_MAX_QUEUE"),
        lambda: "512",
        _non_negative_int("max_queue"),
        "requests waiting for a model before 503",
    ),
    Option(
        "origins",
        ("MODELPORT_ORIGINS", "OLLAMA_ORIGINS"),
        lambda: "",
        str,
        "extra CORS origins, comma separated (* for any)",
    ),
    Option(
        "api_key", ("MODELPORT_API_KEY",), lambda: "", str, "bearer key the server requires (empty: none)", secret=True
    ),
    Option(
        "api", ("MODELPORT_API",), lambda: "ollama", _api, "the routes at /api: ollama, or rustllm (RustLLM's REST API)"
    ),
    Option(
        "models_path",
        ("MODELPORT_MODELS_PATH",),
        lambda: "",
        str,
        "the model store's folder (empty: the home's models/)",
    ),
    Option(
        "model_path",
        ("MODELPORT_MODEL_PATH",),
        lambda: "",
        str,
        "a GGUF file or model folder `run` uses when no model is named",
    ),
    Option(
        "output_dir",
        ("MODELPORT_OUTPUT_DIR",),
        lambda: "",
        str,
        "a folder where run and generate also save each reply (empty: none)",
    ),
    *(
        Option(
            name,
            (variable,),
            lambda: "",
            _optional_number(variable, kind, low),
            f"default {option} under the model's own",
        )
        for name, (variable, option, kind, low) in SAMPLING_DEFAULTS.items()
    ),
    Option(
        "client_timeout",
        ("MODELPORT_CLIENT_TIMEOUT",),
        lambda: "60",
        _seconds("client_timeout"),
        "seconds a client may stall sending its request or reading its answer before it is dropped",
    ),
    Option(
        "allowed_paths",
        ("MODELPORT_ALLOWED_PATHS",),
        lambda: "",
        _allowed_paths,
        f"folders the server's /api/create may import from ({os.pathsep!r} separated; none by default)",
    ),
)


def default_slots() -> int:
    """Slots per model: decode is bound by reading the weights, so sequences
    decoded together cost little more than one; each slot holds a KV cache of its
    own, so a small machine gets fewer."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


@attrs.frozen(kw_only=True)
class Settings:
    home: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    engine: str = "auto"
    device: str = "auto"
    device_index: int = 0
    quantize: str = "auto"
    tensor_parallel: int = 1
    coordinator: str = ""
    num_processes: int = 1
    process_id: int = 0
    mirror: str = ""
    max_resident_models: int = 3
    threads: int = 4
    default_model: str = "smollm2"
    model_ttl: float = 300.0
    num_parallel: int = attrs.field(factory=default_slots)
    num_thread: int | None = None
    warmup_tokens: int = 4
    max_queue: int = 512
    origins: str = ""
    api_key: str = attrs.field(default="", repr=False)
    api: str = "ollama"
    models_path: str = ""
    model_path: str = ""
    output_dir: str = ""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    max_tokens: int | None = None
    allowed_paths: str = ""
    client_timeout: float = 60.0
    sources: Mapping[str, str] = attrs.field(factory=dict, eq=False)

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        dotenv: str | os.PathLike[str] | None = ".env",
    ) -> "Settings":
        """Resolve every option: flag, then environment, then ``.env``, then default."""
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        environ = os.environ if environ is None else environ
        dotenv_values = read_dotenv(dotenv) if dotenv else {}
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for option in OPTIONS:
            raw, source = _lookup(option, flags, environ, dotenv_values)
            values[option.name] = option.convert(str(raw)) if raw is not None else None
            sources[option.name] = source
        host, port = split_host(values["host"], values["port"])
        if sources["port"] == "default":
            values["port"] = port  # a port written into the host (OLLAMA_HOST=h:p)
        values["host"] = host
        return cls(sources=sources, **values)

    @property
    def models_dir(self) -> Path:
        return Path(self.models_path).expanduser() if self.models_path else Path(self.home) / "models"

    def sampling_defaults(self) -> dict[str, Any]:
        """The MODELPORT_TEMPERATURE-style defaults that are set, as SamplingPolicy field changes."""
        return {
            option: getattr(self, name)
            for name, (_, option, _, _) in SAMPLING_DEFAULTS.items()
            if getattr(self, name) is not None
        }

    @property
    def sessions_dir(self) -> Path:
        return Path(self.home) / "sessions"

    @property
    def allowed_folders(self) -> tuple[str, ...]:
        """The folders ``MODELPORT_ALLOWED_PATHS`` lists (none by default)."""
        return tuple(part for part in self.allowed_paths.split(os.pathsep) if part)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, value, source) for every setting."""
        return [(o.name, self._shown(o), self.sources.get(o.name, "default")) for o in OPTIONS]

    def _shown(self, option: Option) -> str:
        value = getattr(self, option.name)
        if option.secret:
            return "(set)" if value else ""
        return "" if value is None else str(value)


def _lookup(
    option: Option, flags: Mapping[str, Any], environ: Mapping[str, str], dotenv: Mapping[str, str]
) -> tuple[str | None, str]:
    if option.name in flags:
        return flags[option.name], "flag"
    for variable in option.env:
        if environ.get(variable):
            return environ[variable], f"environment ({variable})"
    for variable in option.env:
        if dotenv.get(variable):
            return dotenv[variable], f".env ({variable})"
    return option.default(), "default"


def split_host(host: str, port: int) -> tuple[str, int]:
    """Accept ``host``, ``host:port``, ``http://host:port`` and ``[::1]:port`` (as OLLAMA_HOST does)."""
    text = host.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.rstrip("/")
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        return address, _port(rest[1:]) if rest.startswith(":") else port
    if text.count(":") == 1:
        address, _, number = text.partition(":")
        return address or DEFAULT_HOST, _port(number)
    return text or DEFAULT_HOST, port


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and '#' comments skipped; quotes stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def update_dotenv(path: str | os.PathLike[str], key: str, value: str) -> None:
    """Set ``key=value`` in a ``.env`` file (created if missing), keeping every other
    line; the file is replaced in one step."""
    from .files import write_atomic

    target = Path(path)
    try:
        lines = target.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if line.strip().removeprefix("export ").partition("=")[0].strip() != key]
    text = "\n".join([*kept, f"{key}={value}"]) + "\n"
    write_atomic(str(target), text.encode("utf-8"))
