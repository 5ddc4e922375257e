"""Putting a model on a device: the device and dtype, JAX's persistent compilation
cache, GGUF files materialized as Hugging Face folders, the family's model built
abstractly and filled from the checkpoint, and the decoder or encoder around it.

Imported by :class:`~modelport.adapters.jax.engine.JaxEngine` on load only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp

from modelport.domain import (
    EngineUnavailable,
    InvalidRequest,
    ModelFormat,
    ModelInfo,
    ModelLoadError,
)
from modelport.ports import EngineOptions

from . import kernels, registry, sharding
from .decode import Decoder
from .encode import Encoder
from .tokenizer import TextTokenizer
from .quant import Quantization
from .weights import Checkpoint, GGUFCheckpoint, load_model, parameter_bytes

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass
class Runtime:
    """A loaded model: its tokenizer and either a decoder or an encoder."""

    name: str
    folder: str
    model_type: str
    tokenizer: TextTokenizer
    decoder: Decoder | None
    encoder: Encoder | None
    end_ids: tuple[int, ...]
    context_length: int
    parameter_bytes: int
    device: Any
    vocabulary: Any = None  # the grammar engine's view of the tokenizer, built on first use
    mesh: Any = None  # the devices a tensor-parallel model is split over

    @property
    def memory_used(self) -> int:
        return self.parameter_bytes + (self.decoder.nbytes if self.decoder else 0)

    def release(self) -> None:
        """Free the device memory now rather than when the garbage collector runs."""
        if self.decoder is not None:
            self.decoder.release()
        if self.encoder is not None:
            for leaf in jax.tree_util.tree_leaves(self.encoder.state):
                if isinstance(leaf, jax.Array) and not leaf.is_deleted():
                    leaf.delete()
        self.decoder = self.encoder = None
        self.parameter_bytes = 0


def load(model: ModelInfo, options: EngineOptions, home: str, *, slots: int = 1, leader: bool = True) -> Runtime:
    """The model on its device; a decoder gets a cache of ``slots`` rows. Over
    several processes (:mod:`.distributed`), the leader tells the followers to load
    it too, and its decoder tells them every step."""
    device = select_device(options.device, options.device_index)
    enable_compilation_cache(os.path.join(home, "cache", "jax"))
    dtype = select_dtype(getattr(options, "dtype", "auto"), device)
    folder = model_folder(model, home)
    config = _json(os.path.join(folder, "config.json"))
    model_type = str(config.get("model_type") or "unknown")
    family = registry.family(model_type)
    try:
        cfg = family.Config.from_hf_config(config)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"'{model.name}': config.json does not describe a {model_type} model: {exc}") from None
    mesh = select_mesh(getattr(options, "tensor_parallel", 1), device, family, cfg, model.name)
    mode = getattr(options, "quantize", "auto")
    # the native kernel on one CPU device (a sharded matrix keeps XLA's dot, which
    # splits), built only when the weights may be quantized
    native = (
        mode != "none"
        and getattr(family, "QUANTIZABLE", False)
        and device.platform == "cpu"
        and mesh is None
        and kernels.available(home)
    )
    quant = select_quantization(mode, family, native)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quant.active:
        kwargs["quant"] = quant
    if mesh is not None:
        kwargs["shards"] = mesh.size
    steps = ident = None
    if leader and jax.process_count() > 1:  # checked here first: the followers load what is valid
        from . import distributed

        steps = distributed.channel()
        ident = distributed.announce_load(steps, model, options, slots)
    try:
        with jax.default_device(device):
            network = load_model(
                lambda: family.Model(cfg, **kwargs),
                family.weight_rules(cfg),
                checkpoint(model, folder, family, cfg, quant),
                ignored=family.IGNORED,
                device=device,
                mesh=mesh,
            )
    except Exception:
        if steps is not None:
            steps.publish("unload", {"model": ident})  # the followers drop what they loaded
        raise
    tokenizer = TextTokenizer(folder)
    decoder = encoder = None
    if family.KIND == "decoder":
        length = max(16, min(options.num_ctx, cfg.context_length))
        decoder = Decoder(network, family.cache_shape(cfg), length=length, batch=slots, device=device, mesh=mesh)
        if steps is not None:
            from .distributed import Leader

            decoder = Leader(decoder, steps, ident)  # type: ignore[assignment]
    else:
        encoder = Encoder(network, folder, device=device)
        length = encoder.max_length
    return Runtime(
        name=model.name,
        folder=folder,
        model_type=model_type,
        tokenizer=tokenizer,
        decoder=decoder,
        encoder=encoder,
        end_ids=end_ids(folder, config, tokenizer),
        context_length=length,
        parameter_bytes=parameter_bytes(network),
        device=device,
        mesh=mesh,
    )


def model_folder(model: ModelInfo, home: str) -> str:
    """The Hugging Face folder to load: the model's own, or its GGUF converted once
    into ``<home>/cache/hf-from-gguf/<key>``."""
    if model.format is ModelFormat.GGUF:
        from modelport.adapters.ggufconvert import cache_root, converted_folder

        path = os.path.join(model.location, model.primary_file)
        if not os.path.isfile(path):
            raise ModelLoadError(f"'{model.name}': {path} is missing")
        return converted_folder(path, cache_root(home))  # the one cache, shared with the store
    if model.format is ModelFormat.SAFETENSORS:
        folder = model.location
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise ModelLoadError(f"'{model.name}': {folder} has no config.json")
        return folder
    raise EngineUnavailable("jax", f"it runs safetensors and GGUF models and '{model.name}' is {model.format.value}")


def select_quantization(mode: str, family: Any, native: bool = False) -> Quantization:
    """``none``, ``int8`` or ``int4`` (see :class:`.quant.Quantization`), through the
    native kernel when ``native`` (one CPU device where it builds). ``auto`` is int8
    where it is native (it decodes about twice as fast as float32 there, see
    docs/engines-jax.md) and none (float weights) elsewhere. Families without
    quantized layers (GPT-2, BERT) refuse int8 and int4 and take auto as none."""
    if mode in ("auto", None):
        quant = Quantization.of("int8") if native else Quantization()
    else:
        quant = Quantization.of(mode)
        if quant.active and not getattr(family, "QUANTIZABLE", False):
            raise InvalidRequest(f"--quantize {mode} is for Llama-family decoders; use --quantize none")
    return dataclasses.replace(quant, native=True) if quant.active and native else quant


def select_mesh(shards: int, device: Any, family: Any, cfg: Any, name: str) -> Any:
    """None on one device (in one process); else a mesh of ``shards`` devices of
    ``device``'s kind, checked to divide the family's heads and widths. Over several
    processes (``jax.distributed``) the mesh is every device of every process."""
    processes = jax.process_count()
    if shards == 1 and processes == 1:
        return None
    if not getattr(family, "SHARDABLE", False):
        raise InvalidRequest(f"--tensor-parallel is for Llama-family decoders; '{name}' is not one")
    devices = jax.devices(device.platform)
    if processes > 1:
        if shards not in (1, len(devices)):
            raise InvalidRequest(
                f"over {processes} processes the model is split over all {len(devices)} "
                f"devices; --tensor-parallel must be 1 or {len(devices)}, not {shards}"
            )
        shards = len(devices)
    elif shards > len(devices):
        hint = (
            " (XLA_FLAGS=--xla_force_host_platform_device_count=N gives N virtual CPU devices)"
            if device.platform == "cpu"
            else ""
        )
        raise InvalidRequest(
            f"--tensor-parallel {shards} needs {shards} {device.platform} devices; JAX sees {len(devices)}{hint}"
        )
    sharding.check_shards(shards, family.shard_counts(cfg), f"'{name}'")
    if processes == 1:  # the device chosen first, then the next ones
        start = devices.index(device) if device in devices and devices.index(device) + shards <= len(devices) else 0
        devices = devices[start : start + shards]
    return sharding.mesh(devices)


def checkpoint(model: ModelInfo, folder: str, family: Any, cfg: Any, quant: Quantization) -> Any:
    """Where the weights come from: a quantized load of a GGUF reads its blocks
    straight from the file; anything else reads the folder's safetensors."""
    if quant.active and model.format is ModelFormat.GGUF:
        return GGUFCheckpoint(os.path.join(model.location, model.primary_file), cfg.num_heads, cfg.num_kv_heads)
    return Checkpoint(folder, family.PREFIXES)


def select_device(kind: str, index: int) -> Any:
    """``cpu``, ``gpu`` (GPU number ``index``) or ``auto`` (a GPU when JAX sees one)."""
    if kind == "cpu":
        return jax.local_devices(backend="cpu")[0]
    try:
        gpus = jax.local_devices(backend="gpu")
    except RuntimeError:
        gpus = []
    if kind == "gpu" and not gpus:
        raise EngineUnavailable("jax", "JAX sees no GPU here (install jax[cuda12] for NVIDIA GPUs); use --device cpu")
    if gpus and 0 <= index < len(gpus):
        return gpus[index]
    if kind == "gpu":
        raise InvalidRequest(f"there is no GPU {index}; JAX sees {len(gpus)}")
    return gpus[0] if gpus else jax.local_devices(backend="cpu")[0]


def select_dtype(name: str, device: Any) -> Any:
    """``auto`` is float32; float16 runs on GPUs only (XLA's CPU float16 is slow and
    inexact), bfloat16 anywhere."""
    if name in ("auto", None):
        return jnp.float32
    if name not in DTYPES:
        raise InvalidRequest(f"dtype must be auto, {', '.join(DTYPES)}; got {name!r}")
    if name == "float16" and device.platform == "cpu":
        raise InvalidRequest("float16 runs on GPUs only; use bfloat16 or float32 on the CPU")
    return DTYPES[name]


def enable_compilation_cache(path: str) -> None:
    """Keep compiled programs in ``path`` so that a second start does not recompile.
    A cache directory the user configured for JAX wins."""
    if jax.config.jax_compilation_cache_dir:
        return
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def end_ids(folder: str, config: dict[str, Any], tokenizer: TextTokenizer) -> tuple[int, ...]:
    """End-of-generation tokens: config.json's and generation_config.json's
    eos_token_id (an id or a list) and the tokenizer's eos token."""
    ids: list[int] = []
    for source in (config, _json(os.path.join(folder, "generation_config.json"), required=False)):
        value = source.get("eos_token_id")
        ids += [value] if isinstance(value, int) else [v for v in value or () if isinstance(v, int)]
    eos = tokenizer.token_id(tokenizer.eos_token)
    if eos is not None:
        ids.append(eos)
    return tuple(dict.fromkeys(ids))


def _json(path: str, required: bool = True) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except FileNotFoundError:
        if required:
            raise ModelLoadError(f"{path} is missing") from None
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return value
