"""Analysis helpers: loaders, summaries, backup scans, gap attribution and figures.

The databases here are written row by row (no collector thread), so every gap
and every cause is placed exactly where the test wants it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from robust_collector import analysis as A
from robust_collector.analysis import paths
from robust_collector.analysis.gap_causes import GAP_SCHEMA
from robust_collector.config import SessionConfig
from robust_collector.storage.backup import BackupWriter
from robust_collector.storage.reader import to_epoch_us
from robust_collector.storage.recovery import recover
from robust_collector.storage.schema import INSERT_REJECTS, INSERT_TICKS, open_database
from robust_collector.storage.writer import INSERT_BREAKER_EVENT, INSERT_ERROR, INSERT_HEALTH

RUN = "20260302T144000Z-aaaaaaaa"
T0 = to_epoch_us("2026-03-02T14:40:00+00:00")  # a Monday, 09:40 in New York
S = 1_000_000  # one second in µs


def tick_row(
    symbol: str, t: int, *, run: str = RUN, seq: int | None = None, price: float = 100.0
) -> tuple[Any, ...]:
    seq = seq if seq is not None else t // 1000
    return (
        f"{run}:{symbol}:{seq}",
        symbol,
        seq,
        t,
        t + 100,
        price - 0.01,
        price + 0.01,
        100.0,
        100.0,
        None,
        "simulated",
        run,
    )


class DB:
    """A collector database written by hand: runs, ticks, rejects, errors, events."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 1.0,
        backup_path: Path | None = None,
        session: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.conn = open_database(path)
        self.config = {
            "realtime_data": {
                "collect_interval_seconds": interval,
                "backup": {
                    "enabled": True,
                    "backup_path": str(backup_path) if backup_path else None,
                },
                "health_check": {"check_interval_seconds": 1.0, "session": session or {}},
            }
        }

    def run(
        self,
        run_id: str = RUN,
        start: int = T0,
        stop: int | None = None,
        symbols: tuple[str, ...] = ("SPY",),
    ) -> DB:
        self.conn.execute(
            "INSERT INTO runs (run_id, started_us, stopped_us, status, pid, host, symbols, config) VALUES (?,?,?,?,?,?,?,?)",
            (
                run_id,
                start,
                stop,
                "stopped" if stop else "running",
                1,
                "h",
                orjson.dumps(list(symbols)).decode(),
                orjson.dumps(self.config).decode(),
            ),
        )
        return self

    def ticks(self, symbol: str, times: list[int], *, run: str = RUN) -> DB:
        self.conn.executemany(INSERT_TICKS, [tick_row(symbol, t, run=run) for t in times])
        return self

    def reject(self, symbol: str, t: int, rule: str = "price_change", *, run: str = RUN) -> DB:
        self.conn.execute(
            INSERT_REJECTS,
            (*tick_row(symbol, t, run=run, price=999.0), rule, f"{rule} reason", t + 200),
        )
        return self

    def error(
        self,
        t: int,
        component: str = "source",
        symbol: str | None = "SPY",
        message: str = "simulated API timeout",
        *,
        run: str = RUN,
    ) -> DB:
        self.conn.execute(
            INSERT_ERROR, (run, t, component, symbol, "TransientSourceError", message)
        )
        return self

    def event(
        self, t: int, symbol: str, old: str, new: str, reason: str = "", *, run: str = RUN
    ) -> DB:
        self.conn.execute(INSERT_BREAKER_EVENT, (run, t, symbol, old, new, reason))
        return self

    def health(
        self,
        t: int,
        component: str,
        level: str,
        reasons: list[str],
        metrics: dict[str, Any],
        *,
        run: str = RUN,
    ) -> DB:
        self.conn.execute(
            INSERT_HEALTH,
            (
                run,
                t,
                component,
                level,
                orjson.dumps(reasons).decode(),
                orjson.dumps(metrics).decode(),
            ),
        )
        return self


def every(start: int, end: int, step: int = S) -> list[int]:
    return list(range(start, end, step))


@pytest.fixture
def db(tmp_path: Path) -> DB:
    return DB(tmp_path / "t.db", backup_path=tmp_path / "backups")


# --------------------------------------------------------------------------- loaders


def test_loaders_return_typed_frames_with_utc_datetimes(db: DB) -> None:
    db.run(stop=T0 + 60 * S, symbols=("SPY", "QQQ")).ticks("SPY", every(T0, T0 + 10 * S)).ticks(
        "QQQ", every(T0, T0 + 5 * S)
    )
    db.reject("SPY", T0 + 3 * S + 500).error(T0 + 4 * S).event(
        T0 + 4 * S, "SPY", "CLOSED", "OPEN", "5 consecutive failures"
    )
    db.health(T0 + S, "system", "DEGRADED", ["SPY: breaker OPEN"], {"kind": "system"})
    db.health(
        T0 + S,
        "SPY",
        "DEGRADED",
        ["SPY: breaker OPEN"],
        {"kind": "symbol", "breaker_state": "OPEN"},
    )

    ticks = A.load_ticks(db.path)
    assert ticks.height == 15
    assert ticks.schema["ts"] == pl.Datetime("us", "UTC")
    assert {"mid", "spread", "price"} <= set(ticks.columns)
    assert ticks.filter(pl.col("symbol") == "SPY")["price"][0] == pytest.approx(100.0)
    assert A.load_ticks(db.path, "QQQ").height == 5
    assert A.load_ticks(db.path, since=T0 + 5 * S, until=T0 + 7 * S).height == 2
    assert A.load_ticks(db.path, run_id="other").height == 0

    rejects = A.load_rejects(db.path)
    assert rejects.select("symbol", "rule").row(0) == ("SPY", "price_change")
    assert rejects.schema["rejected_ts"] == pl.Datetime("us", "UTC")
    assert A.load_rejects(db.path, rule="crossed").height == 0

    errors = A.load_errors(db.path, symbol="SPY")
    assert errors.select("component", "message").row(0) == ("source", "simulated API timeout")

    health = A.load_health(db.path)
    assert health["level_value"].to_list() == [1, 1]
    assert health["kind"].to_list() == ["system", "symbol"]
    assert health["reasons"][0].to_list() == ["SPY: breaker OPEN"]

    events = A.load_breaker_events(db.path, "SPY")
    assert events.select("symbol", "old_state", "new_state").row(0) == ("SPY", "CLOSED", "OPEN")
    runs = A.load_runs(db.path)
    assert runs["symbols"][0].to_list() == ["SPY", "QQQ"]
    assert runs.schema["started"] == pl.Datetime("us", "UTC")


def test_loaders_say_which_database_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database"):
        A.load_ticks(tmp_path / "none.db")


def test_breaker_intervals_start_closed_and_cover_quiet_symbols(db: DB) -> None:
    db.run(stop=T0 + 60 * S, symbols=("SPY", "QQQ"))
    db.event(T0 + 10 * S, "SPY", "CLOSED", "OPEN", "5 consecutive failures")
    db.event(T0 + 40 * S, "SPY", "OPEN", "HALF_OPEN", "timeout")
    db.event(T0 + 41 * S, "SPY", "HALF_OPEN", "CLOSED", "3 successes")
    iv = A.breaker_intervals(A.load_breaker_events(db.path), A.load_runs(db.path))
    spy = iv.filter(pl.col("symbol") == "SPY").select("state", "duration_s").rows()
    assert spy == [("CLOSED", 10.0), ("OPEN", 30.0), ("HALF_OPEN", 1.0), ("CLOSED", 19.0)]
    assert iv.filter(pl.col("symbol") == "QQQ").select("state", "duration_s").rows() == [
        ("CLOSED", 60.0)
    ]


def test_rejects_by_and_tick_rates() -> None:
    rejects = pl.DataFrame({"rule": ["a", "b", "a", "a"], "symbol": ["X", "X", "Y", "X"]})
    by_rule = A.rejects_by(rejects)
    assert by_rule.rows() == [("a", 3, 0.75), ("b", 1, 0.25)]
    assert A.rejects_by(rejects, "symbol", "rule")["count"].to_list() == [2, 1, 1]
    ts = (
        pl.Series([T0 + i * 250_000 for i in range(8)])
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )
    rates = A.tick_rates(pl.DataFrame({"ts": ts, "symbol": ["X"] * 8}), "1s")
    assert rates["count"].to_list() == [4, 4]
    assert rates["per_second"].to_list() == [4.0, 4.0]
    half = A.tick_rates(pl.DataFrame({"ts": ts}), "500ms", by=None)
    assert half["per_second"].to_list() == [4.0] * 4
    with pytest.raises(ValueError, match="every"):
        A.tick_rates(pl.DataFrame({"ts": ts}), "soon", by=None)


# --------------------------------------------------------------------------- backup scans


def test_scan_backups_reports_files_records_problems_and_what_is_in_the_db(
    db: DB, tmp_path: Path
) -> None:
    db.run(symbols=("SPY", "QQQ"))
    in_db = [tick_row("SPY", T0 + i * S) for i in range(3)]
    db.conn.executemany(INSERT_TICKS, in_db)
    w = BackupWriter(tmp_path / "backups", RUN)
    w.write_batch(
        in_db + [tick_row("SPY", T0 + i * S) for i in range(3, 6)],
        [(*tick_row("QQQ", T0 + 7 * S), "crossed", "bid > ask", T0)],
    )
    w.close()
    path = w.backup_path / "ticks-20260302T144000Z-aaaaaaaa-000001.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"kind":"tick","oops":1,"crc32":5}\n')  # corrupt
        f.write(b'{"kind":"tick","tick_id":"cut')  # torn last line
    scan = A.scan_backups(tmp_path / "backups", db.path)
    f = scan.files.row(0, named=True)
    assert (f["lines"], f["ticks"], f["rejects"], f["torn"], f["corrupt"]) == (9, 6, 1, 1, 1)
    assert f["symbols"] == ["QQQ", "SPY"] and f["folder"] == "waiting"
    assert (f["in_db"], f["not_in_db"]) == (3, 4)
    assert f["first_us"] == T0 and f["last_us"] == T0 + 7 * S
    assert scan.totals["not_in_db"] == 4
    assert scan.missing.height == 4
    assert sorted(scan.problems["kind"].to_list()) == ["corrupt", "torn"]
    pending = scan.pending()
    assert pending.select("symbol", "kind", "records").rows() == [
        ("QQQ", "reject", 1),
        ("SPY", "tick", 3),
    ]

    no_db = A.scan_backups(tmp_path / "backups")
    assert no_db.records["in_db"].null_count() == no_db.records.height

    recover(db.path, tmp_path / "backups")
    assert A.scan_backups(tmp_path / "backups", db.path).files.height == 0
    again = A.scan_backups(tmp_path / "backups", db.path, include_recovered=True)
    assert again.files["folder"].to_list() == ["recovered"]
    assert again.totals["not_in_db"] == 0


def test_scan_backups_counts_trade_lines_and_finds_them_in_the_trades_table(
    db: DB, tmp_path: Path
) -> None:
    from robust_collector.model import Trade
    from robust_collector.storage.tables import INSERT_TRADES

    def trade(i: int) -> tuple[Any, ...]:
        t = Trade(f"{RUN}:SPY:t{i}", "SPY", i, T0 + i * S, T0 + i * S, 100.0, 10.0, "N")
        return t.trade_row(RUN)

    db.run(symbols=("SPY",))
    db.conn.executemany(INSERT_TRADES, [trade(1)])
    w = BackupWriter(tmp_path / "backups", RUN)
    w.write_batch([], [], [trade(1), trade(2)], [(*trade(3)[:-1], RUN, "bad_price", "x", T0)])
    w.close()
    scan = A.scan_backups(tmp_path / "backups", db.path)
    f = scan.files.row(0, named=True)
    assert (f["ticks"], f["trades"], f["trade_rejects"]) == (0, 2, 1)
    assert (f["in_db"], f["not_in_db"]) == (1, 2)  # trade 1 is already in the trades table
    assert scan.pending().select("kind", "records").rows() == [("trade", 1), ("trade_reject", 1)]
    assert set(scan.records["run_id"]) == {RUN}
    assert scan.totals["trades"] == 2


def test_scan_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    scan = A.scan_backups(tmp_path / "nothing")
    assert scan.files.height == 0 and scan.records.height == 0 and scan.totals["files"] == 0


# --------------------------------------------------------------------------- gaps


def gap_rows(db: DB, **kw: Any) -> list[dict[str, Any]]:
    return A.gaps(db.path, **kw).to_dicts()


def test_no_gaps_in_a_regular_series(db: DB) -> None:
    db.run().ticks("SPY", every(T0, T0 + 60 * S))
    g = A.gaps(db.path)
    assert g.height == 0 and set(GAP_SCHEMA) <= set(g.columns)


def test_a_breaker_open_hole_is_attributed_to_the_breaker_and_its_errors(db: DB) -> None:
    db.run(symbols=("SPY", "QQQ")).ticks(
        "SPY", every(T0, T0 + 10 * S) + every(T0 + 40 * S, T0 + 50 * S)
    )
    db.ticks("QQQ", every(T0, T0 + 50 * S))
    for k in range(5):
        db.error(T0 + 10 * S + k * 100_000, message="simulated connection refused")
    db.event(T0 + 10 * S + 500_000, "SPY", "CLOSED", "OPEN", "5 consecutive failures")
    db.event(T0 + 39 * S, "SPY", "OPEN", "HALF_OPEN", "timeout")
    db.event(T0 + 39 * S + 1000, "SPY", "HALF_OPEN", "CLOSED", "3 successes")
    [g] = gap_rows(db)
    assert g["symbol"] == "SPY" and g["cause"] == "breaker_open"
    assert g["causes"] == ["breaker_open", "source_errors"]
    assert g["duration_s"] == 31.0 and g["missing"] == 30
    assert g["breaker_open_s"] == pytest.approx(28.5, abs=0.01)
    assert g["source_errors"] == 5
    assert "5 consecutive failures" in g["detail"] and "simulated connection refused" in g["detail"]


def test_errors_without_a_breaker_are_source_errors(db: DB) -> None:
    db.run().ticks("SPY", [T0, T0 + 10 * S]).error(T0 + 5 * S)
    [g] = gap_rows(db)
    assert g["cause"] == "source_errors" and g["source_errors"] == 1


def test_storage_errors_and_pending_backup_ticks_are_a_storage_outage(
    db: DB, tmp_path: Path
) -> None:
    db.run().ticks("SPY", every(T0, T0 + 5 * S) + every(T0 + 20 * S, T0 + 25 * S))
    db.error(T0 + 6 * S, component="storage", symbol=None, message="database is locked")
    with BackupWriter(tmp_path / "backups", RUN) as w:
        w.write_batch([tick_row("SPY", t) for t in every(T0 + 5 * S, T0 + 20 * S)])
    [g] = gap_rows(db)
    assert g["cause"] == "storage_outage"
    assert g["storage_errors"] == 1 and g["backup_ticks"] == 15
    assert "15 ticks waiting in backup files" in g["detail"] and "database is locked" in g["detail"]
    recover(db.path, tmp_path / "backups")
    assert gap_rows(db) == []  # the hole was only in the database, not in the data


def test_rejected_quotes_explain_a_hole(db: DB) -> None:
    db.run().ticks("SPY", [T0, T0 + 10 * S])
    for k in (2, 4, 6):
        db.reject("SPY", T0 + k * S, "price_change")
    db.reject("SPY", T0 + 8 * S, "mid_outlier")
    [g] = gap_rows(db)
    assert g["cause"] == "rejects" and g["rejects"] == 4
    assert "mid_outlier, price_change" in g["detail"]


def test_time_between_runs_is_not_running(db: DB) -> None:
    db.run(stop=T0 + 10 * S).ticks("SPY", every(T0, T0 + 10 * S))
    run2 = "20260302T150000Z-bbbbbbbb"
    db.run(run2, start=T0 + 100 * S).ticks("SPY", every(T0 + 100 * S, T0 + 110 * S), run=run2)
    [g] = gap_rows(db)
    assert g["cause"] == "not_running"
    assert g["not_running_s"] == pytest.approx(90.0, abs=1.01)
    assert RUN in g["detail"] and run2 in g["detail"]


def test_a_closed_market_is_outside_the_session(tmp_path: Path) -> None:
    db = DB(tmp_path / "s.db", session={"enabled": True})
    friday = to_epoch_us("2026-03-06T20:59:00+00:00")  # 15:59 in New York
    monday = to_epoch_us("2026-03-09T13:31:00+00:00")  # 09:31 (EDT)
    db.run(start=friday - 60 * S).ticks("SPY", [friday, monday])
    [g] = gap_rows(db)
    assert g["cause"] == "outside_session" and g["closed_s"] > 60 * 3600
    # with the session switched off, the same hole has no explanation
    [g] = A.gaps(db.path, session=SessionConfig(enabled=False)).to_dicts()
    assert g["cause"] == "unknown" and g["causes"] == ["unknown"]


def test_threshold_is_factor_times_expected_interval(db: DB) -> None:
    db.run().ticks("SPY", [T0, T0 + 2 * S, T0 + 5 * S + 1])
    assert [g["duration_s"] for g in gap_rows(db)] == [pytest.approx(3.000001)]
    assert gap_rows(db, expected_interval=2.0) == []
    assert len(gap_rows(db, min_gap_seconds=1.5)) == 2
    assert len(gap_rows(db, symbol="QQQ")) == 0
    with pytest.raises(ValueError, match="expected_interval"):
        A.gaps(db.path, expected_interval=0)


def test_the_default_interval_comes_from_the_run_config(tmp_path: Path) -> None:
    db = DB(tmp_path / "i.db", interval=0.1)
    db.run().ticks("SPY", [*every(T0, T0 + S, 100000), T0 + 2 * S])
    [g] = gap_rows(db)
    assert g["missing"] == 10


# --------------------------------------------------------------------------- figures


def test_figures_have_one_trace_per_thing(db: DB) -> None:
    db.run(stop=T0 + 20 * S, symbols=("SPY", "QQQ")).ticks("SPY", every(T0, T0 + 10 * S)).ticks(
        "QQQ", every(T0, T0 + 10 * S)
    )
    db.reject("SPY", T0 + 3 * S + 1, "price_change").reject("SPY", T0 + 4 * S + 1, "crossed")
    db.event(T0 + 5 * S, "SPY", "CLOSED", "OPEN", "x").health(
        T0, "system", "HEALTHY", [], {"kind": "system"}
    )
    ticks, rejects = A.load_ticks(db.path), A.load_rejects(db.path)
    fig = A.plot_prices(ticks, rejects)
    names = [t.name for t in fig.data]
    assert names.count("rejected") == 1 and len(fig.data) == 3
    spike = next(t for t in fig.data if t.name == "rejected")
    assert max(spike.y) < 101  # the 999 spike is clipped into the panel
    assert {t.name for t in A.plot_rejects(rejects, "1s").data} == {"price_change", "crossed"}
    tl = A.plot_breaker_timeline(
        A.breaker_intervals(A.load_breaker_events(db.path), A.load_runs(db.path))
    )
    assert [t.name for t in tl.data] == ["CLOSED", "HALF_OPEN", "OPEN"]
    assert list(tl.data[2].y) == ["SPY"]
    assert len(A.plot_health(A.load_health(db.path)).data) == 1
    db.ticks("SPY", [T0 + 30 * S])
    g = A.gaps(db.path)
    assert [t.name for t in A.plot_gaps(g).data] == [g["cause"][0]]


# --------------------------------------------------------------------------- paths


def test_project_root_and_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname='x'\n")
    assert A.project_root(repo / "notebooks") == repo
    assert A.project_root(tmp_path) == tmp_path
    assert A.under_test()  # the suite's root conftest.py sets RC_TMP=1
    stale = paths.TEMP_PARENT / "nb-stale"
    stale.mkdir(parents=True, exist_ok=True)
    os.utime(stale, (0, 0))
    tmp = A.output_dir("nb", start=repo / "notebooks")
    assert tmp.is_dir() and tmp.parent == paths.TEMP_PARENT and repo not in tmp.parents
    assert not stale.exists()  # test runs older than a day are cleaned up
    tmp.rmdir()
    monkeypatch.delenv("RC_TMP", raising=False)
    assert A.output_dir("nb", start=repo / "notebooks") == repo / "data" / "notebooks" / "nb"
    monkeypatch.setenv("RC_TMP", "1")
    tmp = A.output_dir("nb", start=repo / "notebooks")
    assert tmp.parent == paths.TEMP_PARENT
    tmp.rmdir()
    monkeypatch.setenv("RC_DATA", str(tmp_path / "mine"))
    assert A.output_dir("nb") == tmp_path / "mine"


def test_sqlite_file_is_never_written_by_readers(db: DB) -> None:
    db.run().ticks("SPY", [T0])
    db.conn.close()
    before = db.path.stat().st_mtime_ns
    A.load_ticks(db.path), A.gaps(db.path), A.scan_backups(db.path.parent / "backups", db.path)
    assert db.path.stat().st_mtime_ns == before
    assert sqlite3.connect(db.path).execute("SELECT count(*) FROM ticks").fetchone() == (1,)


def test_the_database_breaker_is_storage_evidence(db: DB) -> None:
    db.run().ticks("SPY", [T0, T0 + 10 * S])
    db.event(T0 + 2 * S, "storage", "CLOSED", "OPEN", "database is locked")
    db.event(T0 + 8 * S, "storage", "OPEN", "CLOSED", "trial write succeeded")
    [g] = gap_rows(db)
    assert g["cause"] == "storage_outage" and "database breaker open 6.0s" in g["detail"]


def test_at_picks_the_holes_around_a_time(db: DB) -> None:
    db.run(symbols=("SPY", "QQQ")).ticks("SPY", [T0, T0 + 10 * S, T0 + 11 * S, T0 + 30 * S])
    db.ticks("QQQ", [T0, T0 + 20 * S])
    around = A.gaps(db.path, at=T0 + 5 * S)
    assert sorted(around["symbol"].to_list()) == ["QQQ", "SPY"]
    spy = A.gaps(db.path, symbol="SPY", at="2026-03-02T14:40:20+00:00")
    assert spy.select("symbol", "duration_s").rows() == [("SPY", 19.0)]
    assert A.gaps(db.path, at=T0 + 100 * S).height == 0


def test_database_locked_waits_out_a_transaction_in_progress_then_holds_the_lock(tmp_path):
    """A lock taken while the writer commits once failed at once ("database is locked");
    it now waits for that transaction, then refuses other writers until the block ends."""
    import threading

    db = tmp_path / "m.db"
    open_database(db).close()
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the collector's writer, mid-transaction
    entered, release, failed = threading.Event(), threading.Event(), []

    def hold() -> None:
        try:
            with A.database_locked(db):
                entered.set()
                release.wait(10)
        except Exception as exc:  # before the fix: OperationalError at once
            failed.append(exc)
            entered.set()

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert not entered.wait(0.3)  # still waiting for the writer's transaction
    writer.execute("COMMIT")
    assert entered.wait(10) and not failed, failed
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    release.set()
    t.join(10)
    other.execute("BEGIN IMMEDIATE")  # the lock is gone with the block
    other.execute("ROLLBACK")
    other.close()
    writer.close()
