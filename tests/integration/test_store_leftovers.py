"""What killed or failed work leaves in the store's ``.staging`` folder is gone once
the server starts, and a failed pull that fetched nothing leaves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from modelport.adapters.fake import FakeEngine, InMemorySessionRepository
from modelport.adapters.filesystem import FilesystemModelStore
from modelport.domain import DownloadError, ModelFormat, ModelRef
from modelport.entrypoints.bootstrap import bootstrap
from modelport.entrypoints.config import Settings
from modelport.entrypoints.http.app import create_app
from modelport.ports import EngineSpec


def staging(models_dir: str) -> list[str]:
    root = os.path.join(models_dir, ".staging")
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def killed_during_create(models_dir: str) -> None:
    """A process that is killed (SIGKILL) halfway through an import's copy."""
    code = textwrap.dedent(f"""
        import os, signal
        from modelport.adapters.filesystem import FilesystemModelStore
        from modelport.domain import ModelRef
        store = FilesystemModelStore({models_dir!r}, bundled=())
        with store._scratch(ModelRef.parse("victim")) as folder:
            with open(os.path.join(folder, "model.gguf"), "wb") as out:
                out.write(b"GGUF" + bytes(4096))
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert result.returncode == -9


def test_the_server_cleans_what_a_killed_create_left(tmp_path) -> None:
    models_dir = str(tmp_path / "home" / "models")
    killed_during_create(models_dir)
    left = staging(models_dir)
    assert len(left) == 2 and left[0].endswith(".tmp") and left[1].endswith(".tmp.lock")
    open(os.path.join(models_dir, ".staging", "gone.pull.lock"), "w").close()  # a lock with no folder

    settings = Settings(home=str(tmp_path / "home"))
    store = FilesystemModelStore(models_dir, bundled=())
    spec = EngineSpec(name="fake", formats=set(ModelFormat), factory=FakeEngine)
    app = create_app(bootstrap(settings, store=store, engines=[spec], sessions=InMemorySessionRepository()), settings)
    try:
        app.start_reaper()
        assert staging(models_dir) == []
    finally:
        app.close()


class FailingSource:
    def fetch(self, ref, folder, progress):
        raise DownloadError("the mirror is down")

    def search(self, query, **filters):
        return []


def test_a_failed_pull_that_fetched_nothing_leaves_no_folder(tmp_path) -> None:
    models_dir = str(tmp_path / "models")
    store = FilesystemModelStore(models_dir, bundled=())
    services = bootstrap(
        Settings(home=str(tmp_path)),
        store=store,
        engines=[],
        source=FailingSource(),
        sessions=InMemorySessionRepository(),
    )
    with pytest.raises(DownloadError):
        services.pull(ModelRef.parse("org/repo"))
    assert staging(models_dir) == []


def test_a_failed_pull_that_fetched_something_keeps_it_to_resume(tmp_path) -> None:
    models_dir = str(tmp_path / "models")
    store = FilesystemModelStore(models_dir, bundled=())
    with pytest.raises(DownloadError):
        with store.staging(ModelRef.parse("org/repo")) as folder:
            with open(os.path.join(folder, "part.incomplete"), "wb") as out:
                out.write(b"x" * 10)
            raise DownloadError("cut off")
    assert staging(models_dir) == ["org--repo.pull", "org--repo.pull.lock"]
