"""The input boundary: every function returns something every sink accepts, or BoundaryError."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robust_collector.boundary import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    BoundaryError,
    JSONSyntaxError,
    bounded_float,
    bounded_int,
    clamp_int64,
    clean_text,
    loads_bounded,
    safe_row,
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("quota exceeded for \ud83d", "quota exceeded for \\ud83d"),
        ("nul\x00here", "nul\\x00here"),
        (
            "title \x1b]0;pwned\x07 clear \x1b[2J done",
            "title \\x1b]0;pwned\\x07 clear \\x1b[2J done",
        ),
        ("line\nbreak\ttab", "line break tab"),
        ("café ✓ 中文", "café ✓ 中文"),  # printable text stays as it is
        (b"\xff bytes", "\ufffd bytes"),
        (12.5, "12.5"),
    ],
)
def test_clean_text_shows_what_a_terminal_or_database_would_choke_on_escaped(raw, shown):
    assert clean_text(raw) == shown


def test_clean_text_caps_length_and_survives_a_hostile_str():
    assert len(clean_text("x" * 10_000_000)) == 2000

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert clean_text(Hostile()) == "<unprintable Hostile: RuntimeError>"


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_clean_text_output_is_encodable_printable_and_stable(text):
    out = clean_text(text)
    out.encode("utf-8")
    orjson.dumps(out)
    assert "\x00" not in out and "\x1b" not in out
    assert clean_text(out, len(out) + 1) == out  # cleaning twice changes nothing


def test_integers_are_kept_inside_int64():
    assert clamp_int64(2**64) == INT64_MAX and clamp_int64(-(2**70)) == INT64_MIN
    assert bounded_int(1e3) == 1000
    for bad in (2**63, math.nan, 1.5, "1", True):
        with pytest.raises(BoundaryError):
            bounded_int(bad)
    assert bounded_float("2.5") == 2.5 and bounded_float(None) is None
    with pytest.raises(BoundaryError):
        bounded_float(10**400)


def test_json_is_parsed_within_depth_and_size_bounds():
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads_bounded(ok) is not None
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(BoundaryError, match="nested deeper"):
        loads_bounded(deep)
    # deep but with few brackets elsewhere: the walk still runs when brackets exceed the bound
    wide_and_deep = "[" + ",".join(["[]"] * 100) + "," + deep + "]"
    with pytest.raises(BoundaryError, match="nested deeper"):
        loads_bounded(wide_and_deep)
    with pytest.raises(JSONSyntaxError):
        loads_bounded("[" * 10_000 + "]" * 10_000)  # orjson's own limit, no RecursionError
    with pytest.raises(JSONSyntaxError):
        loads_bounded(b"NaN")
    with pytest.raises(BoundaryError, match="exceeds"):
        loads_bounded(b" " * 20, max_bytes=10)


def test_safe_row_makes_any_row_storable():
    row = safe_row((2**64, -(2**64), "x\ud83d\x00", math.nan, math.inf, 1.5, None, b"raw"))
    assert row[:2] == (INT64_MAX, INT64_MIN)
    assert row[2] == "x\\ud83d\\x00"
    assert row[3] is None and row[4] is None and row[5] == 1.5 and row[6] is None
    orjson.dumps(list(row[:7]))
