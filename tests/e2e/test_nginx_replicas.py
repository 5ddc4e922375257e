"""Two ``modelport serve`` replicas behind Debian's nginx (``requirements/nginx.sh``),
configured by the example users copy, ``deploy/nginx/modelport.conf``.

nginx runs as this user's own process (its prefix, pid file, logs and temp folders in
``tmp_path``); the replicas share one ``MODELPORT_HOME`` and serve the bundled SmolLM2.
Which replica answered is read from each replica's own ``/metrics`` and ``/health``.
The last test kills a replica (its whole process group, as a crash would) in the middle
of a stream, so it runs last."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import attrs
import httpx
import pytest
from processes import free_port, wait_until_up

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "modelport.conf"
PUBLIC_HOST = "models.example.com"  # what a client of the balancer sends; the replicas accept only local names
TIMEOUT_S = 120
# A proxy that held a stream back would pass it on a buffer (a memory page, or more) at a time.
PAGE = 4096
COUNTING = {
    "model": "smollm2",
    "prompt": "1, 2, 3, 4, 5,",
    "raw": True,
    "stream": True,
    "options": {"temperature": 0, "num_predict": 400},
}


@attrs.frozen
class Replica:
    url: str
    process: subprocess.Popen

    def metric(self, route: str, method: str = "GET") -> int:
        """Requests this replica answered on ``route`` (every status)."""
        text = httpx.get(f"{self.url}/metrics", timeout=TIMEOUT_S).text
        pattern = re.compile(r"^modelport_http_requests_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.M)
        return sum(
            int(float(m["value"]))
            for m in pattern.finditer(text)
            if f'route="{route}"' in m["labels"] and f'method="{method}"' in m["labels"]
        )

    def active(self) -> int:
        return httpx.get(f"{self.url}/health", timeout=TIMEOUT_S).json()["queue"]["active"]

    def kill(self) -> None:
        with _gone():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=TIMEOUT_S)


@attrs.frozen
class Cluster:
    url: str  # nginx
    replicas: tuple[Replica, ...]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Host": PUBLIC_HOST}, timeout=TIMEOUT_S)


class _gone:
    """Ignore a process group that already ended."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, traceback) -> bool:
        return kind is ProcessLookupError


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        pytest.fail("nginx is not installed: run `bash requirements/nginx.sh` (the README's test command does)")
    return found


def site_config(listen: int, replicas: list[int]) -> str:
    """The example with this test's ports: its listen port, and the replicas of both upstreams."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text, listens = re.subn(r"^(\s*)listen 11434;", rf"\g<1>listen 127.0.0.1:{listen};", text, flags=re.M)
    ports = dict(zip(("11435", "11436"), map(str, replicas)))
    text, servers = re.subn(r"(server 127\.0\.0\.1:)(1143[56])", lambda m: m[1] + ports[m[2]], text)
    assert (listens, servers) == (1, 3), "the example's listen and server lines changed: update this test"
    return text


def main_config(prefix: Path, site: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf provides around conf.d/, with every path in ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx would hand requests to workers running as nobody, who cannot enter tmp_path.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp}\n    include {site};\n}}\n"
    )


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(process: subprocess.Popen) -> None:
    with _gone():
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with _gone():
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    nginx = nginx_binary()
    root = tmp_path_factory.mktemp("replicas")
    executable = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    env = {**os.environ, "MODELPORT_HOME": str(root / "home"), "MODELPORT_NUM_PARALLEL": "2"}
    ports, processes = [free_port(), free_port()], []
    try:
        for index, port in enumerate(ports):
            processes.append(
                start([executable, "serve", "--port", str(port), "--threads", "4"], env, root / f"replica{index}.log")
            )
        replicas = tuple(Replica(f"http://127.0.0.1:{port}", process) for port, process in zip(ports, processes))
        for index, replica in enumerate(replicas):
            wait_until_up(replica.url, replica.process, root / f"replica{index}.log")
        prefix, listen = root / "nginx", free_port()
        prefix.mkdir()
        (prefix / "modelport.conf").write_text(site_config(listen, ports), encoding="utf-8")
        (prefix / "nginx.conf").write_text(main_config(prefix, prefix / "modelport.conf"), encoding="utf-8")
        processes.append(
            start(
                [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                env,
                prefix / "nginx.out",
            )
        )
        url = f"http://127.0.0.1:{listen}"
        wait_until_up(url, processes[-1], prefix / "nginx.out", probe="/health")
        yield Cluster(url=url, replicas=replicas)
    finally:
        for process in reversed(processes):
            stop_group(process)


def test_requests_reach_both_replicas(cluster: Cluster) -> None:
    before = [replica.metric("/api/tags") for replica in cluster.replicas]
    with cluster.client() as client:
        for _ in range(10):
            response = client.get("/api/tags")
            assert response.status_code == 200, response.text
            assert "smollm2:135m" in {m["model"] for m in response.json()["models"]}
    served = [replica.metric("/api/tags") - old for replica, old in zip(cluster.replicas, before)]
    assert sum(served) == 10 and min(served) > 0, served


def test_a_model_created_through_the_balancer_is_on_every_replica(cluster: Cluster) -> None:
    """The replicas share one store: /api/create goes to the store's replica, and the
    other one sees the new model in its own list."""
    with cluster.client() as client:
        response = client.post(
            "/api/create", json={"model": "terse", "from": "smollm2", "system": "Answer in one word.", "stream": False}
        )
        assert response.status_code == 200, response.text
    for replica in cluster.replicas:
        names = {m["model"] for m in httpx.get(f"{replica.url}/api/tags", timeout=TIMEOUT_S).json()["models"]}
        assert "terse:latest" in names, (replica.url, names)


def test_a_replica_that_dies_mid_stream_cuts_that_stream_and_the_next_requests_all_succeed(cluster: Cluster) -> None:
    with cluster.client() as client:
        with client.stream("POST", "/api/generate", json=COUNTING) as stream:
            assert stream.status_code == 200
            chunks = stream.iter_raw()
            first = next(chunks)
            # unbuffered: the first tokens came on their own, while the replica still generates
            assert len(first) < PAGE, len(first)
            assert json.loads(first.split(b"\n", 1)[0])["done"] is False
            busy = [replica for replica in cluster.replicas if replica.active() > 0]
            assert len(busy) == 1, "the streaming replica should be the only busy one"
            (dying,) = busy
            dying.kill()
            with pytest.raises(httpx.RemoteProtocolError):  # cut, not ended as if complete, and no hang
                for _ in chunks:
                    pass
        (survivor,) = [replica for replica in cluster.replicas if replica is not dying]
        before = survivor.metric("/api/tags"), survivor.metric("/api/generate", "POST")
        for _ in range(6):
            assert client.get("/api/tags").status_code == 200
        for _ in range(2):  # POSTs too: nginx could not connect, so nothing was sent, so it retried
            answer = client.post(
                "/api/generate", json={**COUNTING, "stream": False, "options": {"temperature": 0, "num_predict": 4}}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["done_reason"] == "length"
        after = survivor.metric("/api/tags"), survivor.metric("/api/generate", "POST")
        assert (after[0] - before[0], after[1] - before[1]) == (6, 2)
        # OpenAI's server-sent events through the balancer, from the survivor
        body = {
            "model": "smollm2",
            "stream": True,
            "max_tokens": 16,
            "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        }
        with client.stream("POST", "/v1/chat/completions", json=body) as events:
            assert events.status_code == 200
            assert events.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in events.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        assert all(line.startswith("data: ") for line in lines)
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == "The capital of France is Paris.", text
