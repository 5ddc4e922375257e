"""Ollama's wire values that need parsing or formatting of their own."""

from __future__ import annotations

import math

import pytest

from modelport.domain import InvalidRequest
from modelport.entrypoints.http.schemas import parse_duration, parse_keep_alive, rfc3339


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0.0),
        ("10", 10.0),
        ("1.5", 1.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("2m3s", 123.0),
        ("-1m", -60.0),
        ("+10s", 10.0),
        ("1us", 1e-6),
    ],
)
def test_durations_read_as_go_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "5 m", "5d", "five minutes", "1h-30m", "inf", "nan", "1e3s"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        (0, 0.0),
        (300, 300.0),
        (2.5, 2.5),
        ("5m", 300.0),
        (-1, math.inf),
        ("-1s", math.inf),
    ],
)
def test_keep_alive_is_seconds_and_negative_means_forever(value, seconds) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", [True, [1], {"m": 5}, float("nan")])
def test_keep_alive_of_another_type_is_refused(value) -> None:
    with pytest.raises(InvalidRequest, match="keep_alive"):
        parse_keep_alive(value)


def test_timestamps_are_rfc3339_in_utc() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"
