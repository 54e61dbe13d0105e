"""Replay files with hostile cells: bounded quotes and trades, or one typed one-line error.

A valid CSV or JSONL file (quotes, or trades) gets one to three of its cells replaced
from the poison catalogue: lone surrogates (as the bytes a careless writer leaves, or
as a JSON escape), NUL, control characters and terminal escapes, 2**63 and 2**64,
1e308 and 1e999, NaN and infinities, times in s/ms/us/ns or unparseable, 10,000-deep
JSON, 10 MB lines, empty and null cells, wrong types (lists, objects, booleans).
``create_source`` plus fetching every item either yields items whose integers are
inside int64, whose numbers are floats or None and whose texts (symbols, trade
fields) are clean and bounded, or raises ``ConfigError``: one clean line naming the
file, and for a bad value the column and the row. Never any other exception.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_collector import Collector
from robust_collector.boundary import INT64_MAX, INT64_MIN, clean_text
from robust_collector.errors import ConfigError, EndOfData
from robust_collector.model import Quote, Trade
from robust_collector.sources import ReplaySourceConfig, create_source

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
T0 = 1_709_908_200  # 2024-03-08 14:30 UTC, in seconds
UNIT = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}

# -- the catalogue, as CSV cells (text) and as JSONL values (JSON text) ------------------

BAD_TEXT = ["\ud83d", "\udc00", "\x00", "A\x00B", "\x1b[2J", "\x1b]0;pwned\x07", "\x7f", "\u202e"]
CSV_CELLS: list[str] = [
    *BAD_TEXT,
    "",
    " ",
    '"',
    ",",
    "\r\n",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "-1e308",
    "1e999",
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    "9" * 400,
    "-1",
    "0",
    "true",
    "null",
    "[1]",
    "{}",
    "abc",
    "2024-13-45T99:99:99",
    "2024-03-08T09:30:00Z",
    str(T0),
    str(T0 * 10**3),
    str(T0 * 10**6),
    str(T0 * 10**9),
    "x" * 3000,
]
DEEP = "[" * 10_000 + "]" * 10_000
JSON_VALUES: list[str] = [
    *(json.dumps(t) for t in BAD_TEXT),  # "\ud83d" as the JSON escape a writer emits
    "null",
    "true",
    "[]",
    "{}",
    "[1.5]",
    '{"a": 1}',
    '{"\\u001b[2J": 1}',  # a struct whose field name is a terminal escape
    '""',
    '"NaN"',
    '"1e999"',
    "NaN",
    "Infinity",
    "-Infinity",
    "1e308",
    "-1e308",
    "1e999",
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    "9" * 400,
    "-1",
    "0",
    "1.5",
    DEEP,
    "[" * 200 + "]" * 200,
    json.dumps("2024-13-45T99:99:99"),
    str(T0),
    str(T0 * 10**6),
    str(T0 * 10**9),
    json.dumps("x" * 3000),
]

QUOTE_COLS = ["symbol", "ts_us", "bid", "ask", "bid_size", "ask_size", "last"]
TRADE_COLS = ["symbol", "ts_us", "price", "size", "venue", "conditions", "correction", "tape"]


def good_rows(kind: str, n: int, unit: str) -> list[dict[str, Any]]:
    """``n`` valid rows (symbols A and B); times are integers in ``unit``."""
    out = []
    for i in range(n):
        t = (T0 + i) * UNIT[unit]
        sym = "AB"[i % 2]
        if kind == "quotes":
            row = {"symbol": sym, "ts_us": t, "bid": 100.0 + i, "ask": 100.5 + i}
            row |= {"bid_size": 3.0, "ask_size": 2.0, "last": 100.25 + i}
        else:
            row = {"symbol": sym, "ts_us": t, "price": 100.0 + i, "size": 100.0, "venue": "N"}
            row |= {"conditions": "@ F", "correction": 0, "tape": "A"}
        out.append(row)
    return out


def csv_cell(v: Any) -> str:
    text = v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v)
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path: Path, cols: list[str], rows: list[dict[str, Any]]) -> None:
    lines = [",".join(cols), *(",".join(csv_cell(r[c]) for c in cols) for r in rows)]
    # a lone surrogate lands in the file as the bytes a careless writer leaves (not UTF-8)
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


def write_jsonl(path: Path, cols: list[str], rows: list[dict[str, Any]]) -> None:
    def value(v: Any) -> str:
        return v if isinstance(v, _Raw) else json.dumps(v)

    lines = ["{" + ",".join(f"{json.dumps(c)}:{value(r[c])}" for c in cols) + "}" for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


class _Raw(str):
    """A JSONL cell written as is (raw JSON text: NaN, deep nesting, 2**64...)."""


def drain(src: Any) -> list[Quote | Trade]:
    async def go() -> list[Quote | Trade]:
        out: list[Quote | Trade] = []
        await src.start("run")
        for sym in src.symbols:
            for _ in range(1000):
                try:
                    out.append(await src.fetch(sym))
                except EndOfData:
                    break
        return out

    return asyncio.run(go())


def assert_bounded(items: list[Quote | Trade]) -> None:
    for it in items:
        assert clean_text(it.symbol, 65) == it.symbol and len(it.symbol) <= 64, it.symbol
        assert INT64_MIN <= it.ts_us <= INT64_MAX and INT64_MIN <= it.recv_us <= INT64_MAX
        if isinstance(it, Quote):
            nums: tuple[Any, ...] = (it.bid, it.ask, it.bid_size, it.ask_size, it.last)
        else:
            nums = (it.price, it.size)
            for text in (it.venue, it.conditions, it.provider_id, it.tape):
                assert text is None or (clean_text(text, 200) == text and len(text) <= 128)
            assert it.correction is None or INT64_MIN <= it.correction <= INT64_MAX
        for v in nums:
            assert v is None or type(v) is float, v


def assert_one_line(exc: ConfigError, name: str) -> None:
    text = str(exc)
    assert "\n" not in text and clean_text(text, len(text) + 1) == text, text[:300]
    assert len(text) <= 600, len(text)
    assert name in text, text  # the file
    if "not numeric" in text or "not integers" in text or "have no time" in text:
        # a bad value: the column, and the row (unless the whole column has the wrong type)
        assert "column" in text or "ts_us" in text, text
        assert "first at row " in text or "cannot cast" in text, text


def poison(kind: str, fmt: str) -> Any:
    cols = QUOTE_COLS if kind == "quotes" else TRADE_COLS
    cells = st.sampled_from(CSV_CELLS) if fmt == "csv" else st.sampled_from(JSON_VALUES)
    hits = st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(cols), cells), min_size=1, max_size=3
    )
    return st.tuples(hits, st.sampled_from(list(UNIT)))


def run_case(
    folder: Path, kind: str, fmt: str, hits: list[tuple[int, str, str]], unit: str
) -> None:
    cols = QUOTE_COLS if kind == "quotes" else TRADE_COLS
    rows = good_rows(kind, 4, unit)
    for i, col, cell in hits:
        rows[i][col] = cell if fmt == "csv" else _Raw(cell)
    path = folder / f"{kind}.{fmt}"
    (write_csv if fmt == "csv" else write_jsonl)(path, cols, rows)
    key = "path" if kind == "quotes" else "trades_path"
    cfg = ReplaySourceConfig(data=(kind,), speed=0, time_unit=unit, **{key: str(path)})
    try:
        src = create_source(cfg)
    except ConfigError as exc:
        assert_one_line(exc, path.name)
        return
    items = drain(src)
    assert_bounded(items)
    assert len(items) == 4  # every row of a file that loads is replayed


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("kind", ["quotes", "trades"])
def test_hostile_cells_give_bounded_items_or_one_line_errors(
    tmp_path: Path, kind: str, fmt: str
) -> None:
    @SETTINGS
    @given(case=poison(kind, fmt))
    def prop(case: tuple[list[tuple[int, str, str]], str]) -> None:
        run_case(tmp_path, kind, fmt, *case)

    prop()


# -- the cases the property found, as plain tests (they failed before the fix) -------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("symbol", ["\x1b]0;pwned\x07\x1b[2J", "A\x00B", "\u202e" + "X" * 5000])
def test_a_files_hostile_symbol_is_reported_clean_and_bounded(
    tmp_path: Path, make_config: Any, fmt: str, symbol: str
) -> None:
    """A symbol holding terminal escapes or NUL (or 5,000 characters) was kept and shown as
    is: ``robust-collector run`` printed the escapes to the terminal in "SPY not in the
    replayed file (it holds ...)"."""
    rows = good_rows("quotes", 2, "us")
    rows[1]["symbol"] = symbol
    path = tmp_path / f"q.{fmt}"
    (write_csv if fmt == "csv" else write_jsonl)(path, QUOTE_COLS, rows)
    src = create_source(ReplaySourceConfig(path=str(path), speed=0))
    assert all(clean_text(s) == s and len(s) <= 64 for s in src.symbols), src.symbols
    assert len(src.symbols) == 2 and "A" in src.symbols
    assert_bounded(drain(src))
    cfg = make_config(symbols=["SPY"], source={"type": "replay", "path": str(path), "speed": 0})
    with pytest.raises(ConfigError) as info:
        Collector(cfg)
    text = str(info.value)
    assert "not in the replayed file" in text and clean_text(text) == text, text[:300]
    assert len(text) < 300


def test_two_symbols_that_clean_alike_stay_apart(tmp_path: Path) -> None:
    rows = good_rows("quotes", 4, "us")
    rows[1]["symbol"], rows[3]["symbol"] = "A\x00", "A\x01"
    path = tmp_path / "q.csv"
    write_csv(path, QUOTE_COLS, rows)
    src = create_source(ReplaySourceConfig(path=str(path), speed=0))
    assert sorted(src.symbols) == ["A", "A\\x00", "A\\x01"]
    assert {s: src.rows(s) for s in src.symbols} == {"A": 2, "A\\x00": 1, "A\\x01": 1}
    rows[3]["symbol"] = "A\t"  # cleans to "A " ... and "A\n" too
    rows[1]["symbol"] = "A\r"
    write_csv(path, QUOTE_COLS, rows)
    src = create_source(ReplaySourceConfig(path=str(path), speed=0))
    assert sorted(src.symbols) == ["A", "A ", "A  #2"]
    assert len(drain(src)) == 4


@pytest.mark.parametrize(
    "value",
    ['{"\\u001b]0;pwned\\u0007": 1}', "[" * 200 + "1" + "]" * 200],
    ids=["struct-with-escape-field", "200-deep-list"],
)
def test_a_time_column_of_a_nested_type_is_one_short_clean_line(tmp_path: Path, value: str) -> None:
    """The column's dtype (from the file: a struct's field names, a 200-deep list) went
    into the error as is: a terminal escape, or a 1,400-character line."""
    path = tmp_path / "q.jsonl"
    path.write_text(f'{{"symbol": "A", "ts_us": {value}, "last": 1.0}}\n')
    with pytest.raises(ConfigError) as info:
        create_source(ReplaySourceConfig(path=str(path), speed=0))
    text = str(info.value)
    assert text.startswith("source.columns: column 'ts_us' is ") and "q.jsonl" in text
    assert clean_text(text) == text and len(text) < 300, text


def test_a_header_with_escapes_and_thousands_of_columns_is_shown_bounded(tmp_path: Path) -> None:
    header = ["symbol", "t", "last", "\x1b[2J", *(f"c{i}" for i in range(5000))]
    path = tmp_path / "q.csv"
    path.write_text(",".join(header) + "\n" + ",".join(["A", str(T0), "1"] + ["0"] * 5001) + "\n")
    cfg = ReplaySourceConfig(path=str(path), speed=0, columns={"ts_us": "nope"})
    with pytest.raises(ConfigError) as info:
        create_source(cfg)
    text = str(info.value)
    assert "['nope'] not in the file" in text and "5004 columns" in text
    assert clean_text(text) == text and len(text) < 1000, len(text)


def test_a_10mb_line_is_a_bounded_item_or_a_one_line_error(tmp_path: Path) -> None:
    for fmt in ("csv", "jsonl"):
        rows = good_rows("quotes", 4, "s")
        rows[2]["symbol"] = "Z" * (10 * 1024 * 1024)
        rows[3]["bid"] = "1" * (10 * 1024 * 1024) if fmt == "csv" else _Raw("9" * 10_000_000)
        path = tmp_path / f"big.{fmt}"
        (write_csv if fmt == "csv" else write_jsonl)(path, QUOTE_COLS, rows)
        try:
            src = create_source(ReplaySourceConfig(path=str(path), speed=0, time_unit="s"))
        except ConfigError as exc:
            assert_one_line(exc, path.name)
            continue
        assert_bounded(drain(src))
