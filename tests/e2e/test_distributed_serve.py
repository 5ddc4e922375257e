"""``modelport serve`` as two processes on 127.0.0.1 (jax.distributed, gloo), two
virtual CPU devices each: process 0 serves HTTP, process 1 follows and opens no
port; requests through the official ``openai`` client get the tokens one process
gives, to two models held at once; once the follower is killed, requests get a
clear 503 naming it, never a hang."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from processes import free_port, serving

from tests.support import tiny_llama

pytestmark = pytest.mark.slow
PROMPT = "the quick brown fox"
WIDE = dict(
    tiny_llama.CONFIG, hidden_size=64, num_attention_heads=8, num_key_value_heads=4, intermediate_size=128
)  # 4 KV heads: splits over the 4 devices of the group


def _executable() -> str:
    return shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"


def _one_process_text(folder: Path, home: str) -> str:
    """The reference: the same request through the JAX engine in this process (one device)."""
    from modelport.adapters.jax import JaxEngine
    from modelport.domain import Completion, GenerationRequest, ModelFormat, ModelInfo, ModelRef, SamplingPolicy
    from modelport.ports import EngineOptions

    engine = JaxEngine(home)
    engine.load(
        ModelInfo(name="tiny-wide", format=ModelFormat.SAFETENSORS, location=str(folder), primary_file="config.json"),
        # float weights, as the group of processes runs them: auto is int8 only where the
        # native kernel runs, and a model split over processes keeps XLA's dot
        EngineOptions(device="cpu", home=home, slots=2, quantize="none"),
    )
    try:
        request = GenerationRequest(
            model=ModelRef.parse("tiny-wide"), prompt=PROMPT, sampling=SamplingPolicy.greedy(max_tokens=8)
        )
        return Completion.fold(engine.stream(request)).text
    finally:
        engine.unload()


def test_two_processes_serve_two_models_and_a_lost_follower_is_reported(tmp_path) -> None:
    home = str(tmp_path / "home")
    expected = {}
    for name, seed in (("tiny-wide", 0), ("tiny-other", 1)):
        folder = tiny_llama.build(tmp_path / name, seed=seed, config=WIDE)
        created = subprocess.run(
            [_executable(), "create", name, str(folder), "--home", home], capture_output=True, text=True, timeout=120
        )
        assert created.returncode == 0, created.stderr
        expected[name] = _one_process_text(folder, home)
    assert expected["tiny-wide"] != expected["tiny-other"]

    port, follower_port, coordinator = free_port(), free_port(), f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "MODELPORT_HOME": home,
        "JAX_PLATFORMS": "cpu",
        "MODELPORT_ENGINE": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "MODELPORT_COORDINATOR": coordinator,
        "MODELPORT_NUM_PROCESSES": "2",
    }
    follower_log = tmp_path / "follower.log"
    with follower_log.open("wb") as output:
        follower = subprocess.Popen(
            [_executable(), "serve", "--process-id", "1", "--port", str(follower_port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        command = [_executable(), "serve", "--port", str(port), "--process-id", "0"]
        with serving(command, port, env, tmp_path / "leader.log") as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)
            for name in ("tiny-wide", "tiny-other", "tiny-wide"):  # both stay loaded: steps of each go to each
                answer = client.completions.create(model=name, prompt=PROMPT, temperature=0, max_tokens=8)
                assert answer.choices[0].text == expected[name], name
                assert answer.usage.completion_tokens == 8
            with pytest.raises(openai.APIConnectionError):  # the follower opened no port
                openai.OpenAI(
                    base_url=f"http://127.0.0.1:{follower_port}/v1", api_key="unused", timeout=5, max_retries=0
                ).models.list()
            assert "follows process 0" in follower_log.read_text()

            follower.send_signal(signal.SIGKILL)
            follower.wait(timeout=30)
            for prompt in (PROMPT, "hello"):  # the step that finds it gone, and every one after
                with pytest.raises(openai.APIStatusError) as caught:
                    client.completions.create(model="tiny-wide", prompt=prompt, temperature=0, max_tokens=8)
                assert caught.value.status_code == 503
                message = str(caught.value)
                assert "process 1 (a follower)" in message and "no longer served" in message
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
