"""Timestamps as the Ollama API writes them (RFC 3339, nanoseconds allowed)."""

from __future__ import annotations

import datetime
import re

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def parse_timestamp(text: str | None) -> float | None:
    """An RFC 3339 timestamp (nanoseconds and ``Z`` allowed) as seconds since the
    epoch; None for nothing or for what is not one.

    >>> parse_timestamp("1970-01-01T00:01:00.5Z")
    60.5
    >>> parse_timestamp("yesterday") is None
    True
    """
    if not text:
        return None
    match = _RFC3339.match(text.strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    stamp = datetime.datetime.fromisoformat(base + (zone if zone and zone != "Z" else "+00:00"))
    return stamp.timestamp() + (float(fraction) if fraction else 0.0)
