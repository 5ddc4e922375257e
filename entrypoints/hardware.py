"""What this machine has to hold models: memory (``/proc/meminfo`` or ``sysconf``)
and NVIDIA GPUs (``nvidia-smi``, when it is installed). Standard library only."""

from __future__ import annotations

import os
import shutil
import subprocess

import attrs

NVIDIA_SMI_TIMEOUT_S = 5.0
MIB = 1 << 20


@attrs.frozen(kw_only=True)
class Memory:
    total: int
    available: int | None = None


@attrs.frozen(kw_only=True)
class Gpu:
    index: int
    name: str
    total: int
    free: int | None = None


def parse_meminfo(text: str) -> Memory | None:
    """``/proc/meminfo``: MemTotal and MemAvailable (kB) in bytes."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    if "MemTotal" not in values:
        return None
    return Memory(total=values["MemTotal"], available=values.get("MemAvailable"))


def system_memory() -> Memory | None:
    """The machine's memory, or None when it cannot be told."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            memory = parse_meminfo(handle.read())
        if memory is not None:
            return memory
    except OSError:
        pass
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return Memory(total=pages * page_size) if pages > 0 and page_size > 0 else None


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits``."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        try:
            total = int(float(fields[2]) * MIB)
        except ValueError:
            continue
        try:
            free = int(float(fields[3]) * MIB) if len(fields) > 3 else None
        except ValueError:
            free = None  # "[N/A]" on some boards
        gpus.append(Gpu(index=int(fields[0]), name=fields[1], total=total, free=free))
    return gpus


def nvidia_gpus(timeout: float = NVIDIA_SMI_TIMEOUT_S) -> list[Gpu]:
    """The NVIDIA GPUs ``nvidia-smi`` reports; none when it is missing or fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    query = "--query-gpu=index,name,memory.total,memory.free"
    try:
        result = subprocess.run(
            [executable, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []
