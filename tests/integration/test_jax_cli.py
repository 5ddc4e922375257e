"""The CLI on the JAX engine, in process, with the production bootstrap."""

from __future__ import annotations

import io
import json

import pytest

from modelport.entrypoints.cli import EXIT_OK, EXIT_USAGE, main

pytestmark = pytest.mark.slow


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_generate_with_the_jax_engine(engine_home) -> None:
    status, out, err = run(
        "generate",
        "smollm2",
        "Once upon a time, there was a little girl named",
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "10",
        "--num-ctx",
        "1024",
        "--engine",
        "jax",
        "--device",
        "cpu",
        "--home",
        engine_home,
    )
    assert (status, err) == (EXIT_OK, "")
    assert out == " Emma who loved to play in the sun. She\n"


def test_embed_prints_one_vector_per_text(engine_home) -> None:
    status, out, err = run(
        "embed",
        "all-minilm",
        "This is an example sentence",
        "A man is eating food.",
        "--device",
        "cpu",
        "--home",
        engine_home,
    )
    assert (status, err) == (EXIT_OK, "")
    result = json.loads(out)
    assert result["model"] == "all-minilm:l6-v2" and len(result["embeddings"]) == 2
    assert result["embeddings"][0][:5] == pytest.approx([0.06766, 0.06350, 0.04871, 0.07931, 0.03745], abs=1e-4)


def test_embed_refuses_a_chat_model(engine_home) -> None:
    status, out, err = run("embed", "smollm2", "text", "--engine", "jax", "--home", engine_home)
    assert status == EXIT_USAGE and out == ""
    assert err.startswith("error: ") and "embeddings" in err
