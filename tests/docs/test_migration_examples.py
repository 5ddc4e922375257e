"""Every example in the migration pages (docs/migrating-*.md) runs and succeeds.

Each fenced block must follow a marker:

- ``<!-- example -->``: a console block; its ``$`` lines run in one bash session, in
  order, each expected to exit 0 (or the status a trailing ``# exits N`` names);
- ``<!-- example: server -->``: its one ``$`` line is a server, started in the
  background until the page ends, waited for on its port;
- ``<!-- example: python -->`` / ``<!-- example: node -->``: the block runs as a script
  (node only where it is installed).

Ports the pages name (11434, 11435, 11436, 8000) are rewritten to free ones, models
come from the bundled SmolLM2 and from a Hub look-alike on 127.0.0.1 holding tiny
files under the names the pages pull, and each page gets a fresh MODELPORT_HOME."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import attrs
import pytest
from support.hubserver import HubServer
from support.modelfiles import gguf_with_data

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.glob("migrating-*.md"))
PORTS = ("11434", "11435", "11436", "8000")
BLOCK = re.compile(r"(?:<!-- example(?:: (?P<kind>[\w-]+))? -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
STEP_S = 300  # one command, or one script (a model load and a short reply on a busy machine)
SERVER_S = 90
BIN = str(Path(sys.executable).parent)


@attrs.frozen
class Example:
    kind: str  # console, server, python, node
    body: str
    line: int


def examples(page: Path) -> list[Example]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        marker = match.group(0).startswith("<!--")
        assert marker, f"{page.name}:{line}: a code block without an <!-- example --> marker"
        kind = match.group("kind") or "console"
        assert kind in ("console", "server", "python", "node"), f"{page.name}:{line}: unknown kind {kind}"
        found.append(Example(kind=kind, body=match.group("body"), line=line))
    return found


def test_there_is_a_page_per_seed_system() -> None:
    assert [p.name for p in PAGES] == ["migrating-hugging-llama.md", "migrating-model-rs.md", "migrating-rustllm.md"]
    for page in PAGES:
        kinds = {e.kind for e in examples(page)}
        assert "console" in kinds and "python" in kinds, page.name


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def hub(tmp_path) -> Iterator[HubServer]:
    """The repositories the pages pull, with tiny GGUF files under their real names."""
    from modelport.entrypoints.catalog import RUSTLLM_FILES, registry_source

    with HubServer(tmp_path / "hub") as server:
        for seed, (short, file) in enumerate(RUSTLLM_FILES.items()):
            server.add_repo(
                registry_source(short).split(":")[0],
                {
                    file: gguf_with_data(48 * 1024, seed=seed, file_type=15),
                    file.replace("Q4_K_M", "Q8_0"): gguf_with_data(64 * 1024, seed=seed + 10, file_type=7),
                    "README.md": b"# look-alike\n",
                },
            )
        yield server


class Page:
    """A page's world: its folder, environment, ports and background servers."""

    def __init__(self, folder: Path, hub: HubServer) -> None:
        self.folder = folder
        self.ports = {port: str(free_port()) for port in PORTS}
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "OLLAMA_", "HF_"))}
        self.env = {
            **environ,
            "PATH": BIN + os.pathsep + environ.get("PATH", ""),
            "MODELPORT_HOME": str(folder / "home"),
            "MODELPORT_MIRROR": hub.url,
            "HF_HUB_OFFLINE": "0",
            "OLLAMA_LOCAL_PORT": self.ports["11434"],
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        self.servers: list[tuple[subprocess.Popen, Path]] = []

    def rewrite(self, text: str) -> str:
        for port, free in self.ports.items():
            text = re.sub(rf"(?<![\d.]){port}(?!\d)", free, text)
        return text.replace("localhost:", "127.0.0.1:")

    def run(self, example: Example, name: str) -> None:
        body = self.rewrite(example.body)
        where = f"{name}:{example.line}"
        if example.kind == "console":
            self._console(body, where)
        elif example.kind == "server":
            self._server(body, where)
        elif example.kind == "python":
            self._script([sys.executable, "-c", body], where)
        elif shutil.which("node") is None:
            pytest.skip(f"{where}: node is not installed here")  # pragma: no cover
        else:
            self._script([shutil.which("node"), "--input-type=module", "-e", body], where)

    def _console(self, body: str, where: str) -> None:
        script = ["set -u"]
        for line in body.splitlines():
            if not line.startswith("$ "):
                continue
            command, _, comment = line[2:].partition("  # ")
            wanted = int(m.group(1)) if (m := re.match(r"exits (\d+)", comment.strip())) else 0
            script += [
                command,
                f'__rc=$?; if [ "$__rc" -ne {wanted} ]; then echo "example {where}: exit $__rc, '
                f'wanted {wanted}: "{_quote(command)} >&2; exit 97; fi',
            ]
        self._script(["bash", "-c", "\n".join(script)], where)

    def _script(self, argv: list[str], where: str) -> None:
        try:
            done = subprocess.run(
                argv,
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=STEP_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{where} ran past {STEP_S} s: {exc.stdout!r} {exc.stderr!r}\n{self.logs()}")
        if done.returncode != 0:
            pytest.fail(f"{where} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.logs()}")

    def _server(self, body: str, where: str) -> None:
        (command,) = [line[2:] for line in body.splitlines() if line.startswith("$ ")]
        port = re.search(r"--port[ =](\d+)", command) or re.search(r"OLLAMA_LOCAL_PORT=(\d+)", command)
        port_number = port.group(1) if port else self.ports["11434"]
        log = self.folder / f"server-{len(self.servers)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                ["bash", "-c", "exec env " + command],
                cwd=self.folder,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.servers.append((process, log))
        deadline = time.monotonic() + SERVER_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{where}: the server exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port_number}/health", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        pytest.fail(f"{where}: the server did not answer within {SERVER_S} s:\n{log.read_text()}")

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for _, log in self.servers)

    def close(self) -> None:
        for process, _ in self.servers:
            process.terminate()
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run(
            [shutil.which("modelport", path=BIN) or "modelport", "stop-server"],
            env=self.env,
            capture_output=True,
            timeout=60,
        )  # a page's `deploy --detached`, if it left one


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_example_of_the_page_runs(page, hub, tmp_path) -> None:
    world = Page(tmp_path / "page", hub)
    world.folder.mkdir()
    try:
        for example in examples(page):
            world.run(example, page.name)
    finally:
        world.close()
