"""Properties of the backup files: whatever was written completely is read back exactly once."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_collector.storage.backup import (
    BackupWriter,
    Problem,
    decode_line,
    encode_batch,
    iter_backup_file,
    list_backup_files,
    read_backup_file,
)
from robust_collector.storage.recovery import recover

INT64 = st.integers(-(2**63), 2**63 - 1)
PRICE = st.none() | st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=12)
ROW_TAIL = st.tuples(TEXT, INT64, INT64, INT64, PRICE, PRICE, PRICE, PRICE, PRICE, TEXT, TEXT)
REJECT_TAIL = st.tuples(TEXT, TEXT, INT64)
MAYBE_TEXT = st.none() | TEXT
# a trade after its id: symbol, seq, ts, recv, price, size, venue, conditions, correction,
# provider id, tape, source, run
TRADE_TAIL = st.tuples(
    TEXT, INT64, INT64, INT64, PRICE, PRICE, MAYBE_TEXT, MAYBE_TEXT, st.none() | INT64,
    MAYBE_TEXT, MAYBE_TEXT, TEXT, TEXT,
)  # fmt: skip
BATCHES = st.lists(
    st.tuples(
        st.lists(ROW_TAIL, max_size=8),
        st.lists(st.tuples(ROW_TAIL, REJECT_TAIL), max_size=3),
        st.lists(TRADE_TAIL, max_size=6),
        st.lists(st.tuples(TRADE_TAIL, REJECT_TAIL), max_size=2),
    ),
    min_size=1,
    max_size=8,
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def number(batches: list[Any]) -> list[tuple[list[tuple[Any, ...]], ...]]:
    """Give every row a unique id (tick or trade), as the collector does."""
    ids = itertools.count()
    out = []
    for ticks, rejects, trades, trade_rejects in batches:
        t = [(f"id{next(ids)}", *row) for row in ticks]
        r = [(f"id{next(ids)}", *row, *extra) for row, extra in rejects]
        tr = [(f"id{next(ids)}", *row) for row in trades]
        trr = [(f"id{next(ids)}", *row, *extra) for row, extra in trade_rejects]
        out.append((t, r, tr, trr))
    return out


def expected_after_cut(data: bytes, cut: int) -> tuple[int, bool]:
    """How many leading lines survive a cut at ``cut`` bytes, and whether a torn tail remains."""
    kept = 0
    start = 0
    for line in data.splitlines(keepends=True):
        end = start + len(line)
        if end <= cut or end - 1 == cut:  # whole line, or only its newline lost
            kept += 1
        start = end
    torn = cut > 0 and data[cut - 1 : cut] != b"\n"
    return kept, torn


CUTS = st.tuples(st.sampled_from(["anywhere", "line end", "before newline"]), st.floats(0, 1))


def choose_cut(data: bytes, how: str, fraction: float) -> int:
    """A cut position: anywhere, or at the edges where off-by-one bugs live."""
    if how == "anywhere" or not data:
        return round(fraction * len(data))
    ends = [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    end = ends[min(int(fraction * len(ends)), len(ends) - 1)]
    return end if how == "line end" else end - 1


@given(batches=BATCHES, limit=st.integers(1, 4000), cut=CUTS)
@SETTINGS
def test_complete_lines_survive_a_torn_tail_exactly_once(
    batches: list[Any], limit: int, cut: tuple[str, float]
) -> None:
    batches = number(batches)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "b"
        with BackupWriter(folder, "run", max_file_bytes=limit, fsync="never") as w:
            for ticks, rejects, trades, trade_rejects in batches:
                w.write_batch(ticks, rejects, trades, trade_rejects)
        files = list_backup_files(folder)
        # rows in the order a batch's lines are written (rejects placed among the ticks,
        # trade rejects among the trades, by symbol and seq: see encode_batch)
        written = [
            decode_line(line)[1]
            for rows in batches
            for line in encode_batch(*rows).splitlines(keepends=True)
        ]
        if not files:
            assert written == []
            return
        last = files[-1]
        data = last.read_bytes()
        at = choose_cut(data, *cut)
        last.write_bytes(data[:at])
        kept_in_last, torn = expected_after_cut(data, at)

        got: list[tuple[Any, ...]] = []
        problems: list[Problem] = []
        for p in files:
            got.extend(record.row for record in iter_backup_file(p, problems=problems))
            whole = read_backup_file(p)  # the chunked reader agrees with the line reader
            rows = whole.ticks + whole.rejects + whole.trades + whole.trade_rejects
            assert sorted(map(repr, rows)) == sorted(repr(r.row) for r in iter_backup_file(p))
        lines_before_last = sum(len(p.read_bytes().splitlines()) for p in files[:-1])
        expected = written[: lines_before_last + kept_in_last]
        assert got == expected  # every complete line, in order, nothing twice
        assert [p.kind for p in problems] == (["torn"] if torn else [])
        if torn:
            assert problems[0].line == len(data[:at].splitlines())

        db = Path(tmp) / "t.db"
        copy = Path(tmp) / "copy"
        shutil.copytree(folder, copy)
        report = recover(db, folder)
        ids = {row[0] for row in expected}
        assert report.inserted == len(ids)
        assert report.totals["torn"] == int(torn)
        with sqlite3.connect(db) as conn:
            stored = conn.execute(
                "SELECT tick_id FROM ticks UNION ALL SELECT tick_id FROM rejects UNION ALL "
                "SELECT trade_id FROM trades UNION ALL SELECT trade_id FROM trade_rejects"
            )
            assert sorted(r[0] for r in stored) == sorted(ids)
        assert recover(db, copy).inserted == 0


@given(row=ROW_TAIL, extra=REJECT_TAIL)
@settings(max_examples=200, deadline=None)
def test_any_row_round_trips_exactly(row: tuple[Any, ...], extra: tuple[Any, ...]) -> None:
    tick = ("id", *row)
    rej = (*tick, *extra)
    t_line, r_line = encode_batch([tick], [rej]).splitlines(keepends=True)
    assert decode_line(t_line) == ("tick", tick)
    assert decode_line(r_line) == ("reject", rej)


@given(row=TRADE_TAIL, extra=REJECT_TAIL)
@settings(max_examples=200, deadline=None)
def test_any_trade_row_round_trips_exactly(row: tuple[Any, ...], extra: tuple[Any, ...]) -> None:
    trade = ("id", *row)
    rej = (*trade, *extra)
    t_line, r_line = encode_batch(trades=[trade], trade_rejects=[rej]).splitlines(keepends=True)
    assert decode_line(t_line) == ("trade", trade)
    assert decode_line(r_line) == ("trade_reject", rej)


@given(
    rows=st.lists(ROW_TAIL, min_size=2, max_size=6),
    which=st.integers(0, 10**6),
    at=st.integers(0, 10**6),
    xor=st.integers(1, 255),
)
@settings(max_examples=200, deadline=None)
def test_any_changed_byte_is_caught(
    rows: list[tuple[Any, ...]], which: int, at: int, xor: int
) -> None:
    ticks = [(f"id{i}", *row) for i, row in enumerate(rows)]
    lines = encode_batch(ticks).splitlines(keepends=True)
    victim = which % len(lines)
    line = bytearray(lines[victim])
    pos = at % (len(line) - 1)  # never the newline itself
    line[pos] ^= xor
    if line[pos] == ord("\n"):
        line[pos] ^= 0x80 if xor != 0x80 else 0x40
    lines[victim] = bytes(line)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ticks-run-000001.jsonl"
        path.write_bytes(b"".join(lines))
        got = read_backup_file(path)
    assert got.ticks == [t for i, t in enumerate(ticks) if i != victim]
    assert [(p.line, p.kind) for p in got.problems] == [(victim + 1, "corrupt")]
