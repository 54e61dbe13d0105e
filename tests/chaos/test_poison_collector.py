"""The poison catalogue through the running collector: every value reconciles, nothing dies.

A source emits quotes with hostile values in every field, and errors whose texts
carry lone surrogates, NUL, terminal escapes and megabytes. Afterwards every
emitted quote is stored, rejected, a duplicate or counted lost; the writer, the
loop and the heartbeat are alive; and every stored text is clean.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.boundary import INT64_MAX, clean_text
from robust_collector.errors import TransientSourceError
from robust_collector.model import Quote, make_tick_id, now_us

pytestmark = pytest.mark.integration

NUMBERS: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    0.0,
    -1.0,
    None,
    5e-324,
    2**63,
    2**64,
]
ERROR_TEXTS = [
    "quota exceeded for \ud83d",
    "nul\x00inside",
    "escape \x1b]0;pwned\x07 and \x1b[2J clear",
    "x" * 10_000_000,  # a 10 MB error body
    "\udc80\udcff bytes smuggled as surrogates",
]


def timestamps(now: int) -> list[int]:
    return [
        now,
        now // 1_000_000,  # seconds read as us
        now // 1_000,  # ms read as us
        INT64_MAX,  # ns read as us, clamped by a parser
        -1,
        0,
    ]


class PoisonFeed:
    """Cycles through good quotes, hostile quotes and hostile errors, counting each."""

    name = "poison"

    def __init__(self) -> None:
        self.emitted: dict[str, int] = {}
        self.errors = 0
        self.run_id = "r"
        self._n = itertools.count()
        self.cases = self._cases()

    def _cases(self) -> list[Any]:
        now = now_us()
        good = [("good", None)] * 3
        cases: list[Any] = []
        for v in NUMBERS:
            cases += [("bid", v), ("ask", v), ("last", v), ("bid_size", v), ("ask_size", v)]
            cases += good
        for ts in timestamps(now):
            cases += [("ts", ts), *good]
        cases += [("error", t) for t in ERROR_TEXTS]
        cases += [("symbol_text", "SPY\x00\ud83d")]
        return cases

    async def start(self, run_id: str) -> None:
        self.run_id = run_id

    async def fetch(self, symbol: str) -> Quote:
        i = next(self._n)
        kind, value = self.cases[i % len(self.cases)]
        if kind == "error":
            self.errors += 1
            raise TransientSourceError(f"{symbol}: {value}", symbol=symbol)
        seq = self.emitted[symbol] = self.emitted.get(symbol, 0) + 1
        now = now_us()
        p = 100.0 + (i % 5) * 0.01
        fields: dict[str, Any] = {
            "bid": p,
            "ask": p + 0.02,
            "bid_size": 1.0,
            "ask_size": 1.0,
            "last": None,
            "ts": now,
        }
        source = "poison"
        if kind in fields:
            fields[kind] = value
        elif kind == "symbol_text":
            source = value
        return Quote(
            make_tick_id(self.run_id, symbol, seq),
            symbol,
            seq,
            fields["ts"],
            now,
            fields["bid"],
            fields["ask"],
            fields["bid_size"],
            fields["ask_size"],
            fields["last"],
            source,
        )

    async def aclose(self) -> None:
        pass


def test_poison_catalogue_reconciles_and_nothing_dies(make_config) -> None:
    cfg = make_config(
        realtime_data={
            "retry": {"max_retries": 0},
            "circuit_breaker": {"failure_threshold": 1000},
            "health_check": {"check_interval_seconds": 0.2},
        }
    )
    feed = PoisonFeed()
    c = Collector(cfg, source=feed).start()
    rounds = 3 * len(feed.cases)
    try:
        wait_until(
            lambda: sum(feed.emitted.values()) + feed.errors >= rounds,
            timeout=60,
            what="three rounds of the catalogue",
        )
        st = c.status()
        assert st.running and all(u.state != "restarting" for u in st.units.values()), st.units
        assert st.storage is not None and st.storage.mode == "database", st.storage
        hb = c.db_path.with_name(c.db_path.name + ".health.json")
        first = json.loads(hb.read_text())["written_us"]
        wait_until(
            lambda: json.loads(hb.read_text())["written_us"] > first,
            timeout=3,
            what="the heartbeat to advance",
        )
    finally:
        summary = c.stop()
    conn = sqlite3.connect(c.db_path)
    ticks = dict(conn.execute("SELECT symbol, count(*) FROM ticks GROUP BY symbol").fetchall())
    rejects = dict(conn.execute("SELECT symbol, count(*) FROM rejects GROUP BY symbol").fetchall())
    ws = summary.storage
    assert ws is not None and ws.lost_rows == 0 and ws.ticks_to_backup == 0
    for sym, emitted in feed.emitted.items():
        s = summary.symbols[sym]
        accounted = ticks.get(sym, 0) + rejects.get(sym, 0) + s.duplicates + s.lost
        assert accounted == emitted, (sym, emitted, ticks.get(sym), rejects.get(sym), s)
        assert s.lost == 0
    # every hostile timestamp was rejected by the boundary rule, none stored
    rules = {r for (r,) in conn.execute("SELECT DISTINCT rule FROM rejects")}
    assert {"bad_timestamp", "non_finite", "non_positive"} <= rules
    assert (
        conn.execute(
            "SELECT count(*) FROM ticks WHERE ts_us < 0 OR ts_us > 7258118400000000"
        ).fetchone()[0]
        == 0
    )
    # every stored text is clean, short, and the errors were all recorded
    messages = [m for (m,) in conn.execute("SELECT message FROM errors WHERE component='source'")]
    assert len(messages) >= feed.errors
    for m in messages:
        assert clean_text(m, len(m) + 1) == m and len(m) <= 2000
    texts = [
        t for (t,) in conn.execute("SELECT source FROM ticks UNION ALL SELECT source FROM rejects")
    ]
    assert all(clean_text(t, len(t) + 1) == t for t in texts)
    assert any("\\ud83d" in m for m in messages)
