"""The collector running for real: a real thread, a real SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3

import polars as pl
import pytest

from robust_collector import Collector, read_ticks

pytestmark = pytest.mark.integration


def seqs_by_symbol(db) -> dict[str, list[int]]:
    df = read_ticks(db)
    return {s: sorted(g["seq"].to_list()) for (s,), g in df.group_by("symbol")}


def test_collects_every_symbol_with_contiguous_sequence_numbers(make_config):
    c = Collector(make_config())
    with c:
        c.wait_for(lambda s: all(x.stored >= 40 for x in s.symbols.values()), timeout=30)
    emitted = c.source.emitted
    seqs = seqs_by_symbol(c.db_path)
    assert set(seqs) == {"SPY", "QQQ", "IWM"}
    for sym, got in seqs.items():
        assert got == list(range(1, emitted[sym] + 1)), sym
    conn = sqlite3.connect(c.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_stop_flushes_everything_buffered(make_config):
    # a buffer that never fills and a flush interval that never passes: only stop() writes
    cfg = make_config(
        storage={"flush_interval_seconds": 3600},
        realtime_data={"buffer_size": 100_000},
    )
    c = Collector(cfg).start()
    c.wait_for(lambda s: all(x.accepted >= 25 for x in s.symbols.values()), timeout=30)
    assert c.status().stored == 0
    summary = c.stop()
    emitted = c.source.emitted
    assert summary.stored == sum(emitted.values())
    for sym, got in seqs_by_symbol(c.db_path).items():
        assert got == list(range(1, emitted[sym] + 1))


def test_a_slow_symbol_does_not_slow_the_others(make_config):
    # IWM takes 50 polling intervals per fetch; SPY and QQQ keep their own schedule
    cfg = make_config(source={"faults": {"symbol_latency_seconds": {"IWM": 0.5}}})
    with Collector(cfg) as c:
        st = c.wait_for(lambda s: s.symbols["IWM"].quotes >= 2, timeout=30)
    spy, qqq, iwm = (st.symbols[s].quotes for s in ("SPY", "QQQ", "IWM"))
    assert spy >= 10 * iwm and qqq >= 10 * iwm
    assert abs(spy - qqq) <= max(5, 0.2 * spy)


def test_every_failed_attempt_is_an_error_row_and_other_symbols_continue(make_config):
    cfg = make_config(source={"faults": {"failing_symbols": ["IWM"]}})
    with Collector(cfg) as c:
        c.wait_for(
            lambda s: s.symbols["SPY"].stored >= 30 and s.symbols["IWM"].breaker_state == "OPEN",
            timeout=30,
        )
    st = c.status()
    assert st.symbols["IWM"].stored == 0
    assert "TransientSourceError" in (st.symbols["IWM"].last_error or "")
    conn = sqlite3.connect(c.db_path)
    n = conn.execute("SELECT count(*) FROM errors WHERE symbol = 'IWM'").fetchone()[0]
    # 3 attempts (2 retries) per fetch until the 5th consecutive failure opens the breaker
    assert n == 5
    # fetch 1 gave up after 3 attempts; fetch 2 ended when the breaker opened mid-retry:
    # both count (issue 17, finding 4), and the 5 failed requests are counted too
    assert st.symbols["IWM"].errors == 2 and st.symbols["IWM"].failed_attempts == 5
    # fetch 1: attempt, retry, retry; fetch 2: attempt, retry (5th failure opens), and the
    # next retry is refused by the open breaker, which ends that fetch at once
    assert st.symbols["IWM"].retries == 4 and st.symbols["IWM"].give_ups == 2


def test_run_is_recorded_with_its_config_and_summary(make_config):
    c = Collector(make_config())
    with c:
        c.wait_for(lambda s: s.stored >= 10, timeout=30)
    conn = sqlite3.connect(c.db_path)
    row = conn.execute(
        "SELECT status, stopped_us, symbols, config, summary FROM runs WHERE run_id = ?",
        (c.run_id,),
    ).fetchone()
    assert row[0] == "stopped" and row[1] is not None
    assert '"SPY"' in row[2] and "realtime_data" in row[3] and '"stored"' in row[4]


def test_ticks_reader_filters_and_gives_utc_datetimes(make_config):
    c = Collector(make_config())
    with c:
        c.wait_for(lambda s: s.stored >= 30, timeout=30)
    df = c.ticks(symbol="SPY")
    assert df["symbol"].unique().to_list() == ["SPY"]
    assert df.schema["ts"] == pl.Datetime("us", "UTC")
    mid = df["ts"].sort()[len(df) // 2]
    later = c.ticks(symbol="SPY", since=mid)
    assert 0 < len(later) < len(df)
    assert (later["ts"] >= mid).all()


def test_lifecycle_errors_are_clear(make_config):
    c = Collector(make_config())
    with pytest.raises(RuntimeError, match="never started"):
        c.stop()
    c.start()
    with pytest.raises(RuntimeError, match="already started"):
        c.start()
    first = c.stop()
    assert c.stop() is first  # stop is idempotent
    assert not c.running


def test_from_config_with_path_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("symbols: [SPY]\nrealtime_data: {collect_interval_seconds: 0.01}\n")
    c = Collector.from_config(
        cfg_file, base_dir=tmp_path, overrides={"storage": {"flush_interval_seconds": 0.05}}
    )
    assert c.db_path == tmp_path / "data" / "market_data.db"
    with c:
        c.wait_for(lambda s: s.stored >= 5, timeout=30)
    assert len(read_ticks(c.db_path)) >= 5


def test_disabled_collection_refuses_to_start(make_config):
    c = Collector(make_config(realtime_data={"enabled": False}))
    with pytest.raises(RuntimeError, match=r"realtime_data\.enabled is false"):
        c.start()


def test_ticks_of_one_run_when_the_database_holds_several(make_config):
    cfg = make_config(symbols=["SPY"])
    runs = []
    for _ in range(2):
        c = Collector(cfg)
        with c:
            c.wait_for(lambda s: s.stored >= 10, timeout=30)
        runs.append(c)
    both = read_ticks(runs[0].db_path)
    mine = runs[1].ticks(this_run=True)
    assert set(both["run_id"].unique()) == {r.run_id for r in runs}
    assert set(mine["run_id"].unique()) == {runs[1].run_id}
    assert len(mine) == runs[1].status().stored < len(both)
    assert len(read_ticks(runs[0].db_path, run_id=runs[0].run_id)) == runs[0].status().stored
