"""Modelfiles: a model made from another with its own defaults.

A Modelfile (Ollama's format) names a base model (``FROM``) and what the new model
adds: a system prompt, sampling parameters, a chat template, example messages and
a license. :class:`ModelDefaults` is what is stored with the new model and applied
to its requests; :class:`Modelfile` parses and renders the text form.

Ollama writes templates in Go's text/template language; :func:`chat_template`
translates the subset Ollama's own templates use into a Jinja chat template (the
language every engine here renders), in this one place, and names what it cannot
translate.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

import attrs

from .errors import InvalidRequest
from .messages import ChatMessage, Role
from .sampling import SamplingPolicy, typed

# The one table of Ollama's sampling names: a Modelfile's PARAMETER names, which
# Ollama's request ``options`` share, -> (SamplingPolicy field, type). A model's own
# defaults are kept under these names (PARAMETER lines, index.json, saved chats), so
# the table lives with the Modelfile; every edge that speaks them (the Ollama
# routes, /api/show, the remote adapter, generation_config.json) reads it here.
PARAMETER_FIELDS: dict[str, tuple[str, type]] = {
    "temperature": ("temperature", float),
    "top_k": ("top_k", int),
    "top_p": ("top_p", float),
    "min_p": ("min_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "repeat_last_n": ("repeat_last_n", int),
    "seed": ("seed", int),
    "stop": ("stop", list),
    "num_predict": ("max_tokens", int),
    "num_ctx": ("num_ctx", int),
}


def parameter_changes(options: Mapping[str, Any] | None, *, what: str = "options") -> dict[str, Any]:
    """The field changes ``options`` ask for, typed; unknown names are ignored (as
    Ollama does). Ollama's sentinels: seed -1 is a random seed, num_predict -1
    (or -2) no limit; num_predict 0 is refused."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidRequest(f"{what} must be an object")
    found: dict[str, Any] = {}
    for key, (field, kind) in PARAMETER_FIELDS.items():
        if key in options and options[key] is not None:
            found[field] = typed(key, options[key], kind)
    if "seed" in found and found["seed"] < 0:
        found["seed"] = None
    if "max_tokens" in found and found["max_tokens"] < 0:
        found["max_tokens"] = None
    if found.get("max_tokens") == 0:
        raise InvalidRequest("num_predict must not be 0")
    return found


def parameter_policy(options: Mapping[str, Any] | None, base: SamplingPolicy | None = None) -> SamplingPolicy:
    """``base`` (modelport's defaults) with ``options`` applied, validated."""
    return (base or SamplingPolicy()).with_changes(parameter_changes(options))


def as_parameters(policy: SamplingPolicy) -> dict[str, Any]:
    """Every setting of ``policy`` under its parameter name (what :func:`parameter_changes`
    reads back).

    >>> as_parameters(SamplingPolicy(seed=3))["seed"]
    3
    >>> parameter_changes({"num_predict": 12, "seed": -1, "mirostat": 2})
    {'seed': None, 'max_tokens': 12}
    """
    options: dict[str, Any] = {
        "temperature": policy.temperature,
        "top_k": policy.top_k,
        "top_p": policy.top_p,
        "min_p": policy.min_p,
        "repeat_penalty": policy.repeat_penalty,
        "repeat_last_n": policy.repeat_last_n,
        "num_ctx": policy.num_ctx,
        "num_predict": -1 if policy.max_tokens is None else policy.max_tokens,
        "seed": -1 if policy.seed is None else policy.seed,
    }
    if policy.stop:
        options["stop"] = list(policy.stop)
    return options


# PARAMETER names and their types; ``stop`` may be given several times.
PARAMETERS: dict[str, type] = {name: str if kind is list else kind for name, (_, kind) in PARAMETER_FIELDS.items()}
# Ollama's other parameters: known, and refused by name (nothing here honours them).
UNSUPPORTED_PARAMETERS = (
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "num_gpu",
    "num_thread",
    "num_batch",
    "num_keep",
    "typical_p",
    "tfs_z",
    "presence_penalty",
    "frequency_penalty",
    "penalize_newline",
    "use_mmap",
    "use_mlock",
    "numa",
    "low_vram",
    "main_gpu",
)
INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "MESSAGE", "LICENSE", "ADAPTER", "REQUIRES")
ROLES = ("system", "user", "assistant")


def _parameters(value: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in items))


def _messages(value: Iterable[ChatMessage]) -> tuple[ChatMessage, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class ModelDefaults:
    """What a model adds to its base: ``system`` (used when a chat has no system
    message), ``template`` (as given: a Jinja chat template or Ollama's Go
    template; None keeps the base model's), ``parameters`` (PARAMETER names: the
    model's sampling defaults), ``messages`` (put before every chat) and
    ``license``."""

    system: str | None = None
    template: str | None = None
    parameters: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_parameters)
    messages: tuple[ChatMessage, ...] = attrs.field(default=(), converter=_messages)
    license: str | None = None

    def __attrs_post_init__(self) -> None:
        check_parameters(dict(self.parameters))
        if self.template is not None:
            chat_template(self.template)  # refuse an untranslatable template when it is given

    @property
    def empty(self) -> bool:
        return self == ModelDefaults()

    def over(self, base: "ModelDefaults") -> "ModelDefaults":
        """These defaults on top of ``base``'s: each parameter given here replaces the
        base's, messages given here replace the base's, and so do the rest."""
        return ModelDefaults(
            system=self.system if self.system is not None else base.system,
            template=self.template if self.template is not None else base.template,
            parameters={**dict(base.parameters), **dict(self.parameters)},
            messages=self.messages or base.messages,
            license=self.license if self.license is not None else base.license,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.system is not None:
            data["system"] = self.system
        if self.template is not None:
            data["template"] = self.template
        if self.parameters:
            data["parameters"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.parameters}
        if self.messages:
            data["messages"] = [{"role": m.role.value, "content": m.content} for m in self.messages]
        if self.license is not None:
            data["license"] = self.license
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelDefaults":
        return cls(
            system=data.get("system"),
            template=data.get("template"),
            parameters=data.get("parameters") or {},
            license=data.get("license"),
            messages=[ChatMessage.from_dict(m) for m in data.get("messages") or ()],
        )

    def prepend_to(self, messages: Iterable[ChatMessage]) -> tuple[ChatMessage, ...]:
        """A chat as the model sees it: the chat's own system message, else the
        model's system prompt, then the model's messages, then the rest of the chat."""
        chat = tuple(messages)
        if chat and chat[0].role is Role.SYSTEM:
            return chat[:1] + self.messages + chat[1:]
        system = (ChatMessage.system(self.system),) if self.system else ()
        return system + self.messages + chat


def check_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse unknown, unsupported and ill-typed parameters (by name)."""
    for key in parameters:
        if key in UNSUPPORTED_PARAMETERS:
            raise InvalidRequest(f"parameter '{key}' is not supported by modelport")
        if key not in PARAMETERS:
            raise InvalidRequest(f"unknown parameter '{key}'; known: {', '.join(PARAMETERS)}")
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in parameters.items()}
    parameter_policy(options)  # types and ranges
    return options


def parameter_value(key: str, text: str) -> Any:
    """A ``PARAMETER key value`` line's value, typed."""
    kind = PARAMETERS.get(key)
    if kind is None:
        check_parameters({key: text})
    try:
        return int(text) if kind is int else float(text) if kind is float else text
    except ValueError:
        raise InvalidRequest(
            f"parameter '{key}' must be a {'whole ' if kind is int else ''}number, got {text!r}"
        ) from None


def parameter_lines(policy: SamplingPolicy) -> list[str]:
    """Every setting of ``policy`` as ``name value`` lines (``/api/show``'s
    ``parameters``; ``stop`` once per string), what :func:`read_parameter_lines` reads.

    >>> parameter_lines(SamplingPolicy(stop=("END",)))[-1]
    'stop "END"'
    """
    lines = []
    for key, value in as_parameters(policy).items():
        values = value if isinstance(value, list) else [value]
        lines += [f'{key} "{v}"' if isinstance(v, str) else f"{key} {v}" for v in values]
    return lines


def read_parameter_lines(text: str) -> dict[str, Any]:
    r"""``name value`` lines as parameters (``stop`` gathered into a list), typed by
    the table; names it does not know (another server's) and bad lines are skipped.

    >>> read_parameter_lines('temperature 0.5\nstop "a b"\nstop "c"\nmirostat 1')
    {'temperature': 0.5, 'stop': ['a b', 'c']}
    """
    found: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key not in PARAMETERS or not value.strip():
            continue
        try:
            typed = parameter_value(key, _unquote(value.strip()))
        except InvalidRequest:
            continue
        if key == "stop":
            found.setdefault("stop", []).append(typed)
        else:
            found[key] = typed
    return found


@attrs.frozen(kw_only=True)
class Modelfile:
    """A parsed Modelfile: the base (``FROM``: a model name, a GGUF file or a model
    folder) and the defaults the new model adds."""

    base: str
    defaults: ModelDefaults = attrs.field(factory=ModelDefaults)

    @classmethod
    def parse(cls, text: str) -> "Modelfile":
        base: str | None = None
        fields: dict[str, Any] = {}
        parameters: dict[str, Any] = {}
        messages: list[ChatMessage] = []
        licenses: list[str] = []
        for number, instruction, value in _instructions(text):
            where = f"Modelfile line {number}"
            if instruction == "FROM":
                base = value
            elif instruction == "PARAMETER":
                key, _, rest = value.partition(" ")
                key, rest = key.strip().lower(), _unquote(rest.strip())
                if not rest:
                    raise InvalidRequest(f"{where}: PARAMETER needs a name and a value")
                typed = parameter_value(key, rest)
                if key == "stop":
                    parameters.setdefault("stop", []).append(typed)
                else:
                    parameters[key] = typed
            elif instruction in ("SYSTEM", "TEMPLATE"):
                fields[instruction.lower()] = value
            elif instruction == "MESSAGE":
                role, _, content = value.partition(" ")
                if role.lower() not in ROLES:
                    raise InvalidRequest(f"{where}: MESSAGE role must be one of {', '.join(ROLES)}, got {role!r}")
                messages.append(ChatMessage(role=role.lower(), content=_unquote(content.strip())))
            elif instruction == "LICENSE":
                licenses.append(value)
            elif instruction == "ADAPTER":
                raise InvalidRequest(f"{where}: ADAPTER (LoRA adapters) is not supported by modelport")
            elif instruction == "REQUIRES":
                continue  # an Ollama version requirement: nothing to check here
        if not base:
            raise InvalidRequest("a Modelfile needs a FROM line naming the base model or file")
        license_text = "\n\n".join(licenses) if licenses else None
        return cls(
            base=base, defaults=ModelDefaults(parameters=parameters, messages=messages, license=license_text, **fields)
        )

    def render(self) -> str:
        return render_modelfile(self.base, self.defaults)


def render_modelfile(base: str, defaults: ModelDefaults, template: str | None = None) -> str:
    """The Modelfile text that :meth:`Modelfile.parse` reads back; ``template``
    is shown when the defaults have none of their own (the model's native one)."""
    lines = ["# Modelfile generated by modelport", f"FROM {base}"]
    shown = defaults.template if defaults.template is not None else template
    if shown:
        lines.append(f"TEMPLATE {_quote(shown)}")
    if defaults.system is not None:
        lines.append(f"SYSTEM {_quote(defaults.system)}")
    for key, value in defaults.parameters:
        for item in value if isinstance(value, tuple) else (value,):
            lines.append(f"PARAMETER {key} {_quote(item) if isinstance(item, str) else item}")
    for message in defaults.messages:
        lines.append(f"MESSAGE {message.role.value} {_quote(message.content)}")
    if defaults.license:
        lines.append(f"LICENSE {_quote(defaults.license)}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    if '"""' in text:
        raise InvalidRequest("a Modelfile value cannot hold three double quotes in a row")
    return f'"""{text}"""' if ("\n" in text or '"' in text) else f'"{text}"'


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _instructions(text: str) -> Iterable[tuple[int, str, str]]:
    """(line number, INSTRUCTION, value) for every instruction; ``\"\"\"`` values may
    span lines, ``"..."`` values are unquoted, ``#`` starts a comment line."""
    if not isinstance(text, str):
        raise InvalidRequest("a Modelfile must be text")
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        if instruction not in INSTRUCTIONS:
            raise InvalidRequest(
                f"Modelfile line {number}: unknown instruction {word!r}; known: {', '.join(INSTRUCTIONS)}"
            )
        rest = rest.strip()
        if rest.startswith('"""') or (instruction == "MESSAGE" and '"""' in rest):
            head, _, tail = rest.partition('"""')
            body = tail
            while '"""' not in body:
                if index >= len(lines):
                    raise InvalidRequest(f'Modelfile line {number}: a """ value is never closed')
                body += "\n" + lines[index]
                index += 1
            value, _, after = body.partition('"""')
            if after.strip():
                raise InvalidRequest(f'Modelfile line {number}: text after the closing """')
            rest = head + value if instruction == "MESSAGE" else value
        elif instruction != "PARAMETER":
            rest = _unquote(rest)
        if not rest and instruction not in ("SYSTEM", "TEMPLATE", "LICENSE"):
            raise InvalidRequest(f"Modelfile line {number}: {instruction} needs a value")
        yield number, instruction, rest


# -- Ollama's Go templates, as Jinja ------------------------------------------------------

_ACTION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.DOTALL)
_GO_HINT = re.compile(r"\{\{-?\s*(?:\.|\$|if\s|range\s|end\b|else\b|/\*)|\{\{[^}]*\s\$?\.[A-Z]")
_FIELDS = {"System": "system", "Prompt": "prompt", "Response": "response"}
_MESSAGE_FIELDS = {"Role": "message.role", "Content": "message.content"}


def is_go_template(template: str) -> bool:
    """Whether ``template`` is Ollama's Go template language (else Jinja)."""
    return bool(_GO_HINT.search(template))


def chat_template(template: str) -> str:
    """The Jinja chat template (over ``messages``, with ``add_generation_prompt``)
    that ``template`` means: a Jinja template as it is, a Go template translated.

    The Go subset: ``.System``, ``.Prompt``, ``.Response``; ``range .Messages``
    with ``.Role`` and ``.Content`` (and ``$.System`` inside it); ``if``/``else
    if``/``else``/``end`` over fields, ``not``, ``eq``, ``ne``, ``and``, ``or``
    and string literals; ``{{-``/``-}}`` trimming; comments. A template without
    ``.Messages`` is run once per turn, as Ollama runs it, and the last turn is cut
    after ``.Response``. Anything else is an InvalidRequest naming it."""
    if not isinstance(template, str):
        raise InvalidRequest("a template must be text")
    if not is_go_template(template):
        return template
    tokens = _go_tokens(template)
    if any(kind == "range" for kind, _ in tokens):
        system = (
            "{% set system = messages|selectattr('role', 'equalto', 'system')"
            "|map(attribute='content')|join('\\n\\n') %}{% set prompt = '' %}{% set response = '' %}"
        )
        return system + _jinja(tokens)
    full, cut = _jinja(tokens), _jinja(_cut_after_response(tokens))
    run = (
        "{% set system, prompt, response = ns.system, ns.prompt, ns.response %}"
        + full
        + "{% set ns.system, ns.prompt, ns.response = '', '', '' %}"
    )
    return (
        "{% set ns = namespace(system='', prompt='', response='') %}"
        "{% for message in messages %}"
        "{% if message.role == 'system' %}{% if ns.prompt or ns.response %}" + run + "{% endif %}"
        "{% set ns.system = message.content %}"
        "{% elif message.role == 'user' %}{% if ns.response %}" + run + "{% endif %}"
        "{% set ns.prompt = message.content %}"
        "{% elif message.role == 'assistant' %}{% set ns.response = message.content %}"
        "{% endif %}{% endfor %}"
        "{% set system, prompt, response = ns.system, ns.prompt, ns.response %}" + cut
    )


def _go_tokens(template: str) -> list[tuple[str, str]]:
    """(kind, payload): ("text", literal) or (action kind, Jinja), trimming applied."""
    tokens: list[tuple[str, str]] = []
    position, stack, trim_next = 0, [], False
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            tokens.append(("text", text))
        position, trim_next = match.end(), bool(match.group(3))
        action = match.group(2).strip()
        tokens.append(_action(action, stack))
    tail = template[position:]
    tokens.append(("text", tail.lstrip() if trim_next else tail))
    if stack:
        raise InvalidRequest(f"template: {{{{ {stack[-1]} }}}} is never closed with {{{{ end }}}}")
    return [t for t in tokens if t != ("skip", "")]


def _action(action: str, stack: list[str]) -> tuple[str, str]:
    in_range = "range" in stack
    if action.startswith("/*") and action.endswith("*/"):
        return ("skip", "")
    if action == "end":
        if not stack:
            raise InvalidRequest("template: {{ end }} without an if or range")
        return ("end", "{% endfor %}" if stack.pop() == "range" else "{% endif %}")
    if action == "else":
        if not stack or stack[-1] != "if":
            raise InvalidRequest("template: {{ else }} outside an if")
        return ("else", "{% else %}")
    if action.startswith("else if "):
        if not stack or stack[-1] != "if":
            raise InvalidRequest("template: {{ else if }} outside an if")
        return ("else", "{% elif " + _condition(action[8:], in_range) + " %}")
    if action.startswith("if "):
        stack.append("if")
        return ("if", "{% if " + _condition(action[3:], in_range) + " %}")
    if action.startswith("range "):
        if action.split() != ["range", ".Messages"] or in_range:
            raise InvalidRequest(
                f"template: {{{{ {action} }}}} is not supported; "
                "only {{ range .Messages }}, or give a Jinja chat template"
            )
        stack.append("range")
        return ("range", "{% for message in messages %}")
    value = _operand(action, in_range)
    return ("response" if value == "response" else "value", "{{ " + value + " }}")


def _condition(text: str, in_range: bool) -> str:
    words = re.findall(r'"(?:[^"\\]|\\.)*"|\(|\)|[^\s()]+', text)
    expression, rest = _expression(words, in_range)
    if rest:
        raise InvalidRequest(f"template: cannot read the condition {text!r}")
    return expression


def _expression(words: list[str], in_range: bool) -> tuple[str, list[str]]:
    if not words:
        raise InvalidRequest("template: an empty condition")
    head, rest = words[0], words[1:]
    if head == "(":
        inner, rest = _expression(rest, in_range)
        if not rest or rest[0] != ")":
            raise InvalidRequest("template: unbalanced parentheses")
        return inner, rest[1:]
    if head in ("not", "eq", "ne", "and", "or"):
        args = []
        while rest and rest[0] != ")":
            arg, rest = _expression(rest, in_range)
            args.append(arg)
        if head == "not" and len(args) == 1:
            return f"(not {args[0]})", rest
        if head in ("eq", "ne") and len(args) >= 2:
            op = "==" if head == "eq" else "!="
            joined = (" or " if head == "eq" else " and ").join(f"{args[0]} {op} {a}" for a in args[1:])
            return f"({joined})", rest
        if head in ("and", "or") and len(args) >= 2:
            return "(" + f" {head} ".join(args) + ")", rest
        raise InvalidRequest(f"template: {head} has the wrong number of arguments")
    return _operand(head, in_range), rest


def _operand(word: str, in_range: bool) -> str:
    if word.startswith('"') and word.endswith('"') and len(word) >= 2:
        try:
            return json.dumps(json.loads(word), ensure_ascii=False)  # Go's escapes are JSON's, mostly
        except ValueError:
            raise InvalidRequest(f"template: cannot read the string {word}") from None
    name = word[2:] if word.startswith("$.") else word[1:] if word.startswith(".") else None
    if name in _FIELDS:
        return _FIELDS[name]
    if name in _MESSAGE_FIELDS and in_range and not word.startswith("$"):
        return _MESSAGE_FIELDS[name]
    if name in _MESSAGE_FIELDS:
        raise InvalidRequest(f"template: {word} is only known inside {{{{ range .Messages }}}}")
    raise InvalidRequest(
        f"template: {word!r} is not supported by modelport's translation of Go templates "
        "(tools, images, functions and variables are not); give a Jinja chat template"
    )


def _cut_after_response(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Everything up to the first ``.Response``, then only what closes the blocks
    still open there (Ollama drops the rest of the last turn)."""
    out: list[tuple[str, str]] = []
    open_: list[str] = []
    for kind, payload in tokens:
        out.append((kind, payload))
        if kind in ("if", "range"):
            open_.append(kind)
        elif kind == "end":
            open_.pop()
        elif kind == "response":
            return out + [("end", "{% endfor %}" if k == "range" else "{% endif %}") for k in reversed(open_)]
    return out


def _jinja(tokens: list[tuple[str, str]]) -> str:
    """Literal text becomes string expressions, so that whatever whitespace options
    an engine compiles the template with (trim_blocks, lstrip_blocks, trailing
    newlines) the output is the Go template's, byte for byte."""
    return "".join(
        "{{ " + json.dumps(payload, ensure_ascii=False) + " }}" if kind == "text" else payload
        for kind, payload in tokens
        if payload
    )
