"""serve, deploy, stop-server, ps, stop and cache: the HTTP server, and a running one."""

from __future__ import annotations

import os
import shutil
from typing import Any

from modelport.domain import InvalidRequest

from .. import render
from ..config import Settings
from ..exits import EXIT_OK
from .context import SETTING_FLAGS, Cli, positive

HEAD_FIRST_WORKER = "modelport.entrypoints.http.worker.HeadFirstWorker"  # server.WORKER_CLASS


def serve(cli: Cli) -> int:
    settings = cli.settings
    if settings.num_processes > 1 or settings.process_id:
        check_group(settings)
        if settings.process_id > 0:
            return _follow(cli)
    return cli._serve()


def check_group(settings: Settings) -> None:
    """One line for a group of processes that cannot be (before JAX is started)."""
    if not settings.coordinator:
        raise InvalidRequest("--num-processes above 1 needs --coordinator HOST:PORT (process 0's address)")
    if not 0 <= settings.process_id < settings.num_processes:
        raise InvalidRequest(
            f"--process-id must be 0 to {settings.num_processes - 1} for "
            f"{settings.num_processes} processes, got {settings.process_id}"
        )
    if settings.engine not in ("auto", "jax"):
        raise InvalidRequest(f"several processes serve a model with the jax engine only, not {settings.engine}")


def _follow(cli: Cli) -> int:
    """Process I > 0 of a group: no HTTP port; it follows process 0's steps."""
    from ..bootstrap import follow

    settings = cli.settings
    print(
        f"modelport process {settings.process_id} of {settings.num_processes} follows process 0 at "
        f"{settings.coordinator} (it serves no HTTP itself)",
        file=cli.err,
        flush=True,
    )
    return follow(settings)


def deploy(cli: Cli) -> int:
    if cli.args["--detached"]:
        return _deploy_detached(cli)
    print(deploy_notes(cli.settings), file=cli.out, flush=True)
    return cli._serve()


def _deploy_detached(cli: Cli) -> int:
    from ..cli_seeds import start_detached

    if cli.injected:
        raise InvalidRequest("--detached starts a server of its own; it cannot serve services built here")
    flags = {flag: cli.args[flag] for flag in SETTING_FLAGS if cli.args.get(flag) is not None}
    flags.setdefault("--home", cli.settings.home)
    remote = cli.remote
    record = start_detached(cli.settings, flags, is_up=remote.is_up)
    if cli.args["--json"]:
        cli.print_json(record)
    else:
        print(
            f"modelport serving on {record['url']} in the background (pid {record['pid']})\n"
            f"  log   {record['log']}\n  stop  modelport stop-server --home {cli.settings.home}",
            file=cli.out,
        )
    return EXIT_OK


def stop_server(cli: Cli) -> int:
    from ..cli_seeds import stop_detached

    record = stop_detached(cli.settings)
    if cli.args["--json"]:
        cli.print_json(record)
    elif record["stopped"]:
        print(f"stopped the server on {record.get('url')} (pid {record['pid']})", file=cli.out)
    else:
        print(f"the server (pid {record['pid']}) had already stopped; removed its pid file", file=cli.out)
    return EXIT_OK


def ps(cli: Cli) -> int:
    models = cli.remote.ps()
    if cli.args["--json"]:
        cli.print_json(models)
        return EXIT_OK
    _ps_table(cli, models)
    return EXIT_OK


def _ps_table(cli: Cli, models: list[dict[str, Any]]) -> None:
    rows = [
        (
            m.get("name") or m.get("model"),
            str(m.get("digest") or "")[:12],
            render.size(m.get("size") or 0),
            _processor(m),
            m.get("context_length") or "",
            m.get("refs", ""),
            _slots(m),
            render.until(render.parse_timestamp(m.get("expires_at"))),
        )
        for m in models
    ]
    render.table(cli.out, ("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "REFS", "SLOTS", "UNTIL"), rows)


def stop(cli: Cli) -> int:
    answer = cli.remote.unload(cli.model)
    if cli.args["--json"]:
        cli.print_json(answer)
    else:
        print(f"stopped '{cli.model}'", file=cli.out)
    return EXIT_OK


def cache(cli: Cli) -> int:
    remote = cli.remote
    if cli.args["stats"]:
        return _cache_stats(cli, remote)
    if cli.args["clear"]:
        names = [m.get("name") or m.get("model") for m in remote.ps()]
        for name in names:
            remote.unload(name)
        if cli.args["--json"]:
            cli.print_json({"evicted": names})
        else:
            print("\n".join(f"evicted '{n}'" for n in names) or "no model was loaded", file=cli.out)
        return EXIT_OK
    if cli.args["enable"] or cli.args["disable"]:
        return _cache_switch(cli, bool(cli.args["enable"]))
    if not (cli.args["preload"] or cli.args["evict"]):
        return _cache_max(cli, positive(cli.args["<n>"], "max"))
    model = cli.model
    answer, word = (remote.load(model), "loaded") if cli.args["preload"] else (remote.unload(model), "evicted")
    if cli.args["--json"]:
        cli.print_json(answer)
    else:
        print(f"{word} '{model}'", file=cli.out)
    return EXIT_OK


def _cache_stats(cli: Cli, remote) -> int:
    health, models = remote.health(), remote.ps()
    if cli.args["--json"]:
        cli.print_json({"server": remote.url, "health": health, "models": models})
        return EXIT_OK
    print(f"  {'server':<18}{remote.url}", file=cli.out)
    for key, value in health.items():
        if not isinstance(value, (dict, list)):
            print(f"  {key:<18}{value}", file=cli.out)
    engines = health.get("engines")
    if isinstance(engines, dict):
        shown = ", ".join(f"{k} ({'available' if v else 'not installed'})" for k, v in engines.items())
        print(f"  {'engines':<18}{shown}", file=cli.out)
    total = sum(int(m.get("size") or 0) for m in models)
    print(f"  {'resident':<18}{len(models)} model(s), {render.size(total) or '0 B'}\n", file=cli.out)
    _ps_table(cli, models)
    return EXIT_OK


def _cache_switch(cli: Cli, enabled: bool) -> int:
    from ..cli_seeds import set_model_cache

    value, where = set_model_cache(enabled)
    if cli.args["--json"]:
        cli.print_json({"model_ttl": value, "written_to": where, "running_server_changed": False})
        return EXIT_OK
    what = (
        "keeps each model loaded for 5 minutes after its last request"
        if enabled
        else "unloads each model as soon as its request ends"
    )
    print(
        f"Wrote MODELPORT_MODEL_TTL={value} to {where}: a server started from this folder {what}.\n"
        f"A running server keeps its setting; elsewhere: modelport serve --model-ttl {value}",
        file=cli.out,
    )
    return EXIT_OK


def _cache_max(cli: Cli, limit: int) -> int:
    """A server sets its limit when it starts and the Ollama API has no call to
    change it, so this sets it for the next server started here (in ./.env)."""
    from ..config import update_dotenv

    update_dotenv(".env", "MODELPORT_MAX_RESIDENT_MODELS", str(limit))
    where = os.path.abspath(".env")
    if cli.args["--json"]:
        cli.print_json({"max_resident_models": limit, "written_to": where, "running_server_changed": False})
        return EXIT_OK
    print(
        f"A running server keeps the limit it started with: the Ollama API has no call to change it.\n"
        f"Wrote MODELPORT_MAX_RESIDENT_MODELS={limit} to {where}: a server started from this folder\n"
        f"(`modelport serve`) keeps at most {limit} model(s) loaded. Anywhere else: "
        f"modelport serve --max-models {limit}",
        file=cli.out,
    )
    return EXIT_OK


def _slots(model: dict[str, Any]) -> str:
    """``busy/total +waiting @ tok/s`` of a /api/ps entry ('' for a server that does not say)."""
    slots = model.get("slots")
    if not isinstance(slots, dict):
        return ""
    text = f"{slots.get('busy', 0)}/{slots.get('total', 0)}"
    if slots.get("waiting"):
        text += f" +{slots['waiting']}"
    if slots.get("tokens_per_second"):
        text += f" @ {slots['tokens_per_second']:.1f} tok/s"
    return text


def _processor(model: dict[str, Any]) -> str:
    """Ollama's PROCESSOR column: how much of the model sits in GPU memory."""
    size, vram = int(model.get("size") or 0), int(model.get("size_vram") or 0)
    if size <= 0 or vram <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    gpu = round(100 * vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def deploy_notes(settings: Settings) -> str:
    """What ``deploy`` prints before it serves: how to reach the server, and how to
    keep it running (modelport itself stays in the foreground)."""
    url = settings.url
    local = settings.host in ("127.0.0.1", "localhost", "::1")
    executable = shutil.which("modelport") or "modelport"
    reach = (
        (
            "only this machine can reach it; --host 0.0.0.0 opens it to the network (there is no "
            "authentication: put a reverse proxy in front)"
        )
        if local
        else (f"listening on {settings.host}: anyone who can reach this port can use it (no authentication)")
    )
    serve_line = (
        f"{executable} serve --host {settings.host} --port {settings.port} "
        f"--threads {settings.threads} --max-models {settings.max_resident_models}"
    )
    return "\n".join(
        [
            "modelport deploy: the Ollama-compatible HTTP API, served in the foreground by gunicorn.",
            "",
            f"  address     {url}  ({reach})",
            f"  models      {settings.models_dir} (and the bundled ones)",
            f"  check       curl {url}/api/tags",
            f'  clients     OLLAMA_HOST={url} ollama list;  ollama.Client(host="{url}")',
            f'  this CLI    modelport ps --url {url};  modelport run --url {url} MODEL "PROMPT"',
            "",
            "modelport does not detach: to keep the server running after you log out, give this",
            "command to a process manager (a systemd unit's ExecStart=, supervisord, a container):",
            "",
            f"  MODELPORT_HOME={settings.home} {serve_line}",
            "",
            "or run gunicorn yourself with the same settings in the environment:",
            "",
            f"  MODELPORT_HOME={settings.home} gunicorn --worker-class {HEAD_FIRST_WORKER} --threads {settings.threads} "
            f"--bind {settings.host}:{settings.port} 'modelport.entrypoints.http.app:get_app()'",
            "",
        ]
    )
