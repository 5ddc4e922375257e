"""info, catalog and config: this installation, a model in depth, what fits here."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from modelport.domain import ModelInfo

from .. import render
from ..exits import EXIT_OK
from .context import Cli, num_ctx, shorten
from .models import model_card, model_json


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("modelport")
    except PackageNotFoundError:
        return "0.0.0"


def info(cli: Cli) -> int:
    if cli.model:
        return _model_info(cli, cli.services.show(cli.model))
    return _system_info(cli)


def _model_info(cli: Cli, info: ModelInfo) -> int:
    from ..catalog import estimate, model_memory

    context = num_ctx(cli)
    weights, kv_cache = model_memory(info, context)
    memory = {
        "weights": weights,
        "kv_cache": kv_cache,
        "num_ctx": context,
        "estimate": estimate(weights, kv_cache or 0),
    }
    if cli.args["--json"]:
        data = model_json(info)
        data["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in info.files]
        data["metadata"] = {k: v for k, v in info.metadata if _json_scalar(v)}
        data["memory"] = memory
        cli.print_json(data)
        return EXIT_OK
    out = cli.out
    model_card(cli, info)
    print("\n  Files", file=out)
    for file in info.files:
        print(f"    {file.path}  {render.size(file.size)}  sha256 {file.sha256 or '(not recorded)'}", file=out)
    kv_text = render.size(kv_cache) if kv_cache is not None else "unknown (the metadata lacks the shapes)"
    print("\n  Memory (an estimate)", file=out)
    print(f"    {'weights':<18}{render.size(weights)}", file=out)
    print(f"    {'KV cache':<18}{kv_text} at {context} tokens (f16)", file=out)
    print(f"    {'total':<18}{render.size(memory['estimate'])} (with 10% for buffers)", file=out)
    if info.metadata:
        print("\n  Metadata", file=out)
        for key, value in info.metadata:
            print(f"    {key:<38}{shorten(str(value), 60)}", file=out)
    return EXIT_OK


def _system_info(cli: Cli) -> int:
    from ..hardware import nvidia_gpus, system_memory

    settings = cli.settings
    memory = system_memory()
    gpus = nvidia_gpus()
    registry = cli.services.engines
    engines = {}
    for name in registry.names:
        spec = registry.spec(name)
        check = spec.check() if spec.available() else None  # runs the library once per build
        engines[name] = {
            "available": spec.available(),
            "formats": sorted(f.value for f in spec.formats),
            "extra": spec.extra,
            "check": None if check is None else {"usable": check.usable, "summary": check.summary, "fix": check.fix},
        }
    remote = cli.remote
    server_up = remote.is_up()
    paths = {
        "home": settings.home,
        "models": str(settings.models_dir),
        "sessions": str(settings.sessions_dir),
        "history": str(Path(settings.home) / "history"),
    }
    data = {
        "version": version(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "paths": paths,
        "default_model": settings.default_model,
        "engines": engines,
        "memory": None if memory is None else {"total": memory.total, "available": memory.available},
        "gpus": [{"index": g.index, "name": g.name, "total": g.total, "free": g.free} for g in gpus],
        "server": {"url": cli.args["--url"] or settings.url, "running": server_up},
    }
    if cli.args["--json"]:
        cli.print_json(data)
        return EXIT_OK
    lines = [(f"modelport {data['version']}", f"Python {data['python']}, {data['platform']}")]
    lines += [(name, path) for name, path in paths.items()]
    lines.append(("default model", settings.default_model))
    for name, engine in engines.items():
        lines += _engine_lines(name, engine)
    if memory is not None:
        available = f" ({render.size(memory.available)} available)" if memory.available else ""
        lines.append(("memory", f"{render.size(memory.total)}{available}"))
    else:
        lines.append(("memory", "unknown"))
    for gpu in gpus:
        free = f" ({render.size(gpu.free)} free)" if gpu.free is not None else ""
        lines.append((f"gpu {gpu.index}", f"{gpu.name}, {render.size(gpu.total)}{free}"))
    if not gpus:
        lines.append(("gpus", "none found (no nvidia-smi, or it reports none)"))
    lines.append(("server", f"{data['server']['url']}: {'running' if server_up else 'not running'}"))
    for key, value in lines:
        print(f"  {key:<18}{value}", file=cli.out)
    return EXIT_OK


def _engine_lines(name: str, engine: dict[str, Any]) -> list[tuple[str, str]]:
    state = (
        "available"
        if engine["available"]
        else (f"not installed (pip install 'modelport[{engine['extra']}]')" if engine["extra"] else "unavailable")
    )
    check = engine["check"]
    if check is not None and not check["usable"]:
        state = f"unusable: {check['summary']}; {check['fix']}"
    lines = [(f"engine {name}", f"{state}; runs {', '.join(engine['formats'])}")]
    if engine["available"] and (check is None or check["usable"]):
        lines.append(("", check["summary"] if check is not None else "no self-check for this engine"))
    return lines


def catalog(cli: Cli) -> int:
    from ..catalog import entries, installed_names

    budget, described = _budget(cli)
    context = num_ctx(cli)
    rows = entries(budget, context, everything=bool(cli.args["--all"]))
    installed = installed_names(cli.services.list_models())
    if cli.args["--json"]:
        cli.print_json(
            {
                "budget": described,
                "num_ctx": context,
                "models": [
                    {
                        "name": e.name,
                        "pull": e.pull_name,
                        "family": e.family,
                        "parameters": e.parameters,
                        "quantization": e.quantization,
                        "format": e.format,
                        "kind": e.kind,
                        "license": e.license,
                        "weights": e.weights_bytes,
                        "kv_cache": e.kv_cache_bytes(context),
                        "memory": need,
                        "fits": fits,
                        "installed": _installed(e, installed),
                    }
                    for e, need, fits in rows
                ],
            }
        )
        return EXIT_OK
    print(f"Memory to fit in: {described['text']}; estimates at {context} tokens of context.\n", file=cli.out)
    table_rows = [
        (
            e.name,
            _count(e.parameters),
            e.quantization,
            e.format,
            render.size(e.weights_bytes),
            render.size(need),
            fits.upper() if fits in ("gpu", "cpu") else fits,
            "yes" if _installed(e, installed) else "",
            "(bundled)" if e.bundled else e.pull_name,
        )
        for e, need, fits in rows
    ]
    render.table(
        cli.out, ("NAME", "PARAMS", "QUANT", "FORMAT", "SIZE", "MEMORY", "FITS", "INSTALLED", "PULL"), table_rows
    )
    if not cli.args["--all"]:
        hidden = len(entries(budget, context, everything=True)) - len(rows)
        if hidden:
            print(f"\n{hidden} more do not fit; --all lists them.", file=cli.out)
    return EXIT_OK


def _budget(cli: Cli):
    from ..catalog import Budget
    from ..hardware import nvidia_gpus, system_memory

    if cli.args["--memory"]:
        given = render.parse_size(cli.args["--memory"])
        return Budget(given=given), {"given": given, "text": f"{render.size(given)} (--memory)"}
    memory = system_memory()
    gpus = nvidia_gpus()
    index = cli.settings.device_index
    gpu = next((g for g in gpus if g.index == index), gpus[0] if gpus else None)
    ram = memory.total if memory else None
    vram = gpu.total if gpu else None
    parts = [
        f"{render.size(ram)} RAM" if ram else "RAM unknown",
        f"{render.size(vram)} on GPU {gpu.index} ({gpu.name})" if gpu else "no NVIDIA GPU found",
    ]
    return Budget(ram=ram, vram=vram), {"ram": ram, "vram": vram, "text": ", ".join(parts)}


def config(cli: Cli) -> int:
    rows = cli.settings.describe()
    if cli.args["--json"]:
        cli.print_json({name: {"value": value, "source": source} for name, value, source in rows})
    else:
        render.table(cli.out, ("SETTING", "VALUE", "SOURCE"), rows)
    return EXIT_OK


def _count(parameters: int) -> str:
    from modelport.domain.models import format_parameter_count

    return format_parameter_count(parameters)


def _json_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _installed(entry, installed: set[str]) -> bool:
    names = {entry.name.lower(), entry.source.lower(), f"{entry.source.lower()}:latest"}
    return bool(names & installed)
