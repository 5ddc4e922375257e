"""Weights: safetensors (single file or sharded) into an NNX model, abstract first.

The model is built with ``nnx.eval_shape`` (no memory for random weights), split
into its graph and abstract state, every parameter is filled from the checkpoint
through a :class:`Rule` with its shape and dtype asserted, and the two are merged.
All problems (missing, unexpected and misshapen tensors) are reported together.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Iterable, Sequence

import jax
import ml_dtypes
import numpy as np
from flax import nnx

from modelport.adapters.filesystem.describe import safetensors_layout, weight_files
from modelport.domain import InvalidRequest, ModelLoadError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_REPORTED = 12


def identity(tensor: np.ndarray) -> np.ndarray:
    return tensor


def linear_t(weight: np.ndarray) -> np.ndarray:
    """torch Linear (out, in) -> kernel (in, out)."""
    return weight.T


def concat_linear_t(*weights: np.ndarray) -> np.ndarray:
    """Several torch Linears (out_i, in) -> one fused kernel (in, sum(out_i))."""
    return np.concatenate([w.T for w in weights], axis=1)


def concat(*vectors: np.ndarray) -> np.ndarray:
    """Several biases -> one fused bias."""
    return np.concatenate(vectors)


vector = identity
_QUANTIZED_TRANSFORMS = (identity, linear_t, concat_linear_t)  # what a quantized parameter's rule may do


@dataclasses.dataclass(frozen=True)
class Rule:
    """Parameter ``path`` (in the NNX state) is ``transform(*tensors)`` of the
    checkpoint tensors ``keys``.

    ``axes`` are the parameter's logical axes (see :mod:`.sharding`; ``()``:
    replicated); a quantized parameter's values, scales and offsets share them.
    ``order``, for a fused projection, gives the order of its output columns for a
    number of devices (the value's last axis; a quantized one's block rows); it is
    not applied on one device."""

    path: tuple[str | int, ...]
    keys: tuple[str, ...]
    transform: Callable[..., np.ndarray] = identity
    axes: tuple[str | None, ...] = ()
    order: Callable[[int], np.ndarray] | None = None

    @property
    def name(self) -> str:
        return ".".join(str(part) for part in self.path)


class Checkpoint:
    """The tensors of a folder's safetensors files, memory-mapped, by name.

    ``prefixes`` are stripped from names that carry them (``bert.``, ``transformer.``).
    """

    def __init__(self, folder: str, prefixes: Sequence[str] = ()) -> None:
        self.folder = folder
        self._where: dict[str, tuple[str, dict[str, Any], int]] = {}
        files = weight_files(folder)
        if not files:
            raise ModelLoadError(f"no safetensors weights in {folder}")
        for name in files:
            path = os.path.join(folder, name)
            header, offset = _read_header(path)
            for key, info in header.items():
                if key != "__metadata__":
                    self._where[_strip(key, prefixes)] = (path, info, offset)
        self._maps: dict[str, np.memmap] = {}

    def keys(self) -> set[str]:
        return set(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> np.ndarray:
        path, info, offset = self._where[key]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ModelLoadError(f"{key}: dtype {info['dtype']} is not supported")
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
        start, end = info["data_offsets"]
        raw = self._maps[path][offset + start : offset + end]
        return raw.view(dtype).reshape(info["shape"])


class GGUFCheckpoint:
    """A llama GGUF's tensors under their Hugging Face names, memory-mapped:
    :meth:`blocks` gives a quantized matrix's blocks as they are (Q8_0, Q4_0, Q4_1,
    Q4_K; see :mod:`.quant`), :meth:`get` any tensor dequantized to float32, one at
    a time. Q and K rows are un-permuted from llama.cpp's RoPE layout."""

    def __init__(self, path: str, heads: int, kv_heads: int) -> None:
        from modelport.adapters.filesystem.gguf_header import read_gguf_header
        from modelport.adapters.ggufconvert import llama_tensor_name

        self.folder = path
        try:  # the store's header reader skips the vocabulary, which gguf.GGUFReader parses (2 s for SmolLM2)
            header = read_gguf_header(path)
            tensors = _mapped_tensors(path, header)
        except (InvalidRequest, ValueError, OSError) as exc:
            raise ModelLoadError(f"cannot read the GGUF file {path}: {exc}") from None
        self._tensors: dict[str, tuple[Any, Callable[[np.ndarray], np.ndarray]]] = {}
        for tensor in tensors:
            name, fix = llama_tensor_name(tensor.name, heads, kv_heads)
            if name is None:
                raise ModelLoadError(f"the GGUF holds a tensor the loader does not know: {tensor.name}")
            self._tensors[name] = (tensor, fix)

    def keys(self) -> set[str]:
        return set(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def _shape(self, tensor: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(tensor.shape))

    def get(self, key: str) -> np.ndarray:
        from modelport.adapters.ggufconvert import dequantize_tensor

        tensor, fix = self._tensors[key]
        return fix(dequantize_tensor(tensor))

    def blocks(self, key: str) -> Any:
        """The tensor's blocks as :class:`.quant.Blocks`, or None (a float tensor or
        a block type without a direct form)."""
        from .quant import from_gguf

        tensor, fix = self._tensors[key]
        shape = self._shape(tensor)
        if len(shape) != 2:
            return None
        blocks = from_gguf(tensor.data, tensor.tensor_type.name, shape)  # type: ignore[arg-type]
        if blocks is None:
            return None
        order = fix(np.arange(shape[0]).reshape(shape[0], 1))[:, 0]
        return blocks if np.array_equal(order, np.arange(shape[0])) else blocks.take_rows(order)


@dataclasses.dataclass(frozen=True)
class _GGUFTensor:
    """One tensor of a memory-mapped GGUF, shaped as gguf-py's ReaderTensor is (what
    ``dequantize_tensor`` and ``quant.from_gguf`` read): ``shape`` in GGUF order
    (inputs first), ``data`` float32/float16 in numpy order, or the raw bytes
    (rows, bytes per row) of a block type."""

    name: str
    shape: tuple[int, ...]
    tensor_type: Any
    data: np.ndarray


def _mapped_tensors(path: str, header: Any) -> list[_GGUFTensor]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    tensors = []
    for info in header.tensors:
        kind = GGMLQuantizationType(info.ggml_type)
        block, size = GGML_QUANT_SIZES[kind]
        rows = tuple(reversed(info.shape[1:]))
        row_bytes = info.shape[0] // block * size
        start, length = header.data_offset + info.offset, row_bytes * int(np.prod(rows, dtype=np.int64))
        raw = mapped[start : start + length]
        if len(raw) != length:
            raise ValueError(f"tensor {info.name} runs past the end of the file")
        if kind in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            data = raw.view(np.float32 if kind is GGMLQuantizationType.F32 else np.float16).reshape(
                *rows, info.shape[0]
            )
        else:
            data = raw.reshape(*rows, row_bytes)
        tensors.append(_GGUFTensor(info.name, tuple(info.shape), kind, data))
    return tensors


def _read_header(path: str) -> tuple[dict[str, Any], int]:
    try:
        return safetensors_layout(path)
    except InvalidRequest as exc:
        raise ModelLoadError(str(exc)) from None


def _strip(key: str, prefixes: Iterable[str]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def load_model(
    build: Callable[[], nnx.Module],
    rules: Sequence[Rule],
    checkpoint: Any,
    *,
    ignored: Sequence[str] = (),
    device: Any = None,
    mesh: Any = None,
) -> nnx.Module:
    """``build()`` abstractly, fill every parameter from ``checkpoint`` (a
    :class:`Checkpoint` or a :class:`GGUFCheckpoint`), merge. A parameter that is a
    :class:`~.layers.QuantizedWeight` (its ``values``, ``scales`` and ``offsets``)
    is filled from blocks: the checkpoint's own when it holds them, else its float
    tensors quantized one by one. On a ``mesh`` each parameter is sharded by its
    rule's logical axes, fused ones reordered first (see :mod:`.sharding`)."""
    from . import sharding

    graph, state = nnx.split(nnx.eval_shape(build))
    targets = _flatten(nnx.to_pure_dict(state))
    filled: dict[tuple, Any] = {}
    problems = _Problems()
    used: set[str] = set()
    shards = mesh.size if mesh is not None else 1

    def put(value: np.ndarray, rule: Rule) -> jax.Array:
        if mesh is not None:
            return sharding.place(value, sharding.named(mesh, rule.axes, value.shape))
        return jax.device_put(value, device) if device is not None else jax.numpy.asarray(value)

    for rule in rules:
        target = targets.get(rule.path)
        if target is None and rule.path + ("values",) in targets:
            parts = _assemble_quantized(rule, targets, checkpoint, problems, used, shards)
            # a kernel's rule names its (in, out) axes; its blocks are held (out, in)
            held = rule if rule.transform is identity else dataclasses.replace(rule, axes=tuple(reversed(rule.axes)))
            for name, value in (parts or {}).items():
                problems.covered.add(rule.path + (name,))
                filled[rule.path + (name,)] = put(value, held)
            if parts is None:
                problems.covered.update(p for p in targets if p[:-1] == rule.path)
            continue
        if target is None:
            problems.unknown_paths.append(rule.name)
            continue
        problems.covered.add(rule.path)
        value = _assemble(rule, target, checkpoint, problems, used, shards)
        if value is not None:
            filled[rule.path] = put(value, rule)
    problems.unfilled = [".".join(map(str, p)) for p in targets if p not in problems.covered]
    ignore = re.compile("|".join(f"(?:{pattern})" for pattern in ignored)) if ignored else None
    problems.unexpected = sorted(k for k in checkpoint.keys() - used if not (ignore and ignore.fullmatch(k)))
    problems.raise_if_any(checkpoint.folder)
    nnx.replace_by_pure_dict(state, _unflatten(filled))
    return nnx.merge(graph, state)


def _assemble(
    rule: Rule, target: Any, checkpoint: Any, problems: "_Problems", used: set[str], shards: int = 1
) -> np.ndarray | None:
    """The value of one parameter, or None (with the problem noted)."""
    missing = [name for name in rule.keys if name not in checkpoint]
    if missing:
        problems.missing += missing
        return None
    used.update(rule.keys)
    tensors = [checkpoint.get(name) for name in rule.keys]
    bad = [f"{n} is {t.dtype}" for n, t in zip(rule.keys, tensors) if not _is_float(t.dtype)]
    if bad:
        problems.dtypes += bad
        return None
    value = rule.transform(*tensors)
    if tuple(value.shape) != tuple(target.shape):
        problems.shapes.append(
            f"{rule.name} from {', '.join(rule.keys)}: the checkpoint gives "
            f"{tuple(value.shape)}, the model needs {tuple(target.shape)}"
        )
        return None
    if rule.order is not None and shards > 1:
        value = np.take(value, rule.order(shards), axis=-1)
    value = np.ascontiguousarray(value.astype(target.dtype))
    assert value.dtype == target.dtype and value.shape == tuple(target.shape), rule.name
    return value


def _assemble_quantized(
    rule: Rule, targets: dict[tuple, Any], checkpoint: Any, problems: "_Problems", used: set[str], shards: int = 1
) -> dict[str, np.ndarray] | None:
    """``values``, ``scales`` (and ``offsets``) of a quantized parameter: each
    checkpoint tensor (out, in) as blocks of the parameter's width, stacked by
    outputs for a fused one, kept (out, in) (see :class:`~.layers.QuantizedWeight`)."""
    from .quant import Blocks, concat_rows, to_blocks

    missing = [name for name in rule.keys if name not in checkpoint]
    if missing:
        problems.missing += missing
        return None
    used.update(rule.keys)
    bits = 8 if targets[rule.path + ("values",)].dtype == np.int8 else 4
    if rule.transform not in _QUANTIZED_TRANSFORMS:
        problems.dtypes.append(f"{rule.name} cannot be quantized (its rule transforms the tensors)")
        return None
    parts = []
    for name in rule.keys:
        blocks = checkpoint.blocks(name) if hasattr(checkpoint, "blocks") else None
        tensor = blocks if blocks is not None else checkpoint.get(name)
        if not isinstance(tensor, Blocks) and not _is_float(tensor.dtype):
            problems.dtypes.append(f"{name} is {tensor.dtype}")
            return None
        try:
            parts.append(to_blocks(tensor, bits))
        except (ValueError, ModelLoadError) as exc:
            problems.shapes.append(f"{rule.name} from {name}: {exc}")
            return None
    merged = parts[0] if len(parts) == 1 else concat_rows(parts)
    if rule.order is not None and shards > 1:  # whole block rows (outputs) move
        merged = merged.take_rows(rule.order(shards))
    values = {"values": merged.values, "scales": merged.scales, "offsets": merged.offsets}
    out: dict[str, np.ndarray] = {}
    for name, value in values.items():
        target = targets.get(rule.path + (name,))
        if value is None or target is None:
            continue
        value = np.ascontiguousarray(value)
        if tuple(value.shape) != tuple(target.shape):
            problems.shapes.append(
                f"{rule.name}.{name} from {', '.join(rule.keys)}: the checkpoint gives "
                f"{tuple(value.shape)}, the model needs {tuple(target.shape)}"
            )
            return None
        out[name] = value.astype(target.dtype, copy=False)
    return out


def _is_float(dtype: Any) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype in (
        ml_dtypes.bfloat16,
        ml_dtypes.float8_e4m3fn,
        ml_dtypes.float8_e5m2,
    )


@dataclasses.dataclass
class _Problems:
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    shapes: list[str] = dataclasses.field(default_factory=list)
    dtypes: list[str] = dataclasses.field(default_factory=list)
    unknown_paths: list[str] = dataclasses.field(default_factory=list)
    unfilled: list[str] = dataclasses.field(default_factory=list)
    covered: set[tuple] = dataclasses.field(default_factory=set)

    def raise_if_any(self, folder: str) -> None:
        sections = [
            ("missing tensors", self.missing),
            ("unexpected tensors", self.unexpected),
            ("shape mismatches", self.shapes),
            ("non-float tensors", self.dtypes),
            ("rules for parameters the model lacks", self.unknown_paths),
            ("parameters no rule fills", self.unfilled),
        ]
        lines = [f"{title} ({len(items)}): {_listing(items)}" for title, items in sections if items]
        if lines:
            raise ModelLoadError(f"the weights in {folder} do not fit the model: " + "; ".join(lines))


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_REPORTED])
    return shown + (f", and {len(items) - _MAX_REPORTED} more" if len(items) > _MAX_REPORTED else "")


def _flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    flat: dict[tuple, Any] = {}
    for key, value in tree.items():
        path = prefix + (key,)
        if isinstance(value, dict):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def _unflatten(flat: dict[tuple, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def parameter_bytes(model: nnx.Module) -> int:
    return sum(int(x.nbytes) for x in jax.tree_util.tree_leaves(nnx.state(model)))
