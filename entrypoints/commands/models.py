"""pull, search, list, show, verify, copy, remove and create: the models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from modelport.domain import InvalidRequest, Modelfile, ModelInfo, ModelportError, ModelRef

from .. import render
from ..exits import EXIT_ERROR, EXIT_OK, exit_code
from .context import Cli, positive, shorten


def pull(cli: Cli) -> int:
    name = cli.model
    revision = cli.args["--revision"]
    if revision:
        ref = ModelRef.parse(name)
        if ref.revision and ref.revision != revision:
            raise InvalidRequest(f"'{name}' names revision {ref.revision}; --revision says {revision}: give one")
        name = str(attrs.evolve(ref, revision=ModelRef.parse(f"x@{revision}").revision))
    if cli.args["--trust-remote-code"]:
        from ..cli_seeds import TRUST_REMOTE_CODE_NOTE

        print(TRUST_REMOTE_CODE_NOTE, file=cli.err)
    progress = render.pull_progress(cli.err)
    try:
        info = cli.backend.pull(name, progress)
    finally:
        progress.close()
    if cli.args["--json"]:
        cli.print_json(model_json(info))
    else:
        print(f"pulled {info.name} ({render.size(info.size)})", file=cli.out)
    return EXIT_OK


def search(cli: Cli) -> int:
    query = " ".join(cli.args["<query>"])
    filters: dict[str, Any] = {"author": cli.args["--author"], "filter": cli.args["--filter"]}
    if cli.args["--sort"]:
        filters["sort"] = cli.args["--sort"]
    if cli.args["--limit"]:
        filters["limit"] = positive(cli.args["--limit"], "--limit")
    hits = cli.services.search(query, **filters)
    if cli.args["--json"]:
        cli.print_json(
            [
                {
                    "id": h.repo_id,
                    "downloads": h.downloads,
                    "likes": h.likes,
                    "pipeline_tag": h.pipeline_tag,
                    "tags": list(h.tags),
                }
                for h in hits
            ]
        )
        return EXIT_OK
    if not hits:
        print(f"no models match '{query}'", file=cli.err)
        return EXIT_OK
    rows = [(h.repo_id, h.downloads, h.likes, h.pipeline_tag or "", shorten(", ".join(h.tags), 40)) for h in hits]
    render.table(cli.out, ("MODEL", "DOWNLOADS", "LIKES", "TASK", "TAGS"), rows)
    return EXIT_OK


def list_models(cli: Cli) -> int:
    models = cli.backend.list_models()
    if cli.args["--json"]:
        cli.print_json([model_json(m) for m in models])
        return EXIT_OK
    rows = [
        (
            m.name,
            m.digest[:12],
            render.size(m.size),
            m.format.value,
            m.architecture,
            m.parameter_size,
            m.quantization or "",
            render.age(m.modified_at),
        )
        for m in models
    ]
    render.table(cli.out, ("NAME", "ID", "SIZE", "FORMAT", "ARCH", "PARAMS", "QUANT", "MODIFIED"), rows)
    return EXIT_OK


def show(cli: Cli) -> int:
    info = cli.backend.show(cli.model)
    if cli.args["--json"]:
        cli.print_json(model_json(info))
        return EXIT_OK
    model_card(cli, info)
    return EXIT_OK


def model_card(cli: Cli, info: ModelInfo) -> None:
    licence = (info.license or "").strip()
    rows = [
        ("architecture", info.architecture),
        ("parameters", info.parameter_size),
        ("quantization", info.quantization or ""),
        ("context length", str(info.context_length or "")),
        ("embedding length", str(info.embedding_length or "")),
        ("format", info.format.value),
        ("capabilities", ", ".join(sorted(c.value for c in info.capabilities))),
        ("size", render.size(info.size)),
        ("location", info.location),
        ("aliases", ", ".join(info.aliases)),
        ("license", licence.splitlines()[0] if licence else ""),
    ]
    print(f"  Model {info.name}", file=cli.out)
    for key, value in rows:
        if value:
            print(f"    {key:<18}{value}", file=cli.out)
    if info.default_options:
        print("\n  Parameters", file=cli.out)
        for key, value in info.default_options:
            print(f"    {key:<18}{value}", file=cli.out)


def verify(cli: Cli) -> int:
    report = cli.services.verify(cli.model)
    if cli.args["--json"]:
        cli.print_json(
            {
                "model": report.model,
                "ok": report.ok,
                "files": [
                    {"path": c.path, "expected": c.expected, "actual": c.actual, "ok": c.ok and c.actual is not None}
                    for c in report.checks
                ],
            }
        )
    else:
        rows = [(c.path, _check_state(c), (c.actual or "")[:16]) for c in report.checks]
        render.table(cli.out, ("FILE", "STATE", "SHA256"), rows)
    if not report.ok:
        print(
            f"error: {len(report.failures)} of {len(report.checks)} files of {report.model} failed "
            f"verification; pull or import it again",
            file=cli.err,
        )
        return EXIT_ERROR
    return EXIT_OK


def copy(cli: Cli) -> int:
    info = cli.backend.copy(cli.args["<source>"], cli.args["<destination>"])
    if cli.args["--json"]:
        cli.print_json(model_json(info))
    else:
        print(f"copied '{cli.args['<source>']}' to '{info.name}'", file=cli.out)
    return EXIT_OK


def remove(cli: Cli) -> int:
    status, removed = EXIT_OK, []
    for name in cli.models:
        try:
            cli.backend.remove(name)
        except ModelportError as exc:
            print(f"error: {exc}", file=cli.err)
            status = status or exit_code(exc) or EXIT_ERROR
            continue
        removed.append(name)
        if not cli.args["--json"]:
            print(f"deleted '{name}'", file=cli.out)
    if cli.args["--json"]:
        cli.print_json({"deleted": removed})
    return status


def create(cli: Cli) -> int:
    if cli.args["--file"]:
        return _create_from_modelfile(cli, cli.args["--file"])
    path = cli.args["<path>"]
    if not os.path.exists(os.path.expanduser(path)):
        raise InvalidRequest(f"cannot import '{path}': no such file or folder")
    info = cli.services.import_model(cli.model, path, replace=True)  # as create -f, and Ollama's create
    if cli.args["--json"]:
        cli.print_json(model_json(info))
    else:
        print(f"created '{info.name}' from {path} ({render.size(info.size)})", file=cli.out)
    return EXIT_OK


def _create_from_modelfile(cli: Cli, file: str) -> int:
    """A model from a Modelfile; a relative FROM path is read from the Modelfile's folder."""
    try:
        text = Path(file).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read the Modelfile '{file}': {exc}") from None
    modelfile = Modelfile.parse(text)
    base = modelfile.base
    if ModelRef.parse(base).is_path and not os.path.isabs(os.path.expanduser(base)):
        base = os.path.join(os.path.dirname(os.path.abspath(file)), base)
    info = cli.services.create(cli.model, base, modelfile.defaults)
    if cli.args["--json"]:
        cli.print_json(model_json(info))
    else:
        print(f"created '{info.name}' from {modelfile.base}", file=cli.out)
    return EXIT_OK


def _check_state(check) -> str:
    if check.actual is None:
        return "MISSING"
    if check.expected is None:
        return "ok (no recorded sha256)"
    return "ok" if check.ok else "MISMATCH"


def model_json(info: ModelInfo) -> dict[str, Any]:
    """modelport's own JSON for a model (``--json``; not an Ollama shape)."""
    return {
        "name": info.name,
        "digest": info.digest,
        "size": info.size,
        "format": info.format.value,
        "architecture": info.architecture,
        "parameters": info.parameter_count,
        "parameter_size": info.parameter_size,
        "quantization": info.quantization,
        "context_length": info.context_length,
        "embedding_length": info.embedding_length,
        "capabilities": sorted(c.value for c in info.capabilities),
        "location": info.location,
        "read_only": info.read_only,
        "aliases": list(info.aliases),
        "modified_at": info.modified_at,
        "default_options": dict(info.default_options),
        "license": info.license,
    }
