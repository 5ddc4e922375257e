"""One model served by several processes (hosts) with ``jax.distributed``.

Every process joins one runtime (:func:`initialize`); the model is split over
the devices of all of them (a global mesh, :mod:`.sharding`). Process 0, the
leader, serves HTTP and runs the generation core; each of its decoder's calls
(load, warm, prefill, decode, sample, release) is first told to the followers,
which make the same call with the same inputs (:func:`follow`), so every process
runs the same compiled programs in the same order and their collectives meet.

The calls go through the coordination service's key-value store, the one that
``jax.distributed`` runs in process 0: step ``n`` is one key holding its inputs
(an ``.npz``: arrays only, never pickles), and each follower acknowledges it under
a key of its own before the leader runs the step. A follower that dies is noticed
there (no acknowledgement, and the service drops it from its live processes after
its heartbeat timeout) or inside a program (the collective's connection closes):
the leader then raises :class:`~modelport.domain.EngineUnavailable` naming the
lost process, for that step and every later one, and never waits without bound.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from modelport.domain import EngineUnavailable, InvalidRequest

log = logging.getLogger("modelport.jax.distributed")
PREFIX = "modelport/steps"
HEARTBEAT_S = 10  # a process silent this long is dropped from the live ones
POLL_MS = 1000  # how long one wait on the key-value store blocks before looking at who is live
ACK_TIMEOUT_S = 900  # the most a step waits for a live follower (a follower's first load compiles)


def initialize(coordinator: str, num_processes: int, process_id: int, *, heartbeat_s: int = HEARTBEAT_S) -> None:
    """Join the runtime of ``num_processes`` processes whose coordinator (process
    0) listens at ``coordinator`` (HOST:PORT). CPU collectives go through gloo; a
    process that dies does not take the others down with it (JAX's recoverability),
    so the leader can report it; SIGTERM stays the process's own (JAX's preemption
    service is off). Once per process; before any other JAX call."""
    if num_processes < 2:
        return
    if not 0 <= process_id < num_processes:
        raise InvalidRequest(
            f"--process-id must be 0 to {num_processes - 1} for {num_processes} processes, got {process_id}"
        )
    if not coordinator:
        raise InvalidRequest("--num-processes above 1 needs --coordinator HOST:PORT (process 0's address)")
    import jax

    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_recoverability", True)
    jax.config.update("jax_enable_preemption_service", False)  # it would take SIGTERM from gunicorn
    jax.distributed.initialize(coordinator, num_processes, process_id, heartbeat_timeout_seconds=heartbeat_s)


def is_multiprocess() -> bool:
    import jax

    return jax.process_count() > 1


_CHANNEL: list["Channel"] = []  # the process's one channel: its step count is the group's


def channel() -> "Channel":
    """This process's channel (created on first use, after :func:`initialize`)."""
    if not _CHANNEL:
        _CHANNEL.append(Channel())
    return _CHANNEL[0]


def _client() -> Any:
    # The coordination service's client: jax.distributed keeps it in its global state
    # (the same client jax.experimental.multihost_utils uses for its barriers).
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise EngineUnavailable("jax", "jax.distributed is not initialized")
    return client


def _pack(op: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    header = np.frombuffer(json.dumps({"op": op, "meta": meta}).encode(), np.uint8)
    np.savez(buffer, __header__=header, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def _unpack(data: bytes) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        header = json.loads(npz["__header__"].tobytes())
        arrays = {k: npz[k] for k in npz.files if k != "__header__"}
    return header["op"], header["meta"], arrays


class Channel:
    """Step ``n``'s call, from the leader to the followers, and their
    acknowledgements (see the module doc)."""

    def __init__(self, *, ack_timeout_s: float = ACK_TIMEOUT_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        import jax

        self.client = _client()
        self.process, self.processes = jax.process_index(), jax.process_count()
        self.followers = list(range(1, self.processes))
        self.ack_timeout_s, self.heartbeat_s = ack_timeout_s, heartbeat_s
        self.step = 0
        self.since = 0  # the step of the last load: a follower's failure before it is forgotten
        self.broken: EngineUnavailable | None = None
        # Held from a step's publication to its dispatch: two resident models' scheduler
        # threads must run their programs in the order the followers are told them.
        self.lock = threading.RLock()

    # -- the leader ---------------------------------------------------------------------

    def publish(self, op: str, meta: dict[str, Any] | None = None, arrays: dict[str, np.ndarray] | None = None) -> None:
        """Tell every follower the next call, and wait until each has it."""
        with self.lock:
            if self.broken is not None:
                raise self.broken
            self.step += 1
            n = self.step
            if op == "load":
                self.since = n
            self.client.key_value_set_bytes(f"{PREFIX}/{n}", _pack(op, meta or {}, arrays or {}))
            for process in self.followers:
                self._wait_ack(n, process)
            if n > 2:  # every follower has taken step n: the keys of n - 2 go
                self.client.key_value_delete(f"{PREFIX}/{n - 2}")
                for process in self.followers:
                    self.client.key_value_delete(f"{PREFIX}-ack/{n - 2}/{process}")

    def _wait_ack(self, n: int, process: int) -> None:
        started = time.monotonic()
        while True:
            try:
                self.client.blocking_key_value_get(f"{PREFIX}-ack/{n}/{process}", POLL_MS)
                return
            except Exception:  # noqa: BLE001 - a timeout (the client raises one kind for all)
                pass
            failure = self._failure_of(process)
            if failure:
                raise self.fail(f"process {process} (a follower) {failure} before step {n}")
            if time.monotonic() - started > self.ack_timeout_s:
                raise self.fail(f"process {process} did not take step {n} within {self.ack_timeout_s:.0f} s")

    def _failure_of(self, process: int) -> str | None:
        try:
            report = json.loads(self.client.key_value_try_get(f"{PREFIX}-error/{process}"))
            if report["step"] >= self.since:
                return f"failed: {report['error']}"
        except Exception:  # noqa: BLE001 - no error reported
            pass
        if process not in self.live():
            return "is gone (the distributed runtime lost its heartbeat)"
        return None

    def live(self) -> set[int]:
        try:
            return set(self.client.get_live_nodes(list(range(self.processes))))
        except Exception:  # noqa: BLE001 - the service itself is gone
            return {self.process}

    def diagnose(self, error: BaseException) -> EngineUnavailable:
        """The error to report when a program failed: which followers are lost
        (waiting up to a heartbeat for the runtime to notice), else ``error``."""
        if self.broken is not None:
            return self.broken
        deadline = time.monotonic() + self.heartbeat_s + 2
        while True:
            lost = {p: failure for p in self.followers if (failure := self._failure_of(p))}
            if lost or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if lost:
            who = "; ".join(f"process {p} (a follower) {failure}" for p, failure in lost.items())
            return self.fail(f"{who}, during step {self.step}")
        return self.fail(f"a follower was lost during step {self.step} ({type(error).__name__}: {error})")

    def fail(self, reason: str) -> EngineUnavailable:
        self.broken = EngineUnavailable(
            "jax",
            f"{reason}; the model is no longer served: restart every process of the group ({self.processes} processes)",
        )
        log.error("%s", self.broken)
        return self.broken

    # -- a follower -----------------------------------------------------------------------

    def receive(self) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
        """The next call, acknowledged; raises EngineUnavailable when the leader
        (and with it the coordination service) is gone."""
        n = self.step + 1
        while True:
            try:
                data = self.client.blocking_key_value_get_bytes(f"{PREFIX}/{n}", POLL_MS)
                break
            except Exception as exc:  # noqa: BLE001 - a timeout, or the service is gone
                if 0 not in self.live():
                    raise EngineUnavailable("jax", f"process 0 (the leader) is gone ({exc})") from None
        self.step = n
        self.client.key_value_set(f"{PREFIX}-ack/{n}/{self.process}", "1")
        return _unpack(data)

    def report(self, error: BaseException) -> None:
        """Leave the leader this step's failure (it reads it while it waits)."""
        key = f"{PREFIX}-error/{self.process}"
        try:
            self.client.key_value_delete(key)
        except Exception:  # noqa: BLE001 - none before
            pass
        self.client.key_value_set(key, json.dumps({"step": self.step, "error": f"{type(error).__name__}: {error}"}))


# -- the leader's decoder ---------------------------------------------------------------


class Leader:
    """The leader's :class:`~.decode.Decoder`: every call is told to the followers
    first (for the model loaded at step ``ident``: the server may hold several),
    then made; everything else is the decoder's own."""

    def __init__(self, decoder: Any, channel: Channel, ident: int) -> None:
        self._decoder, self._channel, self._ident = decoder, channel, ident

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)

    def _call(self, op: str, meta: dict[str, Any], arrays: dict[str, np.ndarray], run: Callable[[], Any]) -> Any:
        with self._channel.lock:
            self._channel.publish(op, {**meta, "model": self._ident}, arrays)
            try:
                return run()
            except Exception as exc:  # noqa: BLE001 - a collective that lost a peer
                if type(exc).__name__ != "JaxRuntimeError":
                    raise
                raise self._channel.diagnose(exc) from None

    def warm(self, chunk_tokens: int) -> int:
        return self._call("warm", {"chunk_tokens": chunk_tokens}, {}, lambda: self._decoder.warm(chunk_tokens))

    def prefill(self, row: int, tokens: Any, start: int, widest: int) -> None:
        meta = {"row": int(row), "start": int(start), "widest": int(widest)}
        tokens = np.asarray(tokens, np.int32)
        return self._call(
            "prefill", meta, {"tokens": tokens}, lambda: self._decoder.prefill(row, tokens.tolist(), start, widest)
        )

    def decode(self, tokens: np.ndarray, positions: np.ndarray, reach: int) -> None:
        return self._call(
            "decode",
            {"reach": int(reach)},
            {"tokens": tokens, "positions": positions},
            lambda: self._decoder.decode(tokens, positions, reach),
        )

    def sample(self, lengths, floats, ints, keys, mask, mode, logprobs: bool):
        arrays = {"lengths": lengths, "floats": floats, "ints": ints, "keys": keys}
        if mask is not None:
            arrays["mask"] = mask
        meta = {"mode": [bool(mode.sampled), bool(mode.wide)], "logprobs": bool(logprobs)}
        return self._call(
            "sample", meta, arrays, lambda: self._decoder.sample(lengths, floats, ints, keys, mask, mode, logprobs)
        )

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, np.int32)
        return self._call("forward", {}, {"tokens": tokens}, lambda: self._decoder.forward(tokens))

    def release(self) -> None:
        with self._channel.lock:
            if self._channel.broken is None:
                try:
                    self._channel.publish("unload", {"model": self._ident})
                except EngineUnavailable:
                    pass
            self._decoder.release()


def announce_load(channel: Channel, model: Any, options: Any, slots: int) -> int:
    """Tell the followers to load ``model`` as the leader is about to; returns the
    load's step, which names that model in the steps after it."""
    import attrs

    described = {
        "name": model.name,
        "format": model.format.value,
        "location": model.location,
        "primary_file": model.primary_file,
    }
    channel.publish("load", {"info": described, "options": attrs.asdict(options), "slots": slots})
    return channel.step


# -- a follower ---------------------------------------------------------------------------


def leave(status: int) -> None:
    """End a follower's process now: with the leader gone, jax.distributed's own
    shutdown at exit cannot reach the coordinator and aborts the process."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def follow(home: str) -> int:
    """A follower's life: make the leader's calls until it is gone. Returns the
    exit status (0: the leader stopped with no model loaded, 1: a failure,
    reported to the leader, or the leader lost with models loaded); then
    :func:`leave`."""
    from modelport.domain import ModelInfo
    from modelport.ports import EngineOptions

    from . import runtime
    from .sampling import SampleMode

    steps = channel()
    loaded: dict[int, Any] = {}  # the leader's models, by the step that loaded them
    log.info("process %d of %d follows process 0", steps.process, steps.processes)
    while True:
        try:
            op, meta, arrays = steps.receive()
        except EngineUnavailable as exc:
            log.error("%s", exc)
            return 0 if not loaded else 1
        if op == "load":  # a model that does not load here is reported; the leader decides
            try:
                loaded[steps.step] = runtime.load(
                    ModelInfo(**meta["info"]), EngineOptions(**meta["options"]), home, slots=meta["slots"], leader=False
                )
            except Exception as exc:  # noqa: BLE001
                log.error("loading %s failed: %s", meta["info"]["name"], exc)
                steps.report(exc)
            continue
        if op == "unload":
            gone = loaded.pop(meta["model"], None)
            if gone is not None:
                gone.release()
            continue
        rt = loaded.get(meta["model"])
        try:
            if rt is None or rt.decoder is None:
                raise EngineUnavailable("jax", f"step {steps.step} ({op}) came before a model was loaded")
            elif op == "warm":
                rt.decoder.warm(meta["chunk_tokens"])
            elif op == "prefill":
                rt.decoder.prefill(meta["row"], arrays["tokens"].tolist(), meta["start"], meta["widest"])
            elif op == "decode":
                rt.decoder.decode(arrays["tokens"], arrays["positions"], meta["reach"])
            elif op == "sample":
                mode = SampleMode(sampled=meta["mode"][0], wide=meta["mode"][1])
                rt.decoder.sample(
                    arrays["lengths"],
                    arrays["floats"],
                    arrays["ints"],
                    arrays["keys"],
                    arrays.get("mask"),
                    mode,
                    meta["logprobs"],
                )
            elif op == "forward":
                rt.decoder.forward(arrays["tokens"])
            else:
                raise EngineUnavailable("jax", f"unknown step {op!r}")
        except Exception as exc:  # noqa: BLE001 - the leader is told, then this process stops
            log.error("step %d (%s) failed: %s", steps.step, op, exc)
            steps.report(exc)
            return 1
