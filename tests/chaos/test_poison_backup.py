"""Backup lines from a hostile world: the decoder never raises, recovery never stops.

``decode_line`` given arbitrary bytes (and lines with a valid checksum around any
JSON object) returns a decoded row or raises ``CorruptLine``; the chunk reader
accounts for every line as a row or a problem. Checksummed lines that carry lone
surrogates, NUL and terminal escapes, NaN and infinities, 2**63 and 2**64,
10,000-deep values, wrong types, a kind that is a list, go through ``recover``
into a real SQLite database and through the collector's automatic replay: each is
stored, quarantined with its reason, or reported as a corrupt line with its
detail; the good lines around it, the rest of its file and the later files are
all stored, and nothing raises.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from helpers.waiting import wait_until
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from robust_collector import Collector
from robust_collector.config import Config
from robust_collector.storage.backup import (
    KINDS,
    CorruptLine,
    backup_file_name,
    decode_line,
    encode_batch,
    iter_backup_chunks,
    list_backup_files,
)
from robust_collector.storage.recovery import QUARANTINE_DIR, recover
from robust_collector.storage.tables import (
    REJECT_COLUMNS,
    TICK_COLUMNS,
    TRADE_COLUMNS,
    TRADE_REJECT_COLUMNS,
)

T = 1_709_908_200_000_000
COLUMNS = {
    "tick": TICK_COLUMNS,
    "reject": REJECT_COLUMNS,
    "trade": TRADE_COLUMNS,
    "trade_reject": TRADE_REJECT_COLUMNS,
}
DEEP = "[" * 10_000 + "]" * 10_000
_DEEP_MARK = "__deep__"


def record(kind: str, n: int, run: str = "old", **over: Any) -> dict[str, Any]:
    """A good record of ``kind`` (unique id ``run:SPY:n``), with fields overridden."""
    rid = f"{run}:SPY:{n}"
    if kind in ("tick", "reject"):
        rec: dict[str, Any] = {"kind": kind, "tick_id": rid, "symbol": "SPY", "seq": n}
        rec |= {"ts_us": T + n, "recv_us": T + n, "bid": 100.0, "ask": 100.02}
        rec |= {"bid_size": 3.0, "ask_size": 2.0, "last": None, "source": "sim", "run_id": run}
    else:
        rec = {"kind": kind, "trade_id": rid, "symbol": "SPY", "seq": n, "ts_us": T + n}
        rec |= {"recv_us": T + n, "price": 100.0, "size": 5.0, "venue": "N", "conditions": "@"}
        rec |= {"correction": 0, "provider_id": str(n), "tape": "A", "source": "sim"}
        rec |= {"run_id": run}
    if kind.endswith("reject"):
        rec |= {"rule": "crossed", "reason": "crossed quote", "rejected_us": T + n}
    rec.update(over)
    return rec


def signed(rec: dict[str, Any] | str) -> bytes:
    """A line whose checksum is right for whatever it holds (``json`` writes NaN, lone
    surrogates as ``\\ud83d`` escapes and integers of any size, as a careless writer would)."""
    text = rec if isinstance(rec, str) else json.dumps(rec, separators=(",", ":"))
    text = text.replace(json.dumps(_DEEP_MARK), DEEP)
    head = text.encode("utf-8", "surrogatepass")[:-1]
    return b'%s,"crc32":%d}\n' % (head, zlib.crc32(head))


# -- the decoder: arbitrary bytes ------------------------------------------------------------

LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["\ud83d", "\x00", "\x1b[2J", "tick", "reject", "trade", "trade_reject"])
)
JSON = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)
FIELD_NAMES = sorted({c for cols in COLUMNS.values() for c in cols} | {"kind", "crc32"})


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return "{}"


def _mutated(args: tuple[str, int, str, Any]) -> bytes:
    kind, n, name, value = args
    rec = record(kind, n)
    rec[name] = value  # "kind" too
    return signed(rec)


LINES = (
    st.binary(max_size=200)
    # any JSON object, checksummed: the checksum is no proof of a sane record
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), JSON, max_size=16)
    .map(_dumps)
    .filter(lambda s: s.startswith("{") and len(s) > 2)
    .map(signed)
    # a good record with one field replaced by anything
    | st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 10**6),
        st.sampled_from(FIELD_NAMES),
        JSON | st.just(_DEEP_MARK),
    ).map(_mutated)
    # and the same, cut short anywhere (a torn write)
    | st.tuples(st.sampled_from(KINDS), st.integers(0, 99), st.sampled_from(FIELD_NAMES), JSON)
    .map(_mutated)
    .flatmap(lambda b: st.integers(0, len(b)).map(lambda cut: b[:cut]))
)
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@SETTINGS
@given(line=LINES)
@example(line=_mutated(("tick", 1, "kind", [])))  # raised TypeError (unhashable) before
@example(line=_mutated(("trade", 1, "kind", {"a": 1})))
@example(line=_mutated(("tick", 1, "kind", "\x1b[2J" * 100_000)))  # a 700 kB detail before
def test_decode_line_returns_a_row_or_raises_corrupt_line_never_anything_else(line: bytes) -> None:
    try:
        kind, row = decode_line(line)
    except CorruptLine as exc:
        text = str(exc)
        assert "\n" not in text and len(text) <= 400, text[:500]
        return
    assert kind in KINDS and len(row) == len(COLUMNS[kind])


@settings(SETTINGS, max_examples=50)
@given(lines=st.lists(LINES, max_size=8), size=st.integers(1, 4))
def test_the_chunk_reader_accounts_for_every_line(lines: list[bytes], size: int) -> None:
    data = b"".join(ln if ln.endswith(b"\n") else ln + b"\n" for ln in lines)
    if lines and not lines[-1].endswith(b"\n"):
        data = data[:-1]  # the last line as torn as it came
    problems: list[Any] = []
    rows = n = 0
    for chunk in iter_backup_chunks(io.BytesIO(data), name="f", size=size, problems=problems):
        n += chunk.lines
        rows += len(chunk.ticks) + len(chunk.rejects) + len(chunk.trades)
        rows += len(chunk.trade_rejects)
    assert n == data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    kept_torn = sum(p.kind == "torn" and "intact" in p.detail for p in problems)
    assert rows + len(problems) - kept_torn == n, (rows, problems, n)
    assert all(p.kind in ("torn", "corrupt") and p.detail for p in problems)


# -- recovery into a real database ----------------------------------------------------------

# (outcome, record kind, the record's overrides or a raw line): outcome is what recovery
# must do with it: "stored", "quarantined", "corrupt" or "kept" (stored or quarantined)
POISON: list[tuple[str, str, dict[str, Any] | bytes]] = [
    ("corrupt", "tick", {"symbol": "\ud83d"}),
    ("corrupt", "tick", {"reason": "x", "source": "\udc00"}),
    ("kept", "tick", {"symbol": "SP\x00Y"}),
    ("kept", "tick", {"source": "\x1b]0;pwned\x07\x1b[2J"}),
    ("kept", "trade", {"venue": "\x00", "conditions": "\x1b[31m"}),
    ("quarantined", "tick", {"ts_us": 2**63}),
    ("quarantined", "tick", {"seq": 2**64 - 1}),
    ("quarantined", "reject", {"rejected_us": 2**63}),
    ("quarantined", "trade", {"correction": 2**63}),
    ("quarantined", "trade_reject", {"recv_us": 2**63 + 5}),
    ("corrupt", "tick", {"ts_us": 2**64}),  # read as a float: the wrong type
    ("corrupt", "tick", {"recv_us": -(2**63) - 1}),
    ("corrupt", "tick", {"bid": math.nan}),
    ("corrupt", "tick", {"ask": math.inf}),
    ("corrupt", "trade", {"price": -math.inf}),
    ("stored", "tick", {"bid": 1e308, "ask": 1e308}),
    ("stored", "tick", {"bid_size": 2**64}),  # a float column: 1.8e19 is a float
    ("corrupt", "tick", {"bid": "100.0"}),
    ("corrupt", "tick", {"bid": True}),
    ("corrupt", "tick", {"seq": 1.5}),
    ("corrupt", "tick", {"tick_id": None}),
    ("corrupt", "trade", {"venue": ["N"]}),
    ("corrupt", "tick", {"bid": _DEEP_MARK}),
    ("corrupt", "tick", {"kind": []}),
    ("corrupt", "tick", {"kind": {"a": 1}}),
    ("corrupt", "tick", {"kind": "\x1b[2J" * 10_000}),
    ("corrupt", "tick", {"kind": None}),
    ("kept", "tick", {"symbol": "Z" * 10_000_000}),  # a 10 MB line
    ("corrupt", "tick", b"NaN\n"),
    ("corrupt", "tick", b"\n"),
    ("corrupt", "tick", b"\xff\xfe\x00garbage\n"),
    ("corrupt", "tick", b'{"kind":"tick"}\n'),
    ("corrupt", "tick", b"[" * 10_000 + b"]" * 10_000 + b"\n"),
]


def line_of(i: int, kind: str, over: dict[str, Any] | bytes) -> bytes:
    if isinstance(over, bytes):
        return over
    rec = record(kind, 1000 + i)
    rec.update(over)
    return signed(rec)


def hostile_folder(folder: Path) -> tuple[dict[int, str], list[str], list[str]]:
    """Three backup files of an earlier run: the poison between good lines, then two clean
    files. Returns (line number -> outcome, for the first file), the ids of every good line,
    and the ids of the poison lines that must be kept."""
    folder.mkdir(parents=True, exist_ok=True)
    outcome: dict[int, str] = {}
    good: list[str] = []
    kept: list[str] = []
    lines: list[bytes] = []
    for i, (expect, kind, over) in enumerate(POISON):
        g = record("tick", i)
        lines.append(signed(g))
        good.append(g["tick_id"])
        lines.append(line_of(i, kind, over))
        outcome[len(lines)] = expect
        if expect in ("kept", "stored", "quarantined"):
            kept.append(f"old:SPY:{1000 + i}")
    tail = record("trade", 9999)
    lines.append(signed(tail))
    good.append(tail["trade_id"])
    (folder / backup_file_name("old", 1)).write_bytes(b"".join(lines))
    ticks = [tuple(record("tick", 20_000 + k).values())[1:] for k in range(50)]
    trades = [tuple(record("trade", 30_000 + k).values())[1:] for k in range(50)]
    (folder / backup_file_name("old", 2)).write_bytes(encode_batch(ticks=ticks))
    (folder / backup_file_name("old", 3)).write_bytes(encode_batch(trades=trades))
    good += [r[0] for r in ticks] + [r[0] for r in trades]
    return outcome, good, kept


def stored_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        out: set[str] = set()
        for table, col in (
            ("ticks", "tick_id"),
            ("rejects", "tick_id"),
            ("trades", "trade_id"),
            ("trade_rejects", "trade_id"),
        ):
            out |= {r[0] for r in conn.execute(f"SELECT {col} FROM {table}")}
        return out
    finally:
        conn.close()


def quarantined(folder: Path) -> dict[str, str]:
    """Quarantined row id -> its reason, over every quarantine file."""
    out: dict[str, str] = {}
    for f in (
        sorted((folder / QUARANTINE_DIR).glob("*")) if (folder / QUARANTINE_DIR).exists() else []
    ):
        for ln in f.read_bytes().splitlines():
            rec = orjson.loads(ln)
            row = rec["row"]
            out[row.get("tick_id") or row.get("trade_id")] = rec["reason"]
    return out


def test_recover_stores_or_quarantines_every_hostile_checksummed_line_and_goes_on(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "backups"
    outcome, good, _ = hostile_folder(folder)
    db = tmp_path / "db" / "ticks.db"
    db.parent.mkdir()
    report = recover(db, folder)  # nothing raised
    assert [r.status for r in report.results] == ["recovered"] * 3, report.summary()
    assert list_backup_files(folder) == []
    ids = stored_ids(db)
    assert set(good) <= ids  # every good line around the poison, and the later files
    first = report.results[0]
    problems = {p.line: p for p in first.problems}
    q = quarantined(folder)
    for line, expect in outcome.items():
        i = (line - 2) // 2
        rid = f"old:SPY:{1000 + i}"
        where = "corrupt" if line in problems else "quarantined" if rid in q else "stored"
        if where == "stored":
            assert rid in ids, (line, POISON[i])
        if expect == "kept":
            assert where in ("stored", "quarantined"), (line, where, POISON[i][:2])
        else:
            assert where == expect, (line, where, POISON[i])
    for rid, reason in q.items():
        assert reason, rid
    assert any("64-bit" in r for r in q.values()), q
    for p in first.problems:
        assert p.kind == "corrupt" and p.detail and len(p.detail) <= 400, p
    # every line is accounted for: a row (stored, present or quarantined) or a problem
    for r in report.results:
        rows = r.ticks + r.rejects + r.trades + r.trade_rejects
        assert rows == r.inserted + r.already_present + r.quarantined, r
        assert r.lines == rows + r.corrupt + r.torn, r
    assert first.quarantined == len(q) and first.corrupt == len(problems)


def test_the_automatic_replay_goes_past_hostile_lines_while_collecting(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    cfg = make_config(symbols=["SPY", "QQQ"])
    folder = Path(cfg.realtime_data.backup.backup_path)
    _, good, kept = hostile_folder(folder)
    c = Collector(cfg).start()
    try:
        wait_until(
            lambda: not list_backup_files(folder),
            timeout=20.0,
            what="the backlog replayed",
            detail=lambda: c.status().storage,
        )
        n = c.status().symbols["QQQ"].stored
        wait_until(
            lambda: c.status().symbols["QQQ"].stored > n + 10,
            timeout=10.0,
            what="collection going on after the replay",
        )
        status = c.status()
        assert status.running
        assert all(u.state == "running" and u.restarts == 0 for u in status.units.values()), (
            status.units
        )
        assert status.storage is not None and status.storage.mode == "database"
    finally:
        summary = c.stop()
    ids = stored_ids(c.db_path)
    assert set(good) <= ids
    q = quarantined(folder)
    assert all(rid in ids or rid in q for rid in kept), [
        rid for rid in kept if rid not in ids and rid not in q
    ]
    assert summary.storage is not None and summary.storage.lost_rows == 0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=st.lists(LINES, min_size=1, max_size=10))
def test_recover_never_raises_and_later_files_go_on(
    tmp_path_factory: Any, lines: list[bytes]
) -> None:
    base = tmp_path_factory.mktemp("rec")
    folder = base / "backups"
    folder.mkdir()
    body = b"".join(ln if ln.endswith(b"\n") else ln + b"\n" for ln in lines)
    (folder / backup_file_name("old", 1)).write_bytes(body)
    after = [tuple(record("tick", 50_000 + k, run="later").values())[1:] for k in range(5)]
    (folder / backup_file_name("old", 2)).write_bytes(encode_batch(ticks=after))
    report = recover(base / "ticks.db", folder)
    assert [r.status for r in report.results] == ["recovered", "recovered"], report.summary()
    assert {r[0] for r in after} <= stored_ids(base / "ticks.db")
    for r in report.results:
        rows = r.ticks + r.rejects + r.trades + r.trade_rejects
        assert rows == r.inserted + r.already_present + r.quarantined, r
        assert r.lines == rows + r.corrupt + r.torn, r
