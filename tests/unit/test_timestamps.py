"""The one parser of the Ollama API's timestamps (the CLI's table and the remote adapter)."""

import doctest

from modelport.domain import timestamps
from modelport.domain.timestamps import parse_timestamp


def test_the_doctests() -> None:
    result = doctest.testmod(timestamps)
    assert result.failed == 0 and result.attempted > 0


def test_nanoseconds_and_offsets() -> None:
    assert parse_timestamp("2024-05-01T12:00:00.123456789Z") == 1714564800.123456789
    assert parse_timestamp("2024-05-01T14:00:00+02:00") == 1714564800.0
    assert parse_timestamp("") is None and parse_timestamp(None) is None
    assert parse_timestamp("2024-05-01 12:00") is None
