"""The dashboard: view model, HTML renderers, figure data, and the live widget's refresher.

Everything is checked on Python values (widget ``.value`` strings, figure trace
data), without a browser; the browser test is ``test_voila_dashboard.py``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.dashboard import (
    UNKNOWN,
    BreakerEvent,
    DashboardView,
    ErrorView,
    RateHistory,
    StorageView,
    SymbolView,
    breaker_segments,
    live,
    rates_data,
    render_errors,
    render_status,
    render_storage,
    render_symbols,
    timeline_data,
    view_from_collector,
    view_from_database,
    watch,
)
from robust_collector.dashboard.model import DatabaseFeed
from robust_collector.dashboard.render import fmt_bytes, fmt_clock, fmt_duration
from robust_collector.storage.backup import BackupWriter
from robust_collector.storage.schema import INSERT_REJECTS, INSERT_TICKS, open_database
from robust_collector.storage.writer import INSERT_BREAKER_EVENT, INSERT_ERROR, INSERT_HEALTH

S = 1_000_000
NOW = 1_772_462_400_000_000  # 2026-03-02 14:40:00 UTC
RUN = "20260302T143000Z-cccccccc"


def sym(name: str = "SPY", **over: Any) -> SymbolView:
    base = dict(
        symbol=name,
        breaker_state="CLOSED",
        in_state_seconds=12.0,
        breaker_reason=None,
        level="HEALTHY",
        last_price=520.12,
        stored=100,
        rejects=1,
        errors=0,
        data_age_seconds=0.4,
    )
    base.update(over)
    return SymbolView(**base)


def view(**over: Any) -> DashboardView:
    base: dict[str, Any] = dict(
        now_us=NOW,
        origin="live",
        run_id=RUN,
        running=True,
        started_us=NOW - 90 * S,
        database="/tmp/x.db",
        level="HEALTHY",
        reasons=(),
        symbols=(sym("SPY"), sym("QQQ", last_price=450.0)),
        storage=StorageView("database", queue_depth=0, queue_capacity=64),
        errors=(),
        stored=200,
        rejects=2,
        error_count=0,
    )
    base.update(over)
    return DashboardView(**base)


# --------------------------------------------------------------------------- rendering


def test_status_shows_level_colour_icon_totals_and_reasons_only_when_not_healthy() -> None:
    html = render_status(view())
    assert 'data-level="HEALTHY"' in html and "✅ HEALTHY" in html and "#2e7d32" in html
    assert '<b class="rc-stored">200</b>' in html and "uptime 1m 30s" in html
    assert "rc-reasons" not in html
    bad = render_status(
        view(level="DEGRADED", reasons=("IWM: breaker OPEN since 14:39:00 (<b>x</b>)",))
    )
    assert "⚠️ DEGRADED" in bad and "#f9a825" in bad
    assert "<li>IWM: breaker OPEN since 14:39:00 (&lt;b&gt;x&lt;/b&gt;)</li>" in bad
    unknown = render_status(
        view(level=UNKNOWN, running=False, note="not running", reasons=("gone",))
    )
    assert (
        "❔ UNKNOWN" in unknown and 'data-running="false"' in unknown and "not running" in unknown
    )


def test_symbol_table_colours_breakers_and_escapes_names() -> None:
    v = view(
        symbols=(
            sym("SPY"),
            sym(
                "IWM",
                breaker_state="OPEN",
                breaker_reason='5 failures "x" <y>',
                level="DEGRADED",
                errors=7,
            ),
            sym("<QQQ>", breaker_state="HALF_OPEN", last_price=None, data_age_seconds=None),
        )
    )
    html = render_symbols(v)
    assert html.count('<tr class="rc-symbol"') == 3
    assert 'data-symbol="IWM" data-breaker="OPEN"' in html
    assert "#c62828" in html and "#f9a825" in html  # OPEN red, HALF_OPEN amber
    assert 'title="5 failures &quot;x&quot; &lt;y&gt;"' in html
    assert "&lt;QQQ&gt;" in html and "<QQQ>" not in html
    assert "520.12" in html and "12s" in html
    assert "no symbols yet" in render_symbols(view(symbols=()))


def test_trade_columns_appear_only_when_trades_are_collected() -> None:
    quotes_only = render_symbols(view(symbols=(sym("SPY"),)))
    assert "Trades" not in quotes_only and "rc-symbol-trades" not in quotes_only
    html = render_symbols(
        view(symbols=(sym("SPY", trades_stored=4321, trade_rejects=17), sym("QQQ")))
    )
    assert "<th" in html and ">Trades</th>" in html and ">Trade rejects</th>" in html
    cells = html.split('class="rc-symbol-trades">')
    assert [c.split("<")[0] for c in cells[1:]] == ["4321", "-"]  # QQQ collects no trades
    assert ">17</td>" in html


def test_storage_panel_shows_mode_queue_backlog_and_trouble() -> None:
    ok = render_storage(view())
    assert 'data-mode="database"' in ok and "DATABASE" in ok and "0 / 64 batches" in ok
    assert "Last error" not in ok
    st = StorageView(
        "backup",
        queue_depth=3,
        queue_capacity=64,
        backup_files=2,
        backup_bytes=2048,
        ticks_to_backup=120,
        held_rows=5,
        lost_rows=1,
        last_error="OperationalError: database is <locked>",
        backup_path="/data/tick_backups",
    )
    html = render_storage(view(storage=st))
    assert "BACKUP" in html and '<span class="rc-backlog">2</span> file(s), 2.0 KB' in html
    assert "120" in html and "Held in memory" in html and "Lost" in html
    assert "database is &lt;locked&gt;" in html


def test_errors_table_is_newest_first_bounded_and_escaped() -> None:
    errors = (
        *tuple(
            ErrorView(NOW - i * S, "source", "IWM", "TransientSourceError", f"failure {i}")
            for i in range(30)
        ),
        ErrorView(NOW - 40 * S, "storage", None, "X", "<script>alert('x')</script>"),
    )
    html = render_errors(view(errors=errors, error_count=31), limit=31)
    assert html.index("failure 0") < html.index("failure 1") < html.index("failure 29")
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    short = render_errors(view(errors=errors, error_count=31), limit=5)
    assert short.count('class="rc-error"') == 5 and "(5, newest first)" in short
    assert "no errors" in render_errors(view())


def test_formatters() -> None:
    assert [fmt_duration(x) for x in (None, 1.25, 42, 184, 7500, 200_000)] == [
        "-",
        "1.2s",
        "42s",
        "3m 04s",
        "2h 05m",
        "2d 07h",
    ]
    assert [fmt_bytes(x) for x in (None, 10, 2048, 5 * 1024**2)] == [
        "-",
        "10 B",
        "2.0 KB",
        "5.0 MB",
    ]
    assert fmt_clock(NOW) == "14:40:00" and fmt_clock(None) == "-"


# --------------------------------------------------------------------------- rates and timeline


def test_rates_are_differences_of_successive_samples() -> None:
    h = RateHistory(window_seconds=60)
    for i, (stored, rejects) in enumerate([(0, 0), (10, 0), (30, 1), (30, 1)]):
        h.add_sample(NOW + i * S, stored, rejects)
    s = h.series()
    assert s.ticks_per_second == (10.0, 20.0, 0.0)
    assert s.rejects_per_second == (0.0, 1.0, 0.0)
    assert s.times_us == (NOW + S, NOW + 2 * S, NOW + 3 * S)
    assert h.series(smooth_seconds=2).ticks_per_second == (10.0, 15.0, 10.0)
    h.add_sample(NOW + 3 * S, 99, 0)  # not newer: ignored
    assert len(h) == 4
    h.add_sample(NOW + 4 * S, 5, 0)  # totals fell (a new run): start again
    assert len(h) == 1 and h.series().ticks_per_second == ()
    for i in range(5, 200):
        h.add_sample(NOW + i * S, i, 0)
    assert len(h) <= 62  # bounded by the window
    d = rates_data(h.series())
    assert len(d["x"]) == len(d["ticks"]) == len(d["rejects"]) and d["x"][0].tzinfo is None


def test_trades_and_trade_rejects_have_their_own_rates() -> None:
    h = RateHistory(window_seconds=60)
    for i, sample in enumerate([(0, 0, 0, 0), (10, 0, 2, 0), (30, 1, 3, 1)]):
        h.add_sample(NOW + i * S, *sample)
    s = h.series()
    assert s.ticks_per_second == (10.0, 20.0) and s.rejects_per_second == (0.0, 1.0)
    assert s.trades_per_second == (2.0, 1.0) and s.trade_rejects_per_second == (0.0, 1.0)
    d = rates_data(s)
    assert d["trades"] == [2.0, 1.0] and d["trade_rejects"] == [0.0, 1.0]
    h.add_sample(NOW + 3 * S, 30, 1, 0, 1)  # trades fell (a new run): start again
    assert len(h) == 1


def test_breaker_segments_follow_events_inside_the_window() -> None:
    events = (
        BreakerEvent(NOW - 400 * S, "IWM", "CLOSED", "OPEN", "old, outside the window"),
        BreakerEvent(NOW - 60 * S, "IWM", "OPEN", "HALF_OPEN", "timeout"),
        BreakerEvent(NOW - 59 * S, "IWM", "HALF_OPEN", "CLOSED", "3 successes"),
        BreakerEvent(NOW - 20 * S, "IWM", "CLOSED", "OPEN", "5 consecutive failures"),
    )
    v = view(
        started_us=NOW - 600 * S,
        symbols=(sym("SPY"), sym("IWM", breaker_state="OPEN", in_state_seconds=20.0)),
        breaker_events=events,
    )
    segs = breaker_segments(v, window_seconds=300)
    iwm = [(s.state, (s.end_us - s.start_us) // S) for s in segs if s.symbol == "IWM"]
    assert iwm == [("OPEN", 240), ("HALF_OPEN", 1), ("CLOSED", 39), ("OPEN", 20)]
    spy = [(s.state, s.start_us, s.end_us) for s in segs if s.symbol == "SPY"]
    assert spy == [("CLOSED", NOW - 300 * S, NOW)]
    data = timeline_data(v, 300)
    assert data["OPEN"]["y"] == ["IWM", "IWM", None, "IWM", "IWM", None]
    x = data["OPEN"]["x"]
    assert (x[1] - x[0]).total_seconds() == 240 and (x[4] - x[3]).total_seconds() == 20
    assert x[0].tzinfo is None and x[2] is None
    assert data["HALF_OPEN"]["text"][0] == "HALF_OPEN for 1.0s: timeout"


def test_a_transition_nobody_heard_is_taken_from_the_snapshot() -> None:
    v = view(
        symbols=(sym("IWM", breaker_state="OPEN", in_state_seconds=5.0),), started_us=NOW - 30 * S
    )
    segs = breaker_segments(v, 300)
    assert [(s.state, (s.end_us - s.start_us) // S) for s in segs] == [("CLOSED", 25), ("OPEN", 5)]


# --------------------------------------------------------------------------- from a database


class StoredRun:
    """A database as a collector in another process would leave it."""

    def __init__(
        self,
        path: Path,
        backups: Path,
        *,
        run_id: str = RUN,
        started: int = NOW - 60 * S,
        status: str = "running",
    ) -> None:
        self.path, self.run_id = path, run_id
        self.conn = open_database(path)
        config = {
            "realtime_data": {
                "collect_interval_seconds": 1.0,
                "health_check": {"check_interval_seconds": 5.0},
                "backup": {"enabled": True, "backup_path": str(backups)},
            }
        }
        self.conn.execute(
            "INSERT INTO runs (run_id, started_us, status, symbols, config) VALUES (?,?,?,?,?)",
            (run_id, started, status, '["SPY", "IWM"]', orjson.dumps(config).decode()),
        )

    def tick(self, symbol: str, t: int, price: float = 100.0) -> None:
        self.conn.execute(
            INSERT_TICKS,
            (
                f"{self.run_id}:{symbol}:{t}",
                symbol,
                t,
                t,
                t,
                price - 0.01,
                price + 0.01,
                1.0,
                1.0,
                None,
                "sim",
                self.run_id,
            ),
        )

    def reject(self, symbol: str, t: int) -> None:
        self.conn.execute(
            INSERT_REJECTS,
            (
                f"{self.run_id}:{symbol}:r{t}",
                symbol,
                t,
                t,
                t,
                1.0,
                2.0,
                1.0,
                1.0,
                None,
                "sim",
                self.run_id,
                "crossed",
                "bid > ask",
                t,
            ),
        )

    def error(self, t: int, symbol: str | None, message: str, component: str = "source") -> None:
        self.conn.execute(
            INSERT_ERROR, (self.run_id, t, component, symbol, "TransientSourceError", message)
        )

    def event(self, t: int, symbol: str, old: str, new: str, reason: str) -> None:
        self.conn.execute(INSERT_BREAKER_EVENT, (self.run_id, t, symbol, old, new, reason))

    def snapshot(
        self, t: int, level: str, reasons: list[str], storage: dict[str, Any] | None = None
    ) -> None:
        rows = [
            ("system", level, reasons, {"kind": "system"}),
            ("SPY", "HEALTHY", [], {"kind": "symbol", "breaker_state": "CLOSED"}),
            ("IWM", level, reasons, {"kind": "symbol", "breaker_state": "CLOSED"}),
            (
                "storage",
                "HEALTHY",
                [],
                {"kind": "storage", **(storage or {"storage_mode": "database", "queue_depth": 0})},
            ),
        ]
        for comp, lvl, rs, m in rows:
            self.conn.execute(
                INSERT_HEALTH,
                (self.run_id, t, comp, lvl, orjson.dumps(rs).decode(), orjson.dumps(m).decode()),
            )


@pytest.fixture
def stored(tmp_path: Path) -> StoredRun:
    return StoredRun(tmp_path / "w.db", tmp_path / "backups")


def test_database_view_reads_counts_states_errors_and_storage(
    stored: StoredRun, tmp_path: Path
) -> None:
    for i in range(10):
        stored.tick("SPY", NOW - (20 - i) * S, 520.0)
    for i in range(4):
        stored.tick("IWM", NOW - (20 - i) * S, 210.0)
    stored.reject("IWM", NOW - 15 * S)
    for i in range(3):
        stored.error(NOW - (14 - i) * S, "IWM", f"refused <{i}>")
    stored.event(NOW - 12 * S, "IWM", "CLOSED", "OPEN", "5 consecutive failures")
    stored.snapshot(
        NOW - 2 * S,
        "DEGRADED",
        ["IWM: breaker OPEN"],
        {"storage_mode": "backup", "queue_depth": 2, "ticks_to_backup": 7},
    )
    with BackupWriter(tmp_path / "backups", RUN) as w:
        w.write_batch([(f"{RUN}:SPY:b", "SPY", 1, NOW, NOW, 1.0, 1.1, 1.0, 1.0, None, "sim", RUN)])

    v = view_from_database(stored.path, now_us=NOW)
    assert v.origin == "database" and v.run_id == RUN and v.running
    assert (v.stored, v.rejects, v.error_count) == (14, 1, 3)
    assert v.level == "DEGRADED" and v.reasons == ("IWM: breaker OPEN",)
    iwm = v.symbol("IWM")
    assert (iwm.breaker_state, iwm.in_state_seconds, iwm.stored, iwm.rejects, iwm.errors) == (
        "OPEN",
        12.0,
        4,
        1,
        3,
    )
    assert iwm.last_price == pytest.approx(210.0) and iwm.data_age_seconds == 17.0
    assert v.symbol("SPY").breaker_state == "CLOSED" and v.symbol("SPY").in_state_seconds == 60.0
    assert [e.message for e in v.errors] == ["refused <2>", "refused <1>", "refused <0>"]
    assert (
        v.storage.mode,
        v.storage.queue_depth,
        v.storage.ticks_to_backup,
        v.storage.backup_files,
    ) == ("backup", 2, 7, 1)
    assert v.breaker_events[0].new_state == "OPEN"
    assert "refused &lt;2&gt;" in render_errors(v)


def test_database_feed_counts_incrementally_and_follows_a_new_run(
    stored: StoredRun, tmp_path: Path
) -> None:
    feed = DatabaseFeed(stored.path)
    stored.tick("SPY", NOW - 5 * S)
    assert feed.view(NOW).stored == 1
    for i in range(4):
        stored.tick("SPY", NOW - 4 * S + i)
    stored.error(NOW - S, "SPY", "late")
    v = feed.view(NOW)
    assert (v.stored, v.error_count, v.errors[0].message) == (5, 1, "late")
    assert feed.view(NOW).stored == 5  # nothing new: nothing counted twice
    other = StoredRun.__new__(StoredRun)
    other.path, other.run_id, other.conn = stored.path, "20260302T144500Z-dddddddd", stored.conn
    stored.conn.execute(
        "INSERT INTO runs (run_id, started_us, status, symbols, config) VALUES (?,?,?,?,?)",
        (other.run_id, NOW, "running", '["SPY"]', "{}"),
    )
    other.tick("SPY", NOW + S)
    v = feed.view(NOW + 2 * S)
    assert (v.run_id, v.stored, [s.symbol for s in v.symbols]) == (other.run_id, 1, ["SPY"])


def test_a_stopped_or_silent_collector_is_unknown_not_healthy(stored: StoredRun) -> None:
    stored.snapshot(NOW - 2 * S, "HEALTHY", [])
    assert view_from_database(stored.path, now_us=NOW).level == "HEALTHY"
    silent = view_from_database(stored.path, now_us=NOW + 120 * S)
    assert silent.level == UNKNOWN and not silent.running
    assert "not running" in silent.reasons[0] and "last level HEALTHY" in silent.reasons[0]
    stored.conn.execute(
        "UPDATE runs SET status='stopped', stopped_us=? WHERE run_id=?", (NOW - S, RUN)
    )
    v = view_from_database(stored.path, now_us=NOW)
    assert v.level == UNKNOWN and v.note == "not running"


def test_breaker_events_newer_than_the_snapshot_raise_the_level(stored: StoredRun) -> None:
    stored.snapshot(NOW - 4 * S, "HEALTHY", [])
    stored.event(NOW - S, "IWM", "CLOSED", "OPEN", "5 consecutive failures")
    v = view_from_database(stored.path, now_us=NOW)
    assert v.level == "DEGRADED"
    assert (
        "IWM: breaker OPEN" in v.reasons[0] and "newer than the last health check" in v.reasons[0]
    )


def test_database_view_without_a_database_run_or_snapshot(
    tmp_path: Path, stored: StoredRun
) -> None:
    none = view_from_database(tmp_path / "none.db", now_us=NOW)
    assert none.level == UNKNOWN and "no database" in none.reasons[0]
    empty_path = tmp_path / "empty.db"
    open_database(empty_path).close()
    assert "no collector run" in view_from_database(empty_path, now_us=NOW).reasons[0]
    stored.conn.execute("UPDATE runs SET started_us = ?", (NOW - 3 * S,))  # just started
    fresh = view_from_database(stored.path, now_us=NOW)
    assert fresh.level == UNKNOWN and fresh.running and "no health snapshot yet" in fresh.reasons[0]


# --------------------------------------------------------------------------- a real collector


def fast_collector(make_config: Callable[..., Any], **faults: Any) -> Collector:
    cfg = make_config(
        source={"faults": faults},
        realtime_data={
            "health_check": {"check_interval_seconds": 0.1},
            "circuit_breaker": {"timeout_seconds": 0.3},
        },
    )
    return Collector(cfg)


@pytest.mark.integration
def test_view_from_a_live_collector(make_config: Callable[..., Any]) -> None:
    c = fast_collector(make_config).start()
    try:
        c.wait_for(lambda s: s.stored > 30, timeout=30)
        c.source.fail("IWM")
        c.wait_for(lambda s: s.symbols["IWM"].breaker_state == "OPEN", timeout=30)
        v = view_from_collector(c, max_errors=5)
    finally:
        c.stop()
    assert v.origin == "live" and v.running and v.run_id == c.run_id
    assert v.level == "DEGRADED" and any("IWM: breaker OPEN" in r for r in v.reasons)
    iwm = v.symbol("IWM")
    assert iwm.breaker_state == "OPEN" and iwm.errors >= 1 and iwm.level == "DEGRADED"
    assert v.symbol("SPY").stored > 0 and v.symbol("SPY").data_age_seconds < 5
    assert 0 < len(v.errors) <= 5
    assert [e.ts_us for e in v.errors] == sorted((e.ts_us for e in v.errors), reverse=True)
    assert v.errors[0].symbol == "IWM" and "connection refused" in v.errors[0].message
    assert v.storage.mode == "database"
    after = view_from_collector(c)
    assert not after.running and after.note == "stopped"


def stored_count(html: str) -> int:
    return int(html.split('class="rc-stored">')[1].split("<")[0])


@pytest.mark.integration
def test_live_widget_refreshes_while_the_collector_runs_and_stops_with_it(
    make_config: Callable[..., Any],
) -> None:
    c = fast_collector(make_config).start()
    try:
        dash = live(c, interval=0.1, window_seconds=60)
        assert dash.refreshing and dash.view is not None
        first = stored_count(dash.status_html.value)
        wait_until(
            lambda: stored_count(dash.status_html.value) > first + 20,
            what="the stored count to rise",
        )
        assert 'data-symbol="IWM" data-breaker="CLOSED"' in dash.symbols_html.value
        c.source.fail("IWM")
        wait_until(
            lambda: 'data-symbol="IWM" data-breaker="OPEN"' in dash.symbols_html.value,
            what="IWM OPEN",
        )
        wait_until(lambda: "DEGRADED" in dash.status_html.value, what="DEGRADED")
        wait_until(lambda: "connection refused" in dash.errors_html.value, what="the error row")
        wait_until(
            lambda: "IWM" in list(dash.timeline_fig.data[2].y), what="an OPEN stretch for IWM"
        )
        wait_until(
            lambda: len(dash.rates_fig.data[0].y) >= 3 and max(dash.rates_fig.data[0].y) > 0,
            what="rates",
        )
        assert "BACKUP" not in dash.storage_html.value and "DATABASE" in dash.storage_html.value
        n = dash.refreshes
        wait_until(lambda: dash.refreshes > n + 3, what="more refreshes")
    finally:
        c.stop()
    wait_until(
        lambda: not dash.refreshing, timeout=5, what="the refresher to stop with the collector"
    )
    final = dash.refreshes
    assert "stopped" in dash.status_html.value and "refresher stopped" in dash.footer_html.value
    assert stored_count(dash.status_html.value) == c.status().stored  # the final state is drawn
    assert dash.refreshes == final  # the refresher thread has ended: nothing redraws
    dash.close()


@pytest.mark.integration
def test_closing_the_widget_stops_the_refresher_and_the_listener(
    make_config: Callable[..., Any],
) -> None:
    c = fast_collector(make_config).start()
    try:
        dash = live(c, interval=0.05)
        wait_until(lambda: dash.refreshes > 3, what="refreshes")
        c.source.fail("SPY")
        wait_until(lambda: dash.feed.log.events(), what="the listener to hear SPY open")
        dash.close()
        assert not dash.refreshing
        heard, n = len(dash.feed.log.events()), dash.refreshes
        c.source.fail("QQQ")
        c.wait_for(lambda s: s.symbols["QQQ"].breaker_state == "OPEN", timeout=30)
        assert dash.refreshes == n and c.running
        assert len(dash.feed.log.events()) == heard  # no longer listening
        dash.close()  # twice is fine
    finally:
        c.stop()
    assert "rc-dashboard" not in [t.name for t in threading.enumerate()]


@pytest.mark.integration
def test_watch_reads_another_collectors_database(make_config: Callable[..., Any]) -> None:
    c = fast_collector(make_config).start()
    try:
        c.wait_for(lambda s: s.stored > 0, timeout=30)
        dash = watch(c.db_path, interval=0.1)
        wait_until(lambda: stored_count(dash.status_html.value) > 20, what="ticks in the database")
        assert (
            dash.view is not None
            and dash.view.origin == "database"
            and dash.view.run_id == c.run_id
        )
        c.source.fail("IWM")
        wait_until(
            lambda: 'data-symbol="IWM" data-breaker="OPEN"' in dash.symbols_html.value,
            what="IWM OPEN",
        )
    finally:
        c.stop()
    wait_until(lambda: "not running" in dash.status_html.value, timeout=20, what="not running")
    assert dash.refreshing  # a watcher keeps watching (a new run may start)
    dash.close()
    assert not dash.refreshing


def trace(fig: Any, name: str) -> Any:
    return next(t for t in fig.data if t.name == name)


@pytest.mark.integration
def test_trades_are_drawn_apart_from_quotes_live_and_from_the_database(
    make_config: Callable[..., Any],
) -> None:
    """A symbol that collects trades: the rates chart draws a trades/s line (hidden when no
    symbol collects trades) and the symbol table counts its trades, in both views."""
    cfg = make_config(
        source={"data": ["quotes"], "data_by_symbol": {"SPY": ["quotes", "trades"]}},
        realtime_data={"health_check": {"check_interval_seconds": 0.1}},
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.trades_stored > 0, timeout=30)
        live_dash = live(c, interval=0.1, window_seconds=60)
        db_dash = watch(c.db_path, interval=0.1)
        for dash in (live_dash, db_dash):
            wait_until(
                lambda dash=dash: (
                    trace(dash.rates_fig, "trades/s").visible is True
                    and len(trace(dash.rates_fig, "trades/s").y) >= 3
                    and max(trace(dash.rates_fig, "trades/s").y) > 0
                ),
                what="a trades/s line with points",
            )
            assert trace(dash.rates_fig, "trade rejects/s").visible is True
    finally:
        c.stop()
    wait_until(lambda: not live_dash.refreshing, timeout=5, what="the live refresher to stop")
    db_dash.refresh()
    db_dash.close()
    st = c.status()
    for view_ in (live_dash.view, db_dash.view):
        assert view_ is not None
        assert view_.trades_stored == st.trades_stored > 0
        assert view_.symbol("SPY").trades_stored == st.symbols["SPY"].trades_stored
        assert view_.symbol("QQQ").trades_stored is None  # collects no trades
    assert 'class="rc-symbol-trades">-<' in db_dash.symbols_html.value


@pytest.mark.integration
def test_the_trade_lines_stay_hidden_when_no_symbol_collects_trades(
    make_config: Callable[..., Any],
) -> None:
    c = fast_collector(make_config).start()
    try:
        c.wait_for(lambda s: s.stored > 0, timeout=30)
        dash = live(c, interval=0.1, window_seconds=60)
        wait_until(lambda: len(dash.rates_fig.data[0].y) >= 3, what="rates")
        assert trace(dash.rates_fig, "trades/s").visible is False
        assert set(trace(dash.rates_fig, "trades/s").y) <= {0.0}
    finally:
        c.stop()
    dash.close()


@pytest.mark.integration
def test_watch_shows_a_locked_database_and_a_crashed_unit_within_2s(
    make_config: Callable[..., Any],
) -> None:
    """Health rows are stored once a minute here; the heartbeat file says it every second."""
    import sqlite3

    cfg = make_config(
        storage={"write_timeout_seconds": 0.2, "breaker_timeout_seconds": 0.2},
        realtime_data={"health_check": {"check_interval_seconds": 60.0}},
    )
    c = Collector(cfg).start()
    feed = DatabaseFeed(c.db_path)

    def shown() -> DashboardView:
        return feed.view()

    try:
        c.wait_for(lambda s: s.stored >= 20, timeout=30)
        wait_until(lambda: shown().level == "HEALTHY", timeout=5, what="HEALTHY at first")
        blocker = sqlite3.connect(c.db_path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            c.wait_for(lambda s: s.storage is not None and s.storage.mode == "backup", timeout=10)
            # from the moment the collector itself is in backup mode: within 2 s in watch()
            v = wait_until(
                lambda: (v := shown()).storage.mode == "backup" and v.level != "HEALTHY" and v,
                timeout=2,
                what="the watch view to say backup and not HEALTHY",
                detail=lambda: (shown().level, shown().storage.mode, shown().reasons),
            )
            assert v.running and v.level == "DEGRADED"
            assert any("writing to backup files" in r for r in v.reasons), v.reasons
            assert 'data-mode="backup"' in render_storage(v)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_until(lambda: shown().storage.mode == "database", timeout=10, what="database again")

        # a unit that crashes on every SPY quote: the supervisor keeps restarting it
        real = c.validator.check

        def check(q: Any) -> Any:
            if q.symbol == "SPY":
                raise RuntimeError("a bug nobody planned for")
            return real(q)

        c.validator.check = check  # type: ignore[method-assign]
        wait_until(
            lambda: getattr(c.status().units.get("poll-SPY"), "restarts", 0) >= 1,
            timeout=10,
            what="poll-SPY to crash",
        )

        def names_the_crash() -> DashboardView | None:
            view = shown()
            return view if any("poll-SPY" in r and "crash" in r for r in view.reasons) else None

        v = wait_until(
            names_the_crash,
            timeout=2,
            what="the watch view to name the crashed unit",
            detail=lambda: shown().reasons,
        )
        assert v.level != "HEALTHY" and v.running
        c.validator.check = real  # type: ignore[method-assign]
    finally:
        c.stop()


def test_the_database_breaker_shows_in_storage_and_on_the_timeline(stored: StoredRun) -> None:
    stored.event(NOW - 10 * S, "storage", "CLOSED", "OPEN", "database is locked")
    v = view_from_database(stored.path, now_us=NOW)
    assert (v.storage.breaker_state, v.storage.breaker_since_us) == ("OPEN", NOW - 10 * S)
    assert "Database breaker" in render_storage(
        v
    ) and 'class="rc-storage-breaker"' in render_storage(v)
    rows = {s.symbol: s.state for s in breaker_segments(v, 300) if s.end_us == NOW}
    assert rows == {"SPY": "CLOSED", "IWM": "CLOSED", "database": "OPEN"}


@pytest.mark.integration
def test_live_dashboard_shows_backup_mode_while_the_database_is_locked(
    make_config: Callable[..., Any],
) -> None:
    import sqlite3

    cfg = make_config(
        storage={
            "write_timeout_seconds": 0.2,
            "breaker_timeout_seconds": 0.2,
            "flush_interval_seconds": 0.05,
        }
    )
    c = Collector(cfg).start()
    try:
        dash = live(c, interval=0.1)
        c.wait_for(lambda s: s.stored >= 20, timeout=30)
        blocker = sqlite3.connect(c.db_path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            wait_until(lambda: 'data-mode="backup"' in dash.storage_html.value, what="BACKUP mode")
            wait_until(lambda: dash.view.storage.backup_files >= 1, what="a backup file")
            assert "rc-storage-breaker" in dash.storage_html.value
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_until(lambda: 'data-mode="database"' in dash.storage_html.value, what="DATABASE again")
        wait_until(lambda: dash.view.storage.backup_files == 0, what="the backlog replayed")
        # the file is moved away before the writer adds its rows to the count
        wait_until(lambda: dash.view.storage.replayed_rows > 0, what="replayed rows counted")
        assert "database" in list(dash.timeline_fig.data[2].y)  # the database breaker opened
    finally:
        c.stop()
    dash.close()


def test_the_fleet_table_escapes_every_field_even_a_pid_that_is_text() -> None:
    """A hostile row in a shared database (issue 16): no field reaches the HTML raw."""
    from robust_collector.dashboard.fleet import render_fleet_html
    from robust_collector.health import HealthLevel
    from robust_collector.health.fleet import InstanceStatus

    evil = "<script>alert(1)</script>"
    inst = InstanceStatus(
        instance=evil,
        host=evil,
        pid=evil,  # type: ignore[arg-type] - what a hostile database row can hold
        run_id=evil,
        symbols=(evil,),
        started_us=0,
        level=HealthLevel.HEALTHY,
        reasons=(evil,),
        last_heartbeat_us=None,
        check_interval_seconds=1.0,
        running=True,
        not_running_since_us=None,
        stopped_cleanly=False,
    )
    out = render_fleet_html([inst], evil, now=0)
    assert "<script>" not in out and out.count("&lt;script&gt;") >= 5


# --------------------------------------------------------------------------- refreshers never die


class FlakyFeed:
    """A feed whose ``view()`` or ``finished()`` raises while told to."""

    def __init__(self) -> None:
        self.views = 0
        self.view_error: Exception | None = None
        self.finished_error: Exception | None = None

    def view(self, now_us: int | None = None) -> DashboardView:
        if self.view_error is not None:
            raise self.view_error
        self.views += 1
        return view(now_us=NOW + self.views * S, stored=self.views)

    def finished(self, v: DashboardView) -> bool:
        if self.finished_error is not None:
            raise self.finished_error
        return False

    def close(self) -> None:
        pass


def footer_counts(dash: Any, error: str) -> int:
    """How many failures the footer counts while it names ``error`` (0 if it does not)."""
    m = re.search(re.escape(error) + r"[^<]*?(\d+) failed so far", dash.footer_html.value)
    return int(m.group(1)) if m else 0


def test_the_refresher_survives_a_failing_view_or_finished_and_the_footer_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from robust_collector.dashboard.widgets import Dashboard

    caplog.set_level(logging.ERROR, logger="robust_collector.dashboard.widgets")
    feed = FlakyFeed()
    dash = Dashboard(feed, interval=0.02)
    try:
        feed.view_error = RuntimeError("feed <down>")
        named = "refresh failed: RuntimeError: feed &lt;down&gt; (in view();"
        wait_until(
            lambda: footer_counts(dash, named) >= 3,
            timeout=5,
            what="the footer to name the error and count it",
            detail=lambda: dash.footer_html.value,
        )
        assert dash.refreshing
        feed.view_error = None
        n = dash.refreshes
        wait_until(lambda: dash.refreshes > n + 2, timeout=5, what="refreshes after the failure")
        wait_until(lambda: "refresh failed" not in dash.footer_html.value, timeout=5, what="clear")
        assert stored_count(dash.status_html.value) == feed.views  # drawn again

        # finished() is called outside refresh(): its exception used to end the thread
        feed.finished_error = ValueError("finished broke")
        named = "refresh failed: ValueError: finished broke (in finished();"
        wait_until(
            lambda: footer_counts(dash, named) >= 3,
            timeout=5,
            what="the footer to name it and count it",
            detail=lambda: dash.footer_html.value,
        )
        n = dash.refreshes
        wait_until(lambda: dash.refreshes > n + 2, timeout=5, what="refreshes go on meanwhile")
        assert dash.refreshing and dash.refresh_failures >= 6
    finally:
        dash.close()
    logged = [r for r in caplog.records if "dashboard refresh failed" in r.getMessage()]
    # each failure logged once with its traceback, however often it repeated
    assert [r.exc_info is not None for r in logged] == [True, True], logged
    assert "feed <down>" in logged[0].getMessage() and "finished broke" in logged[1].getMessage()


def test_the_fleet_refresher_survives_failures_and_the_footer_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import logging

    from robust_collector.dashboard import fleet

    caplog.set_level(logging.ERROR, logger="robust_collector.dashboard.fleet")
    monkeypatch.setattr(fleet, "fleet_status", lambda db: [])
    real_render = fleet.render_fleet_html
    broken = {"on": True}

    def render(instances: Any, label: str, now: int) -> str:
        if broken["on"]:
            raise KeyError("a row nobody planned for")
        return real_render(instances, label, now)

    monkeypatch.setattr(fleet, "render_fleet_html", render)
    dash = fleet.FleetDashboard(tmp_path / "x.db", interval=0.02)
    try:
        named = "cannot read the fleet: KeyError: &#x27;a row nobody planned for&#x27;"
        wait_until(
            lambda: footer_counts(dash, named) >= 3,
            timeout=5,
            what="the footer to name the error and count it",
            detail=lambda: dash.footer_html.value,
        )
        assert dash.refreshing
        broken["on"] = False
        n = dash.refreshes
        wait_until(lambda: dash.refreshes > n + 2, timeout=5, what="refreshes after the failure")
        assert "no collector has written" in dash.table_html.value
        assert "refreshed every" in dash.footer_html.value
    finally:
        dash.close()
    logged = [r for r in caplog.records if "fleet refresh failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback


# --------------------------------------------------------------------------- a stand-in collector


def test_a_stand_in_collector_is_enough_for_the_live_view(tmp_path: Path) -> None:
    """The live view reads a collector only through the LiveCollector Protocol."""
    from types import SimpleNamespace

    import polars as pl

    from robust_collector.config import load_config
    from robust_collector.health import ComponentHealth, HealthLevel, HealthSnapshot

    spy = SimpleNamespace(
        symbol="SPY",
        breaker_state="OPEN",
        breaker_since_us=1_000_000,
        breaker_reason="5 failures",
        last_price=101.5,
        last_quote_us=2_000_000,
        stored=3,
        rejects=1,
        errors=5,
        trades=0,
        trades_stored=0,
        trade_rejects=0,
    )
    status = SimpleNamespace(
        run_id="r1",
        running=True,
        started_us=0,
        database="x.db",
        symbols={"SPY": spy},
        storage=None,
        stored=3,
        rejects=1,
        errors=5,
        trades_stored=0,
        trade_rejects=0,
    )
    comp = ComponentHealth("SPY", "symbol", HealthLevel.DEGRADED, ("breaker open",), {})
    health = HealthSnapshot(3.0, HealthLevel.DEGRADED, ("SPY: breaker open",), (comp,))
    config = load_config(None, overrides={"realtime_data": {"backup": {"enabled": False}}})
    stand_in = SimpleNamespace(
        config=config,
        run_id="r1",
        db_path=tmp_path / "none.db",
        breakers=None,
        status=lambda: status,
        health=lambda: health,
        errors=lambda limit=None: pl.DataFrame(),
    )
    v = view_from_collector(stand_in, now_us=4_000_000)  # type: ignore[arg-type]
    row = v.symbol("SPY")
    assert (row.breaker_state, row.in_state_seconds, row.level) == ("OPEN", 3.0, "DEGRADED")
    assert (row.last_price, row.data_age_seconds, row.errors) == (101.5, 2.0, 5)
    assert v.level == "DEGRADED" and v.storage.mode == "not started" and v.errors == ()


def test_a_chart_answers_repeated_asks_for_plotly_js_at_most_once_per_interval() -> None:
    """A page asks for the 4.8 MB bundle every 3 s until it has loaded; on a slow link
    each answer queued another copy. Asks within PUSH_EVERY_S get no second copy."""
    from robust_collector.dashboard.chart import PlotlyChart

    chart = PlotlyChart()
    sent: list[int] = []
    chart.send = lambda content, buffers=None: sent.append(len(buffers[0]))  # type: ignore[method-assign]
    for _ in range(3):
        chart._rc_on_msg(chart, {"type": "plotly.js?"}, [])
    chart._rc_on_msg(chart, {"type": "something else"}, [])
    assert len(sent) == 1 and sent[0] > 1_000_000  # the whole bundle, once
    chart.close()
