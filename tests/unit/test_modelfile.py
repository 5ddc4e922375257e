"""Modelfiles: parsing, rendering, merging defaults, and Go templates as Jinja
(rendered by the jinja adapter, as the server renders them)."""

from __future__ import annotations

import pytest

from modelport.adapters.jinja import JinjaChatTemplates
from modelport.domain import ChatMessage, InvalidRequest, ModelDefaults, Modelfile, chat_template
from modelport.domain.modelfile import is_go_template

CHAT = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Q"},
]
CHATML = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""
CHATML_OUT = (
    "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    "Hello<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
)


def render(template: str, messages=CHAT) -> str:
    return JinjaChatTemplates().render(chat_template(template), messages)


def test_a_prompt_response_template_runs_once_per_turn_and_is_cut_after_the_response() -> None:
    assert render(CHATML) == CHATML_OUT


def test_a_messages_template() -> None:
    ranged = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    assert render(ranged) == CHATML_OUT


def test_conditions_else_if_and_dollar_fields() -> None:
    template = (
        '{{- range .Messages }}{{ if eq .Role "user" }}U: {{ .Content }}\n'
        '{{ else if and (eq .Role "assistant") (not (eq .Content "")) }}A: {{ .Content }}\n'
        "{{ else }}[{{ $.System }}]{{ end }}{{ end }}A:"
    )
    assert render(template) == "[S]U: Hi\nA: Hello\nU: Q\nA:"


def test_literal_braces_and_whitespace_survive_any_jinja_options() -> None:
    template = "{{ if .System }}  {% sys %}\n{{ .System }}\n{{ end }}\n  U: {{ .Prompt }}\n{{ .Response }}"
    assert render(template, CHAT[:2]) == "  {% sys %}\nS\n\n  U: Hi\n"


def test_a_jinja_template_is_kept_as_it_is() -> None:
    jinja = "{% for m in messages %}{{ m.role }}:{{ m.content }}|{% endfor %}"
    assert chat_template(jinja) == jinja and not is_go_template(jinja)
    assert render(jinja, CHAT[:2]) == "system:S|user:Hi|"


@pytest.mark.parametrize(
    "template, words",
    [
        ("{{ .Tools }}", ".Tools"),
        ("{{ range $i, $m := .Messages }}{{ end }}", "range $i"),
        ("{{ if .System }}x", "never closed"),
        ("{{ .Content }}", "only known inside"),
        ("{{ json .Messages }}", "json"),
        ("{{ end }}", "without an if"),
        ("{{ if eq .Role }}{{ end }}", "only known inside"),
    ],
)
def test_what_cannot_be_translated_is_named(template: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match="template") as raised:
        chat_template(template)
    assert words in str(raised.value)


MODELFILE = '''# a comment
FROM smollm2
PARAMETER temperature 0.3
PARAMETER stop "<|im_end|>"
parameter stop User:
SYSTEM """You are Mario.
Always."""
MESSAGE user Who are you?
MESSAGE assistant """It's-a me, Mario!"""
LICENSE MIT
TEMPLATE """{{ .Prompt }}"""
'''


def test_a_modelfile_is_parsed_and_rendered_back() -> None:
    parsed = Modelfile.parse(MODELFILE)
    assert parsed.base == "smollm2"
    defaults = parsed.defaults
    assert defaults.system == "You are Mario.\nAlways." and defaults.template == "{{ .Prompt }}"
    assert dict(defaults.parameters) == {"temperature": 0.3, "stop": ("<|im_end|>", "User:")}
    assert defaults.messages == (ChatMessage.user("Who are you?"), ChatMessage.assistant("It's-a me, Mario!"))
    assert defaults.license == "MIT"
    assert Modelfile.parse(parsed.render()) == parsed


@pytest.mark.parametrize(
    "text, words",
    [
        ("SYSTEM hi", "FROM"),
        ("FROM x\nADAPTER ./lora.gguf", "ADAPTER"),
        ("FROM x\nPARAMETER mirostat 1", "mirostat"),
        ("FROM x\nPARAMETER top_k many", "top_k"),
        ("FROM x\nPARAMETER top_p", "name and a value"),
        ("FROM x\nMESSAGE wizard hi", "MESSAGE role"),
        ('FROM x\nSYSTEM """never closed', "never closed"),
        ("FROM x\nWIBBLE 1", "unknown instruction"),
        ("FROM x\nTEMPLATE {{ .Tools }}", ".Tools"),
    ],
)
def test_bad_modelfiles_name_the_problem(text: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        Modelfile.parse(text)
    assert words in str(raised.value)


def test_defaults_go_over_the_base_ones_and_into_the_chat() -> None:
    base = ModelDefaults(
        system="Base.",
        parameters={"temperature": 0.5, "top_k": 10},
        messages=[ChatMessage.user("old")],
        license="Apache",
    )
    mine = ModelDefaults(parameters={"temperature": 0.1}, system="Mine.").over(base)
    assert dict(mine.parameters) == {"temperature": 0.1, "top_k": 10}
    assert (mine.system, mine.license, mine.messages) == ("Mine.", "Apache", (ChatMessage.user("old"),))
    assert ModelDefaults.from_dict(mine.to_dict()) == mine
    chat = mine.prepend_to([ChatMessage.user("hi")])
    assert [m.content for m in chat] == ["Mine.", "old", "hi"]
    own = mine.prepend_to([ChatMessage.system("Theirs."), ChatMessage.user("hi")])
    assert [m.content for m in own] == ["Theirs.", "old", "hi"]
