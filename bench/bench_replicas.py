"""Aggregate requests a second through nginx with 1 and 2 replicas of the fake app.

    python bench/bench_replicas.py [--seconds 10] [--clients 8]

Each replica is ``tests/e2e/fake_app.py`` (modelport's ``serve()``, 4 threads, the
fake engine: a 31-character reply, one character a token). nginx runs the example
``deploy/nginx/modelport.conf`` as in ``tests/e2e/test_nginx_replicas.py``; the
clients are threads of this process, each with its own keep-alive connection, sending
non-streamed ``/api/generate`` requests for the given time. The figure is only as good
as the machine: clients, nginx and replicas share its cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "e2e")]

from processes import free_port, wait_until_up  # noqa: E402
from test_nginx_replicas import main_config, nginx_binary, site_config, start, stop_group  # noqa: E402

BODY = {"model": "fake", "prompt": "Capital?", "stream": False, "options": {"temperature": 0}}


def measure(url: str, seconds: float, clients: int) -> float:
    done = [0] * clients
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop_at:
                http.post("/api/generate", json=BODY).raise_for_status()
                done[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def run(replicas: int, seconds: float, clients: int, root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "e2e"), "MODELPORT_HOME": str(root / "home")}
    ports = [free_port(), free_port()]
    processes = []
    try:
        for index, port in enumerate(ports[:replicas]):
            log = root / f"replica{replicas}-{index}.log"
            processes.append(start([sys.executable, str(ROOT / "tests" / "e2e" / "fake_app.py"), str(port)], env, log))
            wait_until_up(f"http://127.0.0.1:{port}", processes[-1], log)
        # one replica: both upstream lines name it
        prefix, listen = root / f"nginx{replicas}", free_port()
        prefix.mkdir()
        site = site_config(listen, ports if replicas == 2 else [ports[0], ports[0]])
        (prefix / "modelport.conf").write_text(site, encoding="utf-8")
        (prefix / "nginx.conf").write_text(main_config(prefix, prefix / "modelport.conf"), encoding="utf-8")
        conf = [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
        processes.append(start(conf, env, prefix / "nginx.out"))
        url = f"http://127.0.0.1:{listen}"
        wait_until_up(url, processes[-1], prefix / "nginx.out", probe="/health")
        measure(url, 2, clients)  # warm-up: the fake model loads on every replica
        return measure(url, seconds, clients)
    finally:
        for process in reversed(processes):
            stop_group(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for replicas in (1, 2):
            rate = run(replicas, args.seconds, args.clients, Path(folder))
            print(f"{replicas} replica(s), {args.clients} clients: {rate:.1f} requests/s")


if __name__ == "__main__":
    main()
