from __future__ import annotations

from pathlib import Path

from modelport.entrypoints import cli

ROOT = Path(__file__).resolve().parents[2]


def test_cli_doc_shows_the_docstring_verbatim() -> None:
    assert cli.__doc__.strip() in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_every_exit_status_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for status in {code for _, code in cli.EXIT_CODES} | {cli.EXIT_OK, cli.EXIT_INTERRUPTED}:
        assert f"| {status} |" in text
