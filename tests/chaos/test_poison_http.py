"""The poison catalogue through each HTTP preset, against a real local server.

Every answer the server gives is accounted for afterwards: it became a stored
tick, a reject, a duplicate, a counted loss, or an error row for that attempt.
Nothing raises out of the pipeline, every stored text is clean, and the
collector is still running and collecting good quotes at the end.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import pytest
from helpers.http_server import (
    ENV,
    T0_US,
    Provider,
    QuoteServer,
    Reply,
    quote_body,
    set_path,
    source_config,
)
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.boundary import clean_text

pytestmark = pytest.mark.integration

VALUES: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1.0,
    0,
    None,
    "abc",
    "1e999",
    True,
    [],
    {},
    2**63,
    2**64,
    10**400,
    "\ud83d",
    "\x00",
]
FIELDS = {
    "alpaca": ["quote.ap", "quote.bp", "quote.as", "quote.bs"],
    "polygon": ["results.P", "results.p", "results.S", "results.s"],
    "finnhub": ["c"],
}
TIME_FIELD = {"alpaca": "quote.t", "polygon": "results.t", "finnhub": "t"}
TIMES: list[Any] = [10**13, 10**19, 10**30, -5, 0, "2025-13-45T99:99:99Z", 1.5e300, None, "now"]
DEEP = b"[" * 10_000 + b"]" * 10_000
RAW = [
    b"NaN",
    DEEP,
    b"",
    b"null",
    b"\xff\xfe\x00",
    b'{"a":' * 3000,
    b"[]",
    b'"just a string"',
    b" " * 3_000_000,
    b'{"results": ' + DEEP + b"}",
]
ERRORS = [
    Reply(500, {"error": "quota exceeded for \ud83d"}),
    Reply(500, raw=b"\x1b]0;pwned\x07 \x1b[2J nul \x00 here"),
    Reply(502, raw=b"\xed\xa0\xbd broken utf-8 surrogate bytes"),
    Reply(503, raw=b"e" * 2_000_000),
]


def catalogue(preset: str, symbol: str) -> list[Reply]:
    out: list[Reply] = []
    for path in FIELDS[preset]:
        for v in VALUES:
            out.append(Reply(200, set_path(quote_body(preset, symbol, ts_us=T0_US), path, v)))
    for t in TIMES:
        out.append(
            Reply(200, set_path(quote_body(preset, symbol, ts_us=T0_US), TIME_FIELD[preset], t))
        )
    out += [Reply(200, raw=r) for r in RAW]
    out += ERRORS
    return out


@pytest.mark.parametrize("preset", ["alpaca", "polygon", "finnhub"])
def test_every_poison_answer_is_accounted_for(make_config, monkeypatch, preset: str) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    prov = Provider(preset)
    served: dict[str, int] = {}
    cases = {s: catalogue(preset, s) for s in ("SPY", "QQQ")}

    def poison(symbol: str):
        def fault(n: int) -> Reply | None:
            served[symbol] = n
            items = cases[symbol]
            if n <= 2 * len(items):
                return items[(n - 1) % len(items)] if n % 2 else None  # poison, good, poison...
            return None

        return fault

    for s in cases:
        prov.faults[s] = poison(s)
    with QuoteServer(prov) as srv:
        cfg = make_config(
            symbols=["SPY", "QQQ"],
            source=source_config(preset, srv.url, timeout_seconds=2.0),
            realtime_data={
                "collect_interval_seconds": 0.002,
                "retry": {"max_retries": 0},
                "circuit_breaker": {"failure_threshold": 100_000},
                "validation": {"future_tolerance_seconds": 1e9},
            },
        )
        c = Collector(cfg).start()
        try:
            target = {s: 2 * len(cases[s]) + 20 for s in cases}
            wait_until(
                lambda: all(served.get(s, 0) >= target[s] for s in cases),
                timeout=90,
                what="the whole catalogue served",
            )
            st = c.status()
            assert st.running
            assert all(u.state != "restarting" and u.restarts == 0 for u in st.units.values()), (
                st.units
            )
        finally:
            summary = c.stop()
    conn = sqlite3.connect(c.db_path)
    for sym in cases:
        n_served = served[sym]
        ticks = conn.execute("SELECT count(*) FROM ticks WHERE symbol = ?", (sym,)).fetchone()[0]
        rejects = conn.execute("SELECT count(*) FROM rejects WHERE symbol = ?", (sym,)).fetchone()[
            0
        ]
        errors = conn.execute(
            "SELECT count(*) FROM errors WHERE component = 'source' AND symbol = ?", (sym,)
        ).fetchone()[0]
        s = summary.symbols[sym]
        # the last request may have been in flight at stop: served, never answered
        accounted = ticks + rejects + s.duplicates + s.lost + errors
        assert n_served - 1 <= accounted <= n_served, (
            sym,
            n_served,
            ticks,
            rejects,
            s.duplicates,
            errors,
        )
        assert s.lost == 0 and ticks > 0
    for (m,) in conn.execute("SELECT message FROM errors"):
        assert clean_text(m, len(m) + 1) == m and len(m) <= 2000, m[:200]
    assert summary.storage is not None and summary.storage.lost_rows == 0
