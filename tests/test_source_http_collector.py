"""The HTTP source through a real Collector against a real local server.

The collector never crashes; a bad symbol's breaker opens while the others keep
their rate; bad values land in the rejects table with their rule; a 429 pauses
every symbol; and the API key appears nowhere: not in logs, the errors table,
health output (in process and from the CLI), the database file or exceptions.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from helpers.http_server import (
    ENV,
    KEY,
    Provider,
    QuoteServer,
    Reply,
    assert_clean,
    make_source,
    one,
    quote_body,
    set_path,
    source_config,
)

from robust_collector import Collector
from robust_collector.sources import AuthenticationError

pytestmark = pytest.mark.integration


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def serve():
    servers: list[QuoteServer] = []

    def start(preset: str) -> tuple[Provider, QuoteServer, list[float]]:
        prov = Provider(preset)
        times: list[float] = []

        def app(req: Any) -> Reply:
            times.append(time.monotonic())
            return prov(req)

        srv = QuoteServer(app).__enter__()
        servers.append(srv)
        return prov, srv, times

    yield start
    for s in servers:
        s.__exit__()


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_unknown_symbol_opens_its_breaker_and_the_others_keep_their_rate(make_config, serve, env):
    prov, srv, _ = serve("polygon")
    prov.faults["BAD"] = lambda n: Reply(404, {"status": "NOT_FOUND", "message": "Data not found."})

    def flaky(n: int) -> Reply | None:
        if n % 4 == 0:
            return Reply(500, {"error": "internal"})
        if n % 9 == 0:
            return Reply(delay=0.3)  # beyond the 0.1 s timeout
        return None

    prov.faults["SPY"] = flaky
    cfg = make_config(
        symbols=["SPY", "QQQ", "IWM", "BAD"],
        source=source_config("polygon", srv.url, timeout_seconds=0.1),
        realtime_data={"circuit_breaker": {"failure_threshold": 3, "timeout_seconds": 60}},
    )
    c = Collector(cfg).start()
    try:
        st = c.wait_for(
            lambda s: (
                s.symbols["BAD"].breaker_state == "OPEN"
                and s.symbols["SPY"].stored >= 40
                and s.symbols["QQQ"].stored >= 40
                and s.symbols["IWM"].stored >= 40
            ),
            timeout=30,
        )
        assert c.running
    finally:
        c.stop()
    bad, spy, qqq, iwm = (st.symbols[s] for s in ("BAD", "SPY", "QQQ", "IWM"))
    assert bad.retries == 0 and bad.errors >= 3  # permanent: never retried
    assert srv.count("BAD") == 3  # then the open breaker stops the calls
    assert spy.retry_successes >= 5 and spy.errors == 0  # 500s and timeouts were retried
    # the healthy symbols keep their rate, whatever SPY and BAD go through
    assert abs(qqq.fetches - iwm.fetches) <= max(5, 0.2 * qqq.fetches)
    assert qqq.fetches >= 0.5 * st.uptime_seconds / cfg.realtime_data.collect_interval_seconds
    assert spy.rejects == qqq.rejects == iwm.rejects == 0
    errors = rows(c.db_path, "SELECT symbol, error_type, message FROM errors")
    bad_rows = [e for e in errors if e[0] == "BAD"]
    assert {e[1] for e in bad_rows} == {"UnknownSymbolError"}
    assert bad_rows[0][2] == "polygon BAD: unknown symbol (HTTP 404 Not Found): Data not found."
    assert any(e[0] == "SPY" and "server error (HTTP 500" in e[2] for e in errors)
    assert any(e[0] == "SPY" and "timed out after 0.1s" in e[2] for e in errors)
    assert {e[0] for e in errors} == {"SPY", "BAD"}
    ticks = rows(c.db_path, "SELECT symbol, ts_us, recv_us, source FROM ticks")
    assert {t[3] for t in ticks} == {"polygon"}
    assert all(t[1] < t[2] for t in ticks)  # provider time (2025) before our receive time


def test_bad_values_land_in_rejects_with_their_rule_and_shape_errors_in_errors(
    make_config, serve, env
):
    prov, srv, _ = serve("alpaca")

    def weird(n: int) -> Reply | None:
        body = quote_body("alpaca", "WEIRD", bid=100.0, ask=100.02, ts_us=1_767_000_000_000_000 + n)
        kind = n % 6
        if kind == 1:
            set_path(body, "quote.bp", "NaN")  # -> non_finite
        elif kind == 2:
            set_path(body, "quote.ap", 1e300)  # absurd -> price_range
        elif kind == 3:
            set_path(body, "quote.bp", None)  # no bid -> no price -> non_finite
        elif kind == 4:
            set_path(body, "quote.bp", "abc")  # a named shape error
        elif kind == 5:
            set_path(body, "quote.bp", "100.01")  # a numeric string: accepted
        return Reply(200, body)

    prov.faults["WEIRD"] = weird
    same = quote_body("alpaca", "SAME")
    prov.faults["SAME"] = lambda n: Reply(200, same)  # an unchanged quote on every poll
    cfg = make_config(symbols=["WEIRD", "SAME"], source=source_config("alpaca", srv.url))
    with Collector(cfg) as c:
        st = c.wait_for(
            lambda s: s.symbols["WEIRD"].quotes >= 30 and s.symbols["SAME"].duplicates >= 10,
            timeout=30,
        )
    w = st.symbols["WEIRD"]
    assert w.rejects_by_rule.get("non_finite", 0) >= 8
    assert w.rejects_by_rule.get("price_range", 0) >= 4
    assert w.errors >= 4 and c.running is False
    rejects = rows(c.db_path, "SELECT rule, reason, ask FROM rejects WHERE symbol = 'WEIRD'")
    by_rule: dict[str, set[str]] = {}
    for rule, reason, _ in rejects:
        by_rule.setdefault(rule, set()).add(reason)
    assert by_rule["non_finite"] == {
        "bid nan is not finite",  # the NaN (SQLite stores NaN as NULL, the reason keeps it)
        "no price: neither a last price nor a bid/ask pair",  # the null bid
    }
    assert set(by_rule) == {"non_finite", "price_range"}
    assert all(a == 1e300 for r, _, a in rejects if r == "price_range")
    msgs = rows(c.db_path, "SELECT error_type, message FROM errors WHERE symbol = 'WEIRD'")
    assert (
        "MalformedResponseError",
        "alpaca WEIRD: quote.bp: expected a number, got 'abc'",
    ) in msgs
    bids = {b for (b,) in rows(c.db_path, "SELECT bid FROM ticks WHERE symbol = 'WEIRD'")}
    assert bids == {100.0, 100.01}
    assert rows(c.db_path, "SELECT count(*) FROM ticks WHERE symbol = 'SAME'") == [(1,)]
    assert st.symbols["SAME"].rejects == 0


def test_a_429_pauses_every_symbol_then_collection_resumes(make_config, serve, env):
    prov, srv, times = serve("polygon")
    prov.faults["SPY"] = lambda n: (
        Reply(429, {"status": "ERROR"}, {"Retry-After": "0.4"}) if n == 5 else None
    )
    cfg = make_config(symbols=["SPY", "QQQ"], source=source_config("polygon", srv.url))
    with Collector(cfg) as c:
        st = c.wait_for(lambda s: all(x.stored >= 60 for x in s.symbols.values()), timeout=30)
    errors = rows(c.db_path, "SELECT symbol, error_type, message FROM errors")
    assert [(e[0], e[1]) for e in errors] == [("SPY", "RateLimitError")]
    assert "retry after 0.4s" in errors[0][2]
    assert st.symbols["SPY"].retry_successes == 1 and st.symbols["SPY"].errors == 0
    # the server saw (almost) nothing from anyone for the 0.4 s after the 429
    with srv._lock:
        reqs = list(zip(times, srv.requests, strict=True))
    spy_times = [t for t, r in reqs if r.path.endswith("/SPY")]
    t429 = spy_times[4]
    during = [r for t, r in reqs if t429 + 0.05 < t < t429 + 0.35]
    assert during == []


def test_the_api_key_never_leaks(make_config, serve, env, caplog, tmp_path):
    """The key (sent as finnhub's token query parameter, so it is in every URL) is
    in no log line, error row, health output, database byte or exception message."""
    prov, srv, _ = serve("finnhub")
    prov.faults["SLOW"] = lambda n: Reply(delay=0.5)  # httpx timeouts: the URL is in the error
    prov.faults["DENIED"] = lambda n: Reply(401, {"error": f"Invalid API key {KEY}"})
    prov.faults["ECHO"] = lambda n: Reply(500, {"error": f"backend rejected token={quote(KEY)}"})
    prov.faults["GONE"] = lambda n: Reply(404, raw=f"no symbol; your token {KEY}".encode())
    cfg = make_config(
        symbols=["SPY", "SLOW", "DENIED", "ECHO", "GONE"],
        # a 401 pauses every symbol; a probe every 0.1 s lets the others go on between
        source=source_config("finnhub", srv.url, timeout_seconds=0.1, auth_retry_seconds=0.1),
        realtime_data={
            "circuit_breaker": {"failure_threshold": 3, "timeout_seconds": 0.3},
            "health_check": {"check_interval_seconds": 0.2},
        },
    )
    caplog.set_level(logging.DEBUG)
    c = Collector(cfg).start()
    try:
        c.wait_for(
            lambda s: (
                s.symbols["SPY"].stored >= 10
                and all(srv.count(x) >= 3 for x in ("SLOW", "DENIED", "ECHO", "GONE"))
            ),
            timeout=30,
        )
        snap = c.health()  # computed now, with the failures in it
        live = [repr(snap), repr(c.status()), c.errors().write_csv(), repr(c.latest())]
        live += [r for comp in snap.components for r in comp.reasons]
    finally:
        c.stop()

    forms = {KEY, quote(KEY), quote(KEY, safe=""), quote_plus(KEY), "7Hq+Zr9=Lw", "7Hq%2BZr9"}

    def clean(text: str, where: str) -> None:
        for f in forms:
            assert f not in text, f"{f!r} leaked into {where}"

    # logs: httpx's request lines carry the URL with the token: redacted, but still there
    assert "HTTP Request: GET" in caplog.text and "token=***" in caplog.text
    clean(caplog.text, "the log")
    for text in live:
        clean(text, "in-process status/health")
    errors = rows(c.db_path, "SELECT symbol, error_type, message FROM errors")
    types = {e[0]: e[1] for e in errors}
    assert types["DENIED"] == "AuthenticationError" and types["GONE"] == "UnknownSymbolError"
    assert types["SLOW"] == "TransientSourceError" and types["ECHO"] == "TransientSourceError"
    assert any("Invalid API key ***" in e[2] for e in errors)
    clean(repr(errors), "the errors table")
    clean(repr(rows(c.db_path, "SELECT * FROM health_snapshots")), "health snapshots")
    clean(repr(rows(c.db_path, "SELECT * FROM breaker_events")), "breaker events")
    clean(repr(rows(c.db_path, "SELECT * FROM runs")), "the runs table")
    for f in c.db_path.parent.iterdir():  # the database file, its WAL, anything beside it
        for form in forms:
            assert form.encode() not in f.read_bytes(), f"{form!r} in {f.name}"
    for args in (["--json"], ["--mode", "errors", "--json"], []):
        p = subprocess.run(
            [sys.executable, "-m", "robust_collector.cli", "health", "--db", str(c.db_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.stdout.strip(), p.stderr
        clean(p.stdout + p.stderr, f"robust-collector health {' '.join(args)}")
    # and the exception itself, raised to a caller of the source
    err = one(make_source("finnhub", srv.url), "DENIED")
    assert isinstance(err, AuthenticationError)
    assert_clean(err)
    assert "finnhub DENIED: not authorized (HTTP 401 Unauthorized)" in str(err)


def test_http_source_from_a_yaml_file(tmp_path, serve, env):
    _, srv, _ = serve("alpaca")
    (tmp_path / "c.yaml").write_text(
        "symbols: [SPY]\n"
        "source:\n"
        "  type: http\n"
        "  preset: alpaca\n"
        f"  base_url: {srv.url}\n"
        "  api_key_env: RC_TEST_KEY\n"
        "  api_secret_env: RC_TEST_SECRET\n"
        "  feed: iex\n"
        "storage: {database: t.db, flush_interval_seconds: 0.05}\n"
        "realtime_data: {collect_interval_seconds: 0.01}\n"
    )
    with Collector.from_config(tmp_path / "c.yaml", base_dir=tmp_path) as c:
        c.wait_for(lambda s: s.stored >= 5, timeout=30)
    assert srv.requests[0].query == {"feed": "iex"}
    assert c.config.source.type == "http" and c.source.name == "alpaca"
    stored = rows(tmp_path / "t.db", "SELECT config FROM runs")[0][0]
    assert "RC_TEST_KEY" in stored and KEY not in stored
