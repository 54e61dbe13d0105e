"""Unit tests of the streaming pieces: silence detector and backoff (injected clocks),
the presets' parsers, the websocket config, and gap attribution in ``analysis.gaps``."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from robust_collector import analysis as A
from robust_collector.config import SessionConfig, config_from_dict
from robust_collector.errors import ConfigError
from robust_collector.health import MarketSession
from robust_collector.resilience.clock import ManualClock
from robust_collector.sources.stream import ReconnectBackoff, SilenceDetector
from robust_collector.sources.websocket_presets import AlpacaStream, PolygonStream
from robust_collector.storage.schema import INSERT_GAP, INSERT_TICKS, open_database

# -- silence detector ------------------------------------------------------------------


def detector(clock: ManualClock, **kw: object) -> SilenceDetector:
    args = {"factor": 3.0, "floor": 0.5, "ceiling": 60.0, "window": 50, "min_samples": 5}
    args.update(kw)
    return SilenceDetector(["SPY", "IWM"], clock=clock, **args)  # type: ignore[arg-type]


def feed(d: SilenceDetector, clock: ManualClock, sym: str, gap: float, n: int) -> None:
    for _ in range(n):
        clock.advance(gap)
        d.arrived(sym)


def test_threshold_is_learned_per_symbol_and_clamped() -> None:
    clock = ManualClock(1000.0)
    d = detector(clock)
    assert d.threshold("SPY") == 60.0  # nothing learned yet: the ceiling
    feed(d, clock, "SPY", 0.01, 20)  # busy: 3 x 0.01 is below the floor
    assert d.threshold("SPY") == 0.5
    feed(d, clock, "IWM", 4.0, 20)  # quiet: 3 x 4 s
    assert d.threshold("IWM") == pytest.approx(12.0, abs=0.7)  # its first gap: 4.2 s
    feed(d, clock, "IWM", 100.0, 20)
    assert d.threshold("IWM") == 60.0  # the ceiling caps it


def test_a_quiet_symbol_is_not_called_silent_but_a_stopped_one_is() -> None:
    clock = ManualClock(1000.0)
    d = detector(clock)
    for _ in range(40):  # SPY every 0.1 s, IWM every 4 s
        clock.advance(0.1)
        d.arrived("SPY")
        if round(clock() * 10) % 40 == 0:
            d.arrived("IWM")
    feed(d, clock, "IWM", 4.0, 10)
    d.arrived("SPY")
    clock.advance(3.0)  # IWM's normal pace; SPY stopped 3 s ago (threshold 0.5 s)
    assert d.check() == ["SPY"] and d.silent() == ["SPY"] and not d.all_silent()
    assert d.check() == []  # reported once
    clock.advance(2.0)
    ended = d.arrived("SPY")
    assert ended is not None and ended.end - ended.start == pytest.approx(5.0)
    assert d.silent() == []


def test_silence_outside_the_session_never_counts() -> None:
    session = MarketSession(
        SessionConfig(enabled=True, timezone="UTC", open="14:00", close="15:00", weekdays=(0,))
    )
    clock = ManualClock(1772460000.0)  # Monday 2026-03-02 14:00 UTC
    d = detector(clock, is_open=session.is_open)
    for _ in range(20):
        clock.advance(0.1)
        d.arrived("SPY")
        d.arrived("IWM")
    clock.advance(3600 + 60)  # 15:01, the session closed meanwhile: no verdict
    assert d.check() == []
    clock.advance(7 * 24 * 3600 - 3600)  # 14:01 the next Monday: the clocks restart at the open
    assert d.check() == []
    clock.advance(1.0)
    assert sorted(d.check()) == ["IWM", "SPY"] and d.all_silent()


def test_close_all_and_restart_after_a_reconnect() -> None:
    clock = ManualClock(0.0)
    d = detector(clock)
    for _ in range(10):
        clock.advance(0.1)
        d.arrived("SPY")
        d.arrived("IWM")
    clock.advance(1.0)
    assert sorted(d.check()) == ["IWM", "SPY"]
    closed = d.close_all()
    assert {s.symbol for s in closed} == {"SPY", "IWM"} and d.silent() == []
    d.restart()
    assert d.check() == []
    assert d.threshold("SPY") == 0.5  # what was learned survives the reconnect


# -- backoff -----------------------------------------------------------------------------


def test_backoff_doubles_with_equal_jitter_and_resets() -> None:
    lo = ReconnectBackoff(1.0, 8.0, rng=lambda: 0.0)
    hi = ReconnectBackoff(1.0, 8.0, rng=lambda: 1.0)
    assert [lo.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [hi.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert lo.attempts == 5
    lo.reset()
    assert lo.next_delay() == 0.5 and lo.next_delay(at_least=7.0) == 7.0


# -- parsers -----------------------------------------------------------------------------


def test_alpaca_parser_keeps_valid_items_of_a_half_valid_frame() -> None:
    frame = json.dumps(
        [
            {"T": "q", "S": "SPY", "bp": 1.5, "ap": 1.6, "bs": 1, "as": 2,
             "t": "2026-03-02T14:30:00.123456789Z"},
            {"T": "q", "S": "QQQ", "bp": "abc", "ap": 1.0, "t": "2026-03-02T14:30:00Z"},
            {"T": "b", "S": "SPY", "o": 1.5},
            {"T": "error", "code": 402, "msg": "auth failed"},
            {"T": "error", "code": 406, "msg": "connection limit exceeded"},
            {"T": "subscription", "quotes": ["SPY", "QQQ"]},
            7,
        ]
    )  # fmt: skip
    p = AlpacaStream().parse(frame)
    assert p.quotes == [("SPY", 1772461800123456, 1.5, 1.6, 1.0, 2.0)]
    assert p.problems == [
        "item 1 (QQQ): bp: expected a number, got 'abc'",
        "item 6: expected a JSON object, got int",
    ]
    assert p.ignored == 1  # a bar: a kind we do not collect
    assert p.trades == []
    kinds = [(c.kind, c.code, c.permanent) for c in p.controls]
    assert kinds == [("error", 402, True), ("error", 406, False), ("subscribed", "full", False)]
    assert p.controls[2].symbols == ("SPY", "QQQ")
    assert AlpacaStream().parse("{not json").problems[0].startswith("frame is not JSON")


def test_polygon_parser_reads_quotes_statuses_and_subscriptions() -> None:
    frame = json.dumps(
        [
            {"ev": "Q", "sym": "SPY", "bp": 1.5, "ap": 1.6, "bs": 1, "as": 2, "t": 1772461800123},
            {"ev": "Q", "sym": "SPY", "bp": 1.5, "ap": 1.6, "t": "soon"},
            {"ev": "status", "status": "auth_failed", "message": "authentication failed"},
            {"ev": "status", "status": "max_connections", "message": "too many"},
            {"ev": "status", "status": "success", "message": "subscribed to: Q.SPY"},
        ]
    )
    p = PolygonStream().parse(frame)
    assert p.quotes == [("SPY", 1772461800123000, 1.5, 1.6, 1.0, 2.0)]
    assert p.problems == ["item 1 (SPY): t: expected a unix time in ms, got 'soon'"]
    errs = [(c.code, c.permanent) for c in p.controls if c.kind == "error"]
    assert errs == [("auth_failed", True), ("max_connections", False)]
    assert [c.symbols for c in p.controls if c.kind == "subscribed"] == [("SPY",)]
    assert PolygonStream().subscribe_message(["SPY", "QQQ"]) == (
        '{"action":"subscribe","params":"Q.SPY,Q.QQQ"}'
    )


# -- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({}, "source.preset: required key is missing; one of 'alpaca', 'polygon'"),
        ({"preset": "finnhub"}, "source.preset: expected one of 'alpaca', 'polygon'"),
        ({"preset": "alpaca", "base_url": "https://x"}, "source.base_url: expected a ws://"),
        ({"preset": "alpaca", "ping_timeout_seconds": 0}, "source.ping_timeout_seconds"),
        ({"preset": "alpaca", "pingtimeout": 1}, "source.pingtimeout: unknown key"),
        (
            {"preset": "alpaca", "silence_floor_seconds": 9, "silence_ceiling_seconds": 3},
            "source.silence_floor_seconds: 9 is above silence_ceiling_seconds (3)",
        ),
        (
            {"preset": "alpaca", "refresh_base_url": "http://x"},
            "source.refresh_base_url: set refresh_preset too",
        ),
    ],
)
def test_bad_websocket_config_gives_one_line_errors(over: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        config_from_dict({"source": {"type": "websocket", **over}})
    assert "\n" not in str(err.value)


def test_missing_key_variable_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from robust_collector.sources import WebSocketSource

    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    cfg = config_from_dict({"source": {"type": "websocket", "preset": "polygon"}}).source
    with pytest.raises(ConfigError, match="environment variable POLYGON_API_KEY is not set"):
        WebSocketSource(cfg)
    src = WebSocketSource(cfg, environ={"POLYGON_API_KEY": "k-123456"})
    assert src.url == "wss://socket.polygon.io/stocks"


def test_example_stream_config_loads() -> None:
    from robust_collector.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "alpaca_stream.yaml")
    assert cfg.source.type == "websocket" and cfg.source.preset == "alpaca"


# -- gap attribution ---------------------------------------------------------------------


def test_gaps_attributes_holes_to_stream_down_and_symbol_silent(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    conn = open_database(db)
    t0 = 1772461800_000000
    s = 1_000_000

    def tick(sym: str, i: int) -> tuple:
        return (f"r:{sym}:{i}", sym, i, t0 + i * s, t0 + i * s, 1.0, 1.1, 1, 1, None, "x", "r")

    rows = [tick(sym, i) for sym in ("SPY", "IWM") for i in range(0, 60) if not 10 < i < 30]
    rows += [tick("IWM", i) for i in range(11, 20)]  # IWM also quiet 20..30 by itself
    conn.executemany(INSERT_TICKS, rows)
    conn.execute(
        "INSERT INTO runs (run_id, started_us, stopped_us, status, symbols, config)"
        " VALUES ('r', ?, ?, 'stopped', '[]', '{}')",
        (t0 - s, t0 + 100 * s),
    )
    conn.executemany(
        INSERT_GAP,
        [
            ("r", "SPY", t0 + 10 * s, t0 + 30 * s, "stream_down", "stream down (ping timeout)"),
            ("r", "IWM", t0 + 19 * s, t0 + 30 * s, "symbol_silent", "no quote for 11.0s"),
        ],
    )
    conn.close()
    g = A.gaps(db, expected_interval=1.0, session=SessionConfig(enabled=False))
    got = {(r["symbol"], r["cause"]) for r in g.to_dicts()}
    assert got == {("SPY", "stream_down"), ("IWM", "symbol_silent")}
    spy = g.filter(g["symbol"] == "SPY").to_dicts()[0]
    assert spy["stream_down_s"] == pytest.approx(20.0) and "ping timeout" in spy["detail"]


def test_gaps_reads_a_database_without_a_gaps_table(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = open_database(db)
    conn.execute("DROP TABLE gaps")
    conn.close()
    assert A.gaps(db, expected_interval=1.0).height == 0
    with sqlite3.connect(db) as c2:
        assert c2.execute("SELECT count(*) FROM ticks").fetchone() == (0,)
