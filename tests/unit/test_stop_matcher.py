from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelport.domain import StopMatcher
from modelport.domain.stopping import first_stop


def run(stops, deltas):
    matcher = StopMatcher(stops)
    out = [matcher.push(d) for d in deltas]
    return "".join(out) + matcher.flush(), matcher.stopped


def test_stop_split_across_deltas_is_never_emitted() -> None:
    assert run(["</s>"], ["Hello <", "/", "s", "> world"]) == ("Hello ", True)


def test_partial_match_that_fails_is_released() -> None:
    assert run(["STOP"], ["a ST", "OPPED"]) == ("a ", True)
    assert run(["STOP"], ["a ST", "ART"]) == ("a START", False)


def test_held_text_comes_back_at_the_end() -> None:
    assert run(["###"], ["end #", "#"]) == ("end ##", False)


def test_the_stop_completed_first_wins() -> None:
    assert run(["world", "lo w"], ["hello world"]) == ("hel", True)
    assert run(["abcd", "bc"], ["abcd"]) == run(["abcd", "bc"], ["abc", "d"]) == ("a", True)


def test_without_stops_everything_passes() -> None:
    assert run([], ["a", "b"]) == ("ab", False)


def test_nothing_after_the_stop() -> None:
    matcher = StopMatcher(["x"])
    assert matcher.push("axb") == "a"
    assert matcher.push("more") == "" and matcher.flush() == ""


@given(
    text=st.text(alphabet="abc<>/", max_size=60),
    stops=st.lists(st.text(alphabet="abc<>/", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=10),
)
def test_any_split_gives_the_text_before_the_first_stop(text, stops, cuts) -> None:
    points = sorted({c for c in cuts if c <= len(text)} | {0, len(text)})
    deltas = [text[a:b] for a, b in zip(points, points[1:])]
    cut = first_stop(text, stops)
    expected = (text[:cut], True) if cut is not None else (text, False)
    assert run(stops, deltas) == expected
