"""Validation in the real collector: bad ticks never reach the ticks table, all are kept."""

from __future__ import annotations

import math
import sqlite3

import pytest

from robust_collector import Collector

pytestmark = pytest.mark.integration

EXPECTED_RULES = {
    "nan": {"non_finite"},
    "zero": {"non_positive"},
    "crossed": {"crossed"},
    "spike": {"price_range", "price_change"},
}


def test_bad_ticks_go_to_rejects_with_their_rule_and_everything_reconciles(make_config):
    cfg = make_config(source={"faults": {"bad_tick_rate": 0.1, "duplicate_rate": 0.05}})
    with Collector(cfg) as c:
        c.wait_for(
            lambda s: all(x.rejects >= 15 and x.duplicates >= 5 for x in s.symbols.values()),
            timeout=60,
        )
    conn = sqlite3.connect(c.db_path)
    status = c.status()
    for sym, emitted in c.source.emitted.items():
        stored = {r[0] for r in conn.execute("SELECT seq FROM ticks WHERE symbol = ?", (sym,))}
        rejected = dict(
            conn.execute("SELECT seq, rule FROM rejects WHERE symbol = ?", (sym,)).fetchall()
        )
        dups = status.symbols[sym].duplicates
        # every emitted quote is stored, rejected or a dropped duplicate: nothing else
        assert len(stored) + len(rejected) + dups == emitted
        assert not stored & set(rejected)
        for seq, kind in c.source.bad_ticks(sym).items():
            assert rejected.get(seq) in EXPECTED_RULES[kind], (sym, seq, kind, rejected.get(seq))
        assert status.symbols[sym].rejects == len(rejected)
    # nothing in the ticks table breaks a stateless rule
    for bid, ask in conn.execute("SELECT bid, ask FROM ticks"):
        assert math.isfinite(bid) and math.isfinite(ask)
        assert 1.0 <= bid <= ask <= 10_000.0
    row = conn.execute(
        "SELECT rule, reason, rejected_us, bid, ask, tick_id FROM rejects LIMIT 1"
    ).fetchone()
    assert row[0] and row[1] and row[2] > 0 and row[5]
    by_rule = status.symbols["SPY"].rejects_by_rule
    assert sum(by_rule.values()) == status.symbols["SPY"].rejects


def test_validation_disabled_stores_everything(make_config):
    cfg = make_config(
        symbols=["SPY"],
        source={"faults": {"bad_tick_rate": 0.2}},
        realtime_data={"validation": {"enabled": False}},
    )
    with Collector(cfg) as c:
        c.wait_for(lambda s: s.stored >= 50, timeout=30)
    conn = sqlite3.connect(c.db_path)
    assert conn.execute("SELECT count(*) FROM rejects").fetchone()[0] == 0
    bad = set(c.source.bad_ticks("SPY"))
    stored = {r[0] for r in conn.execute("SELECT seq FROM ticks")}
    assert bad and bad <= stored
