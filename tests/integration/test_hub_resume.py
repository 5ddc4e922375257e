"""A pull killed with SIGKILL in the middle of a file, then pulled again: the second pull
fetches only the bytes the first did not get. And huggingface_hub's offline mode."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from typing import Iterator

import pytest

from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.hub import HubModelSource, RetryPolicy
from modelport.domain import ModelRef
from modelport.ports import EngineRegistry, Services
from support.hubserver import HubServer
from support.modelfiles import gguf_with_data

MIB = 1 << 20
SIZE = 3 * MIB
CUT = MIB + 12345  # where the server stalls: not a round number of anything
DEADLINE_S = 30

PULL = """
import sys
from modelport.adapters.filesystem import FilesystemModelStore
from modelport.adapters.hub import HubModelSource, RetryPolicy
from modelport.domain import ModelportError
from modelport.ports import EngineRegistry, Services

models, url, name = sys.argv[1:4]
source = HubModelSource(url, token=False, retry=RetryPolicy(attempts=1))
services = Services(store=FilesystemModelStore(models, bundled=()), engines=EngineRegistry([]), source=source)
try:
    print(services.pull(name).name, flush=True)
except ModelportError as exc:
    print(exc, flush=True)
    sys.exit(3)
"""

FILES = {
    "README.md": b"# tiny\n",
    "tiny-Q4_K_M.gguf": gguf_with_data(SIZE, seed=7, file_type=15),
}


@pytest.fixture
def hub(tmp_path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as server:
        server.add_repo("org/tiny-GGUF", FILES)
        yield server


def start_pull(models: str, hub: HubServer, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PULL, models, hub.url, "org/tiny-GGUF"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for_size(folder: str, size: int, child: subprocess.Popen) -> str:
    """The partial file under ``folder`` once it holds ``size`` bytes."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert child.poll() is None, f"the pull ended early: {child.stdout.read()}"
        for parent, _dirs, names in os.walk(folder):
            for name in names:
                path = os.path.join(parent, name)
                if name.endswith(".part") and os.path.getsize(path) >= size:
                    return path
        time.sleep(0.02)
    pytest.fail(f"no partial file of {size} bytes under {folder} within {DEADLINE_S} s")


def test_a_pull_killed_mid_file_resumes_where_it_stopped(hub, tmp_path) -> None:
    models = str(tmp_path / "models")
    hub.faults.stall_after["tiny-Q4_K_M.gguf"] = [CUT]
    child = start_pull(models, hub)
    try:
        partial = wait_for_size(os.path.join(models, ".staging"), CUT, child)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=DEADLINE_S)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert os.path.getsize(partial) == CUT

    store = FilesystemModelStore(models, bundled=())
    assert store.list() == []  # nothing half-fetched is ever listed

    source = HubModelSource(hub.url, token=False, retry=RetryPolicy(attempts=2, first_delay=0.01))
    info = Services(store=store, engines=EngineRegistry([]), source=source).pull("org/tiny-GGUF")

    weights = hub.requests(server="cdn", method="GET", file="tiny-Q4_K_M.gguf")
    assert [(e.range, e.sent) for e in weights] == [(None, CUT), (f"bytes={CUT}-", SIZE - CUT)]
    assert len(hub.requests(method="GET", file="README.md")) == 1  # finished before the kill: kept
    assert {f.path: f.sha256 for f in info.files}["tiny-Q4_K_M.gguf"] == hashlib.sha256(
        FILES["tiny-Q4_K_M.gguf"]
    ).hexdigest()
    assert store.verify(ModelRef.parse(info.name)).ok
    assert os.listdir(os.path.join(models, ".staging")) == []


def test_offline_mode_refuses_to_pull_and_says_why(hub, tmp_path) -> None:
    child = start_pull(str(tmp_path / "models"), hub, env={"HF_HUB_OFFLINE": "1"})
    output, _ = child.communicate(timeout=DEADLINE_S)
    assert child.returncode == 3, output
    assert "offline mode is on (HF_HUB_OFFLINE)" in output and "installed models work" in output
    assert hub.log == []
